//! A SoftHSM2 token standing in for a USB HSM: its directory, PIN and the `hsmctl` that reads
//! and writes it directly, so scenarios check the HSM itself and not only what the operator
//! says about it.

use crate::process;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// SoftHSM2's PKCS#11 module on Debian.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// One token in its own directory.
#[derive(Clone)]
pub struct Token {
    dir: PathBuf,
    label: String,
    hsmctl: PathBuf,
}

impl Token {
    /// Makes token `label` under `dir` (its configuration, token files and PINs).
    pub fn create(dir: &Path, label: &str, hsmctl: &Path) -> Result<Token> {
        // The token files' directory; `Token::tokens` names it.
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)?;
        std::fs::write(
            dir.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )?;
        write_private(&dir.join("pin"), &random_hex(4))?;
        write_private(&dir.join("so-pin"), &random_hex(8))?;
        let token = Token {
            dir: dir.to_owned(),
            label: label.to_owned(),
            hsmctl: hsmctl.to_owned(),
        };
        let so_pin = dir.join("so-pin");
        token.hsmctl(&[
            "init-token",
            "--label",
            label,
            "--so-pin-file",
            &so_pin.to_string_lossy(),
        ])?;
        Ok(token)
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The user PIN.
    pub fn pin(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.dir.join("pin"))?
            .trim()
            .to_owned())
    }

    /// The SoftHSM2 configuration file (`SOFTHSM2_CONF`).
    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }

    /// The directory of the token's files (SoftHSM2's `directories.tokendir`).
    pub fn tokens(&self) -> PathBuf {
        self.dir.join("tokens")
    }

    /// The directory holding the configuration and the token.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `hsmctl` on the token; its stdout.
    pub fn hsmctl(&self, args: &[&str]) -> Result<String> {
        let pin = self.dir.join("pin");
        let mut all = vec![
            "--module",
            MODULE,
            "--token-label",
            &self.label,
            "--pin-file",
        ];
        let pin = pin.to_string_lossy();
        all.push(&pin);
        all.extend_from_slice(args);
        process::run(&self.hsmctl, &all, &[("SOFTHSM2_CONF", &self.conf())])
    }

    /// The names of the secrets on the token (`hsmctl list`).
    pub fn secrets(&self) -> Result<Vec<String>> {
        let listed = self.hsmctl(&["list", "-o", "json"])?;
        let value: serde_json::Value = serde_json::from_str(&listed)?;
        Ok(value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                entry["name"]
                    .as_str()
                    .or_else(|| entry.as_str())
                    .map(str::to_owned)
            })
            .collect())
    }
}

/// `bytes` random bytes, hex-encoded.
pub fn random_hex(bytes: usize) -> String {
    let raw: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(raw)
}

/// Writes `text` readable by the owner only.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

impl Token {
    /// One key's value of a secret on the token, or `None` when the secret is not there.
    pub fn value(&self, secret: &str, key: &str) -> Result<Option<String>> {
        if !self.secrets()?.iter().any(|s| s == secret) {
            return Ok(None);
        }
        Ok(Some(self.hsmctl(&["get", secret, "--key", key])?))
    }
}
