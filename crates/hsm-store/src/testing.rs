//! Test support: a fresh SoftHSM2 token per fixture, in a private temporary directory.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, at `C_Initialize`, and a module initialises once per
//! process; so each test process gets its own token directory (under cargo-nextest that is
//! one directory per test), and each fixture its own token in it. Nothing is written outside
//! the temporary directory, which is removed when the process ends.

use crate::error::Result;
use crate::token::{Module, Pkcs11Token, TokenSelector};
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where Debian installs SoftHSM2's module.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of fixture tokens.
pub const TEST_PIN: &str = "1234";
/// The SO PIN of fixture tokens.
pub const TEST_SO_PIN: &str = "12345678";

struct ProcessTokenDir {
    dir: PathBuf,
    conf: PathBuf,
}

/// Prefix of the per-process token directories, followed by the process id.
const DIR_PREFIX: &str = "hsm-store-softhsm-";

/// Removes token directories of processes that are gone (a killed test cannot clean up).
fn sweep_dead_process_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes this process's token directory when the process exits (statics are not dropped).
// SAFETY (for `unsafe`): runs from the C runtime's exit handlers; it only reads a OnceLock
// and removes files, touching no state that Rust's runtime tears down before it.
#[allow(unsafe_code)]
#[dtor::dtor(unsafe)]
fn remove_process_token_dir() {
    if let Some(dir) = PROCESS_DIR.get() {
        let _ = std::fs::remove_dir_all(&dir.dir);
    }
}

static PROCESS_DIR: OnceLock<ProcessTokenDir> = OnceLock::new();

fn process_token_dir() -> &'static ProcessTokenDir {
    PROCESS_DIR.get_or_init(|| {
        sweep_dead_process_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("create a temporary token directory")
            .keep();
        let tokens = dir.join("tokens");
        std::fs::create_dir(&tokens).expect("create the token directory");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("write softhsm2.conf");
        // SAFETY: runs once, inside OnceLock initialisation, before this process loads
        // SoftHSM2 (which is what reads the variable). Test harness threads do not write the
        // environment.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &conf)
        };
        ProcessTokenDir { dir, conf }
    })
}

/// A fresh, initialised SoftHSM2 token.
#[derive(Debug)]
pub struct SoftHsm {
    /// The loaded module.
    pub module: Module,
    /// The token's label (unique within the process).
    pub label: String,
}

impl SoftHsm {
    /// Creates a new token with [`TEST_PIN`]. Panics with a clear message if SoftHSM2 is not
    /// installed (`cargo xtask test` installs it).
    pub fn new() -> SoftHsm {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(
            Path::new(SOFTHSM2_MODULE).exists(),
            "SoftHSM2 is not installed ({SOFTHSM2_MODULE} missing): install the Debian package \
             softhsm2, or run `cargo xtask test`, which does"
        );
        process_token_dir();
        let module = Module::load(SOFTHSM2_MODULE).expect("load SoftHSM2");
        let label = format!(
            "t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        module
            .init_token(
                &label,
                &SecretString::from(TEST_SO_PIN),
                &SecretString::from(TEST_PIN),
            )
            .expect("initialise a SoftHSM2 token");
        SoftHsm { module, label }
    }

    /// The selector of this token.
    pub fn selector(&self) -> TokenSelector {
        TokenSelector::Label(self.label.clone())
    }

    /// A new logged-in session pool on the token.
    pub fn open(&self) -> Result<Pkcs11Token> {
        Pkcs11Token::open(
            &self.module,
            &self.selector(),
            &SecretString::from(TEST_PIN),
        )
    }

    /// The `SOFTHSM2_CONF` of this process, for child processes (hsmctl in tests).
    pub fn conf_path(&self) -> &Path {
        &process_token_dir().conf
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftHsm {
    /// A raw, logged-in `cryptoki` session on the token, for tests that write or read objects
    /// the way another implementation (the Go operator) does.
    pub fn raw_session(&self) -> cryptoki::session::Session {
        use secrecy::ExposeSecret;
        let slot = self.module.find_slot(&self.selector()).expect("token slot");
        let session = self.module.ctx.open_rw_session(slot).expect("open session");
        let pin = SecretString::from(TEST_PIN);
        match session.login(
            cryptoki::session::UserType::User,
            Some(&cryptoki::types::AuthPin::new(pin.expose_secret().into())),
        ) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => panic!("login: {e}"),
        }
        session
    }
}

/// A log sink for tests that search everything logged for secrets: clone it into a
/// `tracing_subscriber` writer (`.with_writer(move || sink.clone())`), then read [`text`].
///
/// [`text`]: CapturedLogs::text
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log sink")).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log sink").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
