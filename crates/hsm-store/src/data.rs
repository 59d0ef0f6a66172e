//! Secret values in memory: wiped on drop and never printed.

use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// One secret value. `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        SecretValue(Zeroizing::new(bytes.into()))
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for SecretValue {
    fn from(s: &str) -> Self {
        SecretValue::new(s.as_bytes())
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretValue {
    fn from(v: Zeroizing<Vec<u8>>) -> Self {
        SecretValue(v)
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({} bytes)", self.0.len())
    }
}

/// A secret's keys and values, in key order.
pub type SecretData = BTreeMap<String, SecretValue>;

/// Builds [`SecretData`] from string pairs; for tests and tools.
pub fn secret_data<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> SecretData {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), SecretValue::from(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let data = secret_data([("password", "hunter2")]);
        let shown = format!("{data:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("7 bytes"));
    }
}
