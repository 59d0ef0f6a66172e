//! The token cache: `~/.kube/hsm-cache/` (or `$HSM_CACHE_DIR`), a directory only its owner
//! can enter (0700) holding files only its owner can read (0600): one per manager and
//! service account (`token-<hash>.json`) and the `auth config` settings (`config.json`).
//!
//! The Go plugin kept one token in a *file* of that name; such a file is removed (its token
//! is re-obtained) when the directory is first made. Files are written to a temporary name
//! created 0600 and renamed, so a token is never readable by others, not even for a moment.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Tokens this close to expiry are not used (the Go plugin's refresh threshold).
pub const REFRESH_BEFORE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The cache cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Neither `$HSM_CACHE_DIR` nor `$HOME` is set.
    #[error("no cache directory: set HOME or HSM_CACHE_DIR")]
    NoHome,
    /// A file operation failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How a cached token was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// The manager's JWT from `POST /api/v1/auth/token`.
    Exchanged,
    /// The ServiceAccount token itself (a manager without the exchange).
    ServiceAccount,
}

/// A cached bearer token. `Debug` never shows the token.
#[derive(Clone, Serialize, Deserialize)]
pub struct CachedToken {
    /// Which manager and service account it is for.
    pub identity: String,
    /// The token.
    token: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// How it was obtained.
    pub kind: TokenKind,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("identity", &self.identity)
            .field("token", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Drop for CachedToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

impl CachedToken {
    /// A token for `identity`.
    pub fn new(
        identity: &str,
        token: &secrecy::SecretString,
        expires_at: DateTime<Utc>,
        kind: TokenKind,
    ) -> Self {
        CachedToken {
            identity: identity.to_owned(),
            token: secrecy::ExposeSecret::expose_secret(token).to_owned(),
            expires_at,
            kind,
        }
    }

    /// The token.
    pub fn token(&self) -> secrecy::SecretString {
        secrecy::SecretString::from(self.token.as_str())
    }

    /// Usable at `now`: more than [`REFRESH_BEFORE`] left.
    pub fn fresh_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at - now > REFRESH_BEFORE
    }
}

/// `auth config` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthConfig {
    /// The service account whose token is requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

impl Cache {
    /// `$HSM_CACHE_DIR`, else `$HOME/.kube/hsm-cache`.
    pub fn locate() -> Result<Cache, CacheError> {
        if let Some(dir) = std::env::var_os("HSM_CACHE_DIR").filter(|d| !d.is_empty()) {
            return Ok(Cache::at(PathBuf::from(dir)));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or(CacheError::NoHome)?;
        Ok(Cache::at(Path::new(&home).join(".kube").join("hsm-cache")))
    }

    /// A cache in `dir`.
    pub fn at(dir: PathBuf) -> Cache {
        Cache { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the directory (0700), replacing the Go plugin's cache file and tightening a
    /// directory others could enter.
    fn ensure_dir(&self) -> Result<(), CacheError> {
        match fs::symlink_metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => {
                if meta.permissions().mode() & 0o077 != 0 {
                    fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                        .map_err(io("tighten the permissions of", &self.dir))?;
                }
                return Ok(());
            }
            Ok(_) => {
                fs::remove_file(&self.dir).map_err(io("remove the old cache file", &self.dir))?
            }
            Err(_) => {}
        }
        if let Some(parent) = self.dir.parent() {
            fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.dir)
            .map_err(io("create", &self.dir))?;
        // The umask may have narrowed the mode further, never widened it; set it exactly.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(io("set the permissions of", &self.dir))
    }

    fn token_path(&self, identity: &str) -> PathBuf {
        let digest = Sha256::digest(identity.as_bytes());
        self.dir
            .join(format!("token-{}.json", hex::encode(&digest[..8])))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Writes `bytes` to `path` as 0600, atomically.
    fn write_private(&self, path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
        self.ensure_dir()?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(io("write", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename into place", path))
    }

    /// The cached token for `identity`, if there is one that parses.
    pub fn load_token(&self, identity: &str) -> Option<CachedToken> {
        let bytes = zeroize::Zeroizing::new(fs::read(self.token_path(identity)).ok()?);
        let token: CachedToken = serde_json::from_slice(&bytes).ok()?;
        (token.identity == identity).then_some(token)
    }

    /// Caches `token`.
    pub fn store_token(&self, token: &CachedToken) -> Result<(), CacheError> {
        let bytes = zeroize::Zeroizing::new(
            serde_json::to_vec_pretty(token).expect("a cached token serialises"),
        );
        self.write_private(&self.token_path(&token.identity), &bytes)
    }

    /// Forgets the token for `identity`.
    pub fn forget(&self, identity: &str) -> Result<(), CacheError> {
        let path = self.token_path(identity);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Every cached token (for `auth status`), sorted by identity.
    pub fn tokens(&self) -> Vec<CachedToken> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut tokens: Vec<CachedToken> = entries
            .filter_map(Result::ok)
            .filter(|e| is_token_file(&e.path()))
            .filter_map(|e| {
                let bytes = zeroize::Zeroizing::new(fs::read(e.path()).ok()?);
                serde_json::from_slice(&bytes).ok()
            })
            .collect();
        tokens.sort_by(|a, b| a.identity.cmp(&b.identity));
        tokens
    }

    /// Removes every cached token; returns how many. Settings stay.
    pub fn clear_tokens(&self) -> Result<usize, CacheError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A Go plugin's cache file is a token too.
                return match fs::symlink_metadata(&self.dir) {
                    Ok(_) => {
                        fs::remove_file(&self.dir).map_err(io("remove", &self.dir))?;
                        Ok(1)
                    }
                    Err(_) => Ok(0),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                fs::remove_file(&self.dir).map_err(io("remove", &self.dir))?;
                return Ok(1);
            }
            Err(e) => return Err(io("read", &self.dir)(e)),
        };
        let mut removed = 0;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if is_token_file(&path) {
                fs::remove_file(&path).map_err(io("remove", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The `auth config` settings (defaults when none are saved).
    pub fn config(&self) -> AuthConfig {
        fs::read(self.config_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Saves the `auth config` settings.
    pub fn save_config(&self, config: &AuthConfig) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec_pretty(config).expect("settings serialise");
        self.write_private(&self.config_path(), &bytes)
    }
}

fn is_token_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("token-") && n.ends_with(".json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::{ExposeSecret, SecretString};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn token(identity: &str, minutes: i64) -> CachedToken {
        CachedToken::new(
            identity,
            &SecretString::from("eyJ.token.sig"),
            Utc::now() + chrono::TimeDelta::minutes(minutes),
            TokenKind::Exchanged,
        )
    }

    #[test]
    fn the_directory_is_0700_and_files_0600() {
        let home = tempfile::tempdir().unwrap();
        let cache = Cache::at(home.path().join(".kube/hsm-cache"));
        cache.store_token(&token("a", 30)).unwrap();
        cache
            .save_config(&AuthConfig {
                service_account: Some("ci".into()),
                namespace: None,
            })
            .unwrap();
        assert_eq!(mode(cache.dir()), 0o700);
        for entry in fs::read_dir(cache.dir()).unwrap() {
            assert_eq!(mode(&entry.unwrap().path()), 0o600);
        }
        assert_eq!(
            fs::read_dir(cache.dir()).unwrap().count(),
            2,
            "no temporary left"
        );
    }

    #[test]
    fn a_loose_directory_is_tightened_and_a_go_cache_file_replaced() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("hsm-cache");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        Cache::at(dir.clone()).store_token(&token("a", 30)).unwrap();
        assert_eq!(mode(&dir), 0o700);

        let file = home.path().join("go-cache");
        fs::write(&file, r#"{"token":"old"}"#).unwrap();
        let cache = Cache::at(file.clone());
        cache.store_token(&token("b", 30)).unwrap();
        assert!(file.is_dir());
        assert_eq!(mode(&file), 0o700);
    }

    #[test]
    fn tokens_round_trip_per_identity_and_clear_keeps_settings() {
        let home = tempfile::tempdir().unwrap();
        let cache = Cache::at(home.path().join("c"));
        cache.store_token(&token("a", 30)).unwrap();
        cache.store_token(&token("b", 30)).unwrap();
        cache.save_config(&AuthConfig::default()).unwrap();
        let a = cache.load_token("a").unwrap();
        assert_eq!(a.token().expose_secret(), "eyJ.token.sig");
        assert!(cache.load_token("c").is_none());
        assert_eq!(cache.tokens().len(), 2);
        cache.forget("a").unwrap();
        assert!(cache.load_token("a").is_none());
        assert_eq!(cache.clear_tokens().unwrap(), 1);
        assert!(cache.tokens().is_empty());
        assert!(cache.dir().join("config.json").exists());
    }

    #[test]
    fn freshness_needs_five_minutes_left() {
        let now = Utc::now();
        assert!(token("a", 30).fresh_at(now));
        assert!(!token("a", 4).fresh_at(now));
        assert!(!token("a", -1).fresh_at(now));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let shown = format!("{:?}", token("a", 1));
        assert!(!shown.contains("eyJ.token.sig"), "{shown}");
    }
}
