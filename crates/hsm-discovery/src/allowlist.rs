//! The USB ids `autoDiscovery` accepts: libccid's `Info.plist` (read at the Go operator's
//! paths) unioned with an embedded table of the HSMs this project knows, so that a scratch
//! image without libccid — or a libccid too old to list the Pico HSM's current id, like
//! Debian 12's — still finds them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The Go operator's search order for libccid's `Info.plist`; the first match wins.
pub const INFO_PLIST_GLOBS: [&str; 5] = [
    "/usr/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Info.plist",
    "/usr/lib/*/pcsc/drivers/ifd-ccid.bundle/Contents/Info.plist",
    "/usr/lib64/pcsc/drivers/ifd-ccid.bundle/Contents/Info.plist",
    "/usr/local/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Info.plist",
    "/etc/libccid_Info.plist",
];

/// HSMs found by `autoDiscovery` whatever libccid says: `(vendor, product, what)`.
pub const KNOWN_HSMS: [(&str, &str, &str); 3] = [
    ("2e8a", "10fd", "Pico HSM (current firmware)"),
    ("20a0", "4230", "Nitrokey HSM / Pico HSM (older firmware)"),
    ("04e6", "5816", "SmartCard-HSM"),
];

/// A set of `(vendor, product)` ids, lower-case hex without `0x`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    ids: BTreeSet<(String, String)>,
}

/// Why an `Info.plist` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    /// Not a property list.
    #[error("{path} is not a property list")]
    Plist {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: plist::Error,
    },
    /// A property list without the parallel `ifdVendorID`/`ifdProductID` arrays.
    #[error("{0} has no ifdVendorID/ifdProductID arrays of equal length")]
    NoIds(PathBuf),
}

impl Allowlist {
    /// The embedded table only.
    pub fn known_hsms() -> Self {
        Self::from_ids(
            KNOWN_HSMS
                .iter()
                .map(|(v, p, _)| (v.to_string(), p.to_string())),
        )
    }

    /// The embedded table plus the first `Info.plist` of [`INFO_PLIST_GLOBS`]. A missing or
    /// unreadable plist is logged, not fatal.
    pub fn load_default() -> Self {
        let mut list = Self::known_hsms();
        match find_info_plist(&INFO_PLIST_GLOBS) {
            Some(path) => match Self::from_info_plist(&path) {
                Ok(ccid) => {
                    tracing::info!(path = %path.display(), ids = ccid.len(), "CCID allowlist");
                    list.ids.extend(ccid.ids);
                }
                Err(error) => tracing::warn!(%error, "libccid's list is unusable"),
            },
            None => {
                tracing::info!("no libccid Info.plist; only the known HSMs are auto-discovered")
            }
        }
        list
    }

    /// The ids of a libccid `Info.plist`: the parallel `ifdVendorID` and `ifdProductID`
    /// arrays, normalised (`0x` dropped, trimmed, lower-cased).
    pub fn from_info_plist(path: &Path) -> Result<Self, AllowlistError> {
        let value = plist::Value::from_file(path).map_err(|source| AllowlistError::Plist {
            path: path.to_owned(),
            source,
        })?;
        let array = |key: &str| -> Option<Vec<String>> {
            value
                .as_dictionary()?
                .get(key)?
                .as_array()?
                .iter()
                .map(|v| v.as_string().map(normalise_id))
                .collect()
        };
        match (array("ifdVendorID"), array("ifdProductID")) {
            (Some(vendors), Some(products)) if vendors.len() == products.len() => {
                Ok(Self::from_ids(vendors.into_iter().zip(products)))
            }
            _ => Err(AllowlistError::NoIds(path.to_owned())),
        }
    }

    fn from_ids(ids: impl IntoIterator<Item = (String, String)>) -> Self {
        Allowlist {
            ids: ids.into_iter().collect(),
        }
    }

    /// Whether the ids are listed (case-insensitive, `0x` optional).
    pub fn contains(&self, vendor: &str, product: &str) -> bool {
        self.ids
            .contains(&(normalise_id(vendor), normalise_id(product)))
    }

    /// How many ids are listed.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// `0x20A0 ` → `20a0`.
pub fn normalise_id(id: &str) -> String {
    let id = id.trim();
    let id = id
        .strip_prefix("0x")
        .or_else(|| id.strip_prefix("0X"))
        .unwrap_or(id);
    id.trim().to_ascii_lowercase()
}

/// The first existing file matched by the globs, in order.
pub fn find_info_plist(globs: &[&str]) -> Option<PathBuf> {
    globs.iter().find_map(|pattern| {
        glob::glob(pattern)
            .ok()?
            .filter_map(Result::ok)
            .find(|path| path.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/Info.plist")
    }

    #[test]
    fn the_go_test_plist_lists_the_three_hsms() {
        let list = Allowlist::from_info_plist(&fixture()).unwrap();
        assert_eq!(list.len(), 3);
        assert!(list.contains("20A0", "4230"));
        assert!(list.contains("0x2e8a", "0x10FD"));
        assert!(list.contains("04e6", "5816"));
        assert!(!list.contains("1050", "0407"));
    }

    #[test]
    fn the_known_table_has_the_pico_hsm() {
        assert!(Allowlist::known_hsms().contains("2e8a", "10fd"));
    }

    #[test]
    fn a_broken_plist_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("Info.plist");
        std::fs::write(&bad, "<plist><dict><key>x</key>").unwrap();
        assert!(matches!(
            Allowlist::from_info_plist(&bad),
            Err(AllowlistError::Plist { .. })
        ));
        std::fs::write(
            &bad,
            r#"<?xml version="1.0"?><plist version="1.0"><dict><key>ifdVendorID</key>
            <array><string>0x1</string></array><key>ifdProductID</key><array/></dict></plist>"#,
        )
        .unwrap();
        assert!(matches!(
            Allowlist::from_info_plist(&bad),
            Err(AllowlistError::NoIds(_))
        ));
    }

    #[test]
    fn the_machines_libccid_when_installed() {
        // Debian's libccid: SmartCard-HSM listed; the known table adds what it may lack.
        let Some(path) = find_info_plist(&INFO_PLIST_GLOBS) else {
            return;
        };
        let list = Allowlist::from_info_plist(&path).unwrap();
        assert!(list.len() > 100, "{}", list.len());
        assert!(list.contains("04e6", "5816"));
    }
}
