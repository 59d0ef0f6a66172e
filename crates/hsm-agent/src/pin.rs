//! Where the agent's PIN comes from: a file (a mounted Secret, re-read on every use so a
//! rotated PIN is picked up without a restart), an environment variable, or a fixed value.
//! The PIN only ever lives in [`SecretString`]s.

use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;

/// Why no PIN could be had.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The PIN file could not be read.
    #[error("cannot read the PIN file {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The environment variable is not set.
    #[error("the PIN variable {0} is not set")]
    MissingEnv(String),
    /// The source holds an empty PIN.
    #[error("the PIN from {0} is empty")]
    Empty(String),
    /// The Kubernetes source has no PIN now: the HSMDevice, its `pinSecret` or the Secret's
    /// key is missing, or the watch has not answered yet.
    #[error("no PIN from Kubernetes: {0}")]
    Kubernetes(String),
}

/// A source of the token's user PIN.
pub trait PinSource: Send + Sync {
    /// The PIN as the source holds it now.
    fn current(&self) -> Result<SecretString, PinError>;
    /// Where the PIN comes from, for messages (never the PIN).
    fn describe(&self) -> String;
}

/// A PIN read from a file on every use (trailing newline ignored, as Kubernetes Secret files
/// and `echo` both add one).
#[derive(Debug, Clone)]
pub struct FilePin(pub PathBuf);

impl PinSource for FilePin {
    fn current(&self) -> Result<SecretString, PinError> {
        let bytes =
            zeroize::Zeroizing::new(std::fs::read(&self.0).map_err(|source| PinError::File {
                path: self.0.clone(),
                source,
            })?);
        let text = String::from_utf8_lossy(&bytes);
        non_empty(text.trim_end_matches(['\n', '\r']), || self.describe())
    }

    fn describe(&self) -> String {
        format!("file {}", self.0.display())
    }
}

/// A PIN from an environment variable, read on every use.
#[derive(Debug, Clone)]
pub struct EnvPin(pub String);

impl PinSource for EnvPin {
    fn current(&self) -> Result<SecretString, PinError> {
        let value = zeroize::Zeroizing::new(
            std::env::var(&self.0).map_err(|_| PinError::MissingEnv(self.0.clone()))?,
        );
        non_empty(&value, || self.describe())
    }

    fn describe(&self) -> String {
        format!("environment variable {}", self.0)
    }
}

/// A fixed PIN (tests, or a PIN fetched once by the caller).
pub struct FixedPin(pub SecretString);

impl PinSource for FixedPin {
    fn current(&self) -> Result<SecretString, PinError> {
        non_empty(self.0.expose_secret(), || self.describe())
    }

    fn describe(&self) -> String {
        "a fixed value".into()
    }
}

fn non_empty(pin: &str, describe: impl Fn() -> String) -> Result<SecretString, PinError> {
    if pin.is_empty() {
        Err(PinError::Empty(describe()))
    } else {
        Ok(SecretString::from(pin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_pin_file_keeps_the_os_error() {
        let error = FilePin("/nonexistent/pin".into()).current().unwrap_err();
        let os = std::error::Error::source(&error)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .expect("the OS error is the source");
        assert_eq!(os.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_file_pin_is_re_read_and_its_newline_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "1234\n").unwrap();
        let source = FilePin(path.clone());
        assert_eq!(source.current().unwrap().expose_secret(), "1234");
        std::fs::write(&path, "5678").unwrap();
        assert_eq!(source.current().unwrap().expose_secret(), "5678");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(source.current(), Err(PinError::Empty(_))));
        std::fs::remove_file(&path).unwrap();
        let err = source.current().unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn errors_name_the_source_never_the_pin() {
        let source = EnvPin("HSM_AGENT_TEST_PIN_THAT_IS_NOT_SET".into());
        let err = source.current().unwrap_err().to_string();
        assert!(err.contains("HSM_AGENT_TEST_PIN_THAT_IS_NOT_SET"));
        let fixed = FixedPin(SecretString::from("9999"));
        assert_eq!(fixed.current().unwrap().expose_secret(), "9999");
        assert!(!fixed.describe().contains("9999"));
    }
}
