//! The PINs a token has refused, remembered so that the agent never offers one twice: a USB
//! smartcard locks itself after a few wrong PINs, and a restarted agent must not spend another
//! try on the PIN that was just refused.
//!
//! A refused PIN is kept only as a salted PBKDF2 fingerprint, in memory and in a small JSON
//! file in the agent's state directory. The fingerprint is tied to the token (its serial), so a
//! PIN refused by one card does not block another.

use pbkdf2::pbkdf2_hmac;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// PBKDF2 rounds: slow enough that the file is no shortcut to a PIN, fast enough for a check
/// at each connection attempt.
const ROUNDS: u32 = 100_000;

/// Errors of the refusal file.
#[derive(Debug, thiserror::Error)]
pub enum RefusalsError {
    /// The file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    salt: String,
    refused: BTreeSet<String>,
}

/// The set of refused PIN fingerprints.
#[derive(Debug)]
pub struct Refusals {
    path: Option<PathBuf>,
    salt: Vec<u8>,
    refused: BTreeSet<String>,
}

impl Refusals {
    /// Refusals kept in memory only.
    pub fn in_memory() -> Self {
        Refusals {
            path: None,
            salt: rand::random::<[u8; 16]>().to_vec(),
            refused: BTreeSet::new(),
        }
    }

    /// Refusals kept in `state_dir/refused-pins.json`, loading what an earlier run stored. An
    /// unreadable file is replaced (it only ever makes the agent more careful, never less).
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join("refused-pins.json");
        let stored: Option<Stored> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        match stored.and_then(|s| Some((hex::decode(&s.salt).ok()?, s.refused))) {
            Some((salt, refused)) if !salt.is_empty() => Refusals {
                path: Some(path),
                salt,
                refused,
            },
            _ => Refusals {
                path: Some(path),
                ..Refusals::in_memory()
            },
        }
    }

    fn fingerprint(&self, token_serial: &str, pin: &SecretString) -> String {
        let mut input = zeroize::Zeroizing::new(Vec::new());
        input.extend_from_slice(token_serial.as_bytes());
        input.push(0);
        input.extend_from_slice(pin.expose_secret().as_bytes());
        let mut out = [0u8; 32];
        pbkdf2_hmac::<Sha256>(&input, &self.salt, ROUNDS, &mut out);
        hex::encode(out)
    }

    /// Whether the token with this serial has refused this PIN before.
    pub fn is_refused(&self, token_serial: &str, pin: &SecretString) -> bool {
        !self.refused.is_empty() && self.refused.contains(&self.fingerprint(token_serial, pin))
    }

    /// Remembers that the token refused this PIN, in memory and on disk.
    pub fn refuse(&mut self, token_serial: &str, pin: &SecretString) -> Result<(), RefusalsError> {
        let fingerprint = self.fingerprint(token_serial, pin);
        self.refused.insert(fingerprint);
        self.save()
    }

    /// Forgets every refusal for good (an operator unblocked the PIN and set a new one).
    pub fn clear(&mut self) -> Result<(), RefusalsError> {
        self.refused.clear();
        self.save()
    }

    fn save(&self) -> Result<(), RefusalsError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let stored = Stored {
            salt: hex::encode(&self.salt),
            refused: self.refused.clone(),
        };
        let error = |source: std::io::Error| RefusalsError::Write {
            path: path.clone(),
            source,
        };
        // Write then rename, so a crash never leaves half a file.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&stored).expect("serialises")).map_err(error)?;
        std::fs::rename(&tmp, path).map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_save_keeps_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("not-a-dir");
        std::fs::write(&blocked, b"").unwrap();
        let mut refusals = Refusals::load(&blocked);
        let error = refusals
            .refuse("serial", &SecretString::from("2468"))
            .unwrap_err();
        let os = std::error::Error::source(&error)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .expect("the OS error is the source");
        assert!(!os.to_string().is_empty());
    }

    #[test]
    fn a_refusal_survives_a_restart_and_names_no_pin() {
        let dir = tempfile::tempdir().unwrap();
        let wrong = SecretString::from("123456");
        let mut refusals = Refusals::load(dir.path());
        assert!(!refusals.is_refused("serial-a", &wrong));
        refusals.refuse("serial-a", &wrong).unwrap();
        assert!(refusals.is_refused("serial-a", &wrong));

        let restarted = Refusals::load(dir.path());
        assert!(restarted.is_refused("serial-a", &wrong));
        assert!(
            !restarted.is_refused("serial-b", &wrong),
            "bound to the token"
        );
        assert!(!restarted.is_refused("serial-a", &SecretString::from("654321")));

        let file = std::fs::read_to_string(dir.path().join("refused-pins.json")).unwrap();
        assert!(!file.contains("123456"));
    }

    #[test]
    fn clearing_forgets_and_a_corrupt_file_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let pin = SecretString::from("0000");
        let mut refusals = Refusals::load(dir.path());
        refusals.refuse("s", &pin).unwrap();
        refusals.clear().unwrap();
        assert!(!Refusals::load(dir.path()).is_refused("s", &pin));
        std::fs::write(dir.path().join("refused-pins.json"), "not json").unwrap();
        let mut fresh = Refusals::load(dir.path());
        assert!(!fresh.is_refused("s", &pin));
        fresh.refuse("s", &pin).unwrap();
        assert!(Refusals::load(dir.path()).is_refused("s", &pin));
    }
}
