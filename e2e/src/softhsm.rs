//! A SoftHSM2 token standing in for a USB HSM: its directory, PIN and the `hsmctl` that reads
//! and writes it directly, so scenarios check the HSM itself and not only what the operator
//! says about it.

use crate::process;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// SoftHSM2's PKCS#11 module on Debian.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// One token: the SoftHSM2 configuration that finds it, its PINs and label.
#[derive(Clone)]
pub struct Token {
    /// Where its PIN files are.
    dir: PathBuf,
    /// The SoftHSM2 configuration naming the token directory it lies in.
    conf: PathBuf,
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
        Token::init(dir, &dir.join("softhsm2.conf"), label, hsmctl)
    }

    /// Makes token `label` beside this one, in the same SoftHSM2 token directory (so that
    /// every process configured for this token sees both, as a host sees two HSMs plugged
    /// in), with its own PINs under `dir`.
    pub fn create_beside(&self, dir: &Path, label: &str) -> Result<Token> {
        std::fs::create_dir_all(dir)?;
        Token::init(dir, &self.conf, label, &self.hsmctl)
    }

    /// Writes fresh PINs under `dir` and initialises token `label` in the first free slot of
    /// the configuration `conf`.
    fn init(dir: &Path, conf: &Path, label: &str, hsmctl: &Path) -> Result<Token> {
        write_private(&dir.join("pin"), &random_hex(4))?;
        write_private(&dir.join("so-pin"), &random_hex(8))?;
        let token = Token {
            dir: dir.to_owned(),
            conf: conf.to_owned(),
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
        self.conf.clone()
    }

    /// The SoftHSM2 token directory the token lies in (shared with the tokens made beside
    /// it): `directories.tokendir` of its configuration, which [`Token::create`] writes.
    pub fn tokens(&self) -> PathBuf {
        self.conf
            .parent()
            .map(|dir| dir.join("tokens"))
            .unwrap_or_default()
    }

    /// The directory holding the token's PINs (and, for a token made by [`Token::create`],
    /// its configuration and token files).
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
        process::run(&self.hsmctl, &all, &[("SOFTHSM2_CONF", &self.conf)])
    }

    /// What the token says of its user PIN's retry counter, read without logging in
    /// (`C_GetTokenInfo`, through OpenSC's `pkcs11-tool`), so that reading it spends no try
    /// and resets nothing. SoftHSM2 never locks a PIN: it raises `count low` on a wrong PIN
    /// and clears it on the next right one; a card counts down and locks.
    pub fn pin_counter(&self) -> Result<PinCounter> {
        let listed = process::run(
            Path::new("pkcs11-tool"),
            &["--module", MODULE, "--list-slots"],
            &[("SOFTHSM2_CONF", &self.conf)],
        )?;
        PinCounter::of(&listed, &self.label)
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

/// The user PIN's retry state as a token reports it in its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PinCounter {
    /// `CKF_USER_PIN_COUNT_LOW`: a wrong PIN was offered since the last right one.
    pub count_low: bool,
    /// `CKF_USER_PIN_FINAL_TRY`: one more wrong PIN locks it.
    pub final_try: bool,
    /// `CKF_USER_PIN_LOCKED`: locked; only the SO PIN unblocks it.
    pub locked: bool,
}

impl PinCounter {
    /// The flags of the token labelled `label` in `pkcs11-tool --list-slots` output.
    pub fn of(listed: &str, label: &str) -> Result<PinCounter> {
        let mut current_label: Option<&str> = None;
        for line in listed.lines() {
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            match field.trim() {
                "token label" => current_label = Some(value.trim()),
                "token flags" if current_label == Some(label) => {
                    let flags: Vec<&str> = value.split(',').map(str::trim).collect();
                    return Ok(PinCounter {
                        count_low: flags.contains(&"user PIN count low"),
                        final_try: flags.contains(&"final user PIN try"),
                        locked: flags.contains(&"user PIN locked"),
                    });
                }
                _ => {}
            }
        }
        anyhow::bail!("pkcs11-tool lists no token labelled {label}")
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

#[cfg(test)]
mod tests {
    use super::*;

    const LISTED: &str = "Available slots:
Slot 0 (0x25cb1398): SoftHSM slot ID 0x25cb1398
  token label        : e2e-mirror
  token flags        : login required, rng, token initialized, PIN initialized, other flags=0x20
  serial num         : 45d08891a5cb1398
Slot 1 (0x45209bad): SoftHSM slot ID 0x45209bad
  token label        : e2e
  token flags        : login required, rng, token initialized, user PIN count low, final user PIN try, PIN initialized
Slot 2 (0x2): SoftHSM slot ID 0x2
  token state:   uninitialized
";

    #[test]
    fn the_counter_is_read_from_the_flags_of_the_labelled_token() {
        assert_eq!(
            PinCounter::of(LISTED, "e2e").unwrap(),
            PinCounter {
                count_low: true,
                final_try: true,
                locked: false
            }
        );
        assert_eq!(
            PinCounter::of(LISTED, "e2e-mirror").unwrap(),
            PinCounter::default()
        );
        let missing = PinCounter::of(LISTED, "other").unwrap_err().to_string();
        assert!(missing.contains("other"), "{missing}");
    }
}
