//! `limit` and `continue`: lists in pages. Objects are kept in (namespace, name) order, so a
//! continue token is the resourceVersion of the first page and the last key returned.
//!
//! The real server serves every page from the first page's snapshot; the emulator keeps no
//! snapshots, so later pages show the objects as they are now (after the last key) while
//! reporting the first page's resourceVersion — a watch from it then replays whatever
//! changed meanwhile, so a client that lists and watches still converges. A token older than
//! the kept history is 410 Expired, as on the real server.

use base64::Engine as _;
use serde_json::json;

use crate::error::ApiError;

/// The paging parameters of a list request.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// `limit`: at most this many items (0 or absent: all).
    pub limit: Option<usize>,
    /// `continue`: the token of the previous page.
    pub continue_token: Option<String>,
}

/// Where a continued list starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Continue {
    /// The first page's resourceVersion.
    pub rv: u64,
    /// The last (namespace, name) already returned.
    pub after: (String, String),
}

impl Continue {
    /// The opaque token.
    pub fn encode(&self) -> String {
        let v = json!({"rv": self.rv, "ns": self.after.0, "name": self.after.1});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// Reads a token; a malformed one is 400, as on the real server.
    pub fn decode(token: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::BadRequest(format!("continue key is not valid: {token}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad())?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        Ok(Continue {
            rv: v["rv"].as_u64().ok_or_else(bad)?,
            after: (
                v["ns"].as_str().ok_or_else(bad)?.to_string(),
                v["name"].as_str().ok_or_else(bad)?.to_string(),
            ),
        })
    }
}

/// The 410 for a token whose version is no longer in the history.
pub fn expired() -> ApiError {
    ApiError::Expired(
        "The provided continue parameter is too old to display a consistent list result. You \
         can start a new list without the continue parameter."
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_garbage_is_400() {
        let c = Continue {
            rv: 42,
            after: ("ns".into(), "name".into()),
        };
        assert_eq!(Continue::decode(&c.encode()).unwrap(), c);
        assert_eq!(Continue::decode("not a token").unwrap_err().code(), 400);
    }
}
