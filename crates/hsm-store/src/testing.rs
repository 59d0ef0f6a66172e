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
/// OpenSC's PKCS#11 spy (Debian package opensc): a module that logs every call it passes on
/// to the real module behind it.
pub const PKCS11_SPY: &str = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so";
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
        // A killed test cannot clean up: the next process sweeps its directory.
        test_dirs::sweep_dead_process_dirs(DIR_PREFIX);
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

/// Numbers fixture token labels within the process.
static NEXT_TOKEN: AtomicU32 = AtomicU32::new(0);

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
            NEXT_TOKEN.fetch_add(1, Ordering::SeqCst)
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

    /// A fresh token like [`SoftHsm::new`], through the module at `module` instead: one that
    /// passes calls on to SoftHSM2, such as [`Pkcs11Spy::module`].
    pub fn on_module(module: &str) -> SoftHsm {
        process_token_dir();
        let module = Module::load(module).expect("load the module");
        let label = format!(
            "t{}-{}",
            std::process::id(),
            NEXT_TOKEN.fetch_add(1, Ordering::SeqCst)
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

/// OpenSC's PKCS#11 spy in front of a real module, logging to a file in this process's
/// temporary directory: counts the calls a module really receives, below any wrapper.
#[derive(Debug)]
pub struct Pkcs11Spy {
    log: PathBuf,
}

impl Pkcs11Spy {
    /// Puts the spy in front of `real` for this process. Call it before anything loads
    /// [`PKCS11_SPY`] (the spy reads its settings once, when loaded), and load the spy through
    /// [`Pkcs11Spy::module`]. Panics with a clear message if OpenSC is not installed.
    pub fn in_front_of(real: &str) -> Pkcs11Spy {
        static LOG: OnceLock<PathBuf> = OnceLock::new();
        assert!(
            Path::new(PKCS11_SPY).exists(),
            "OpenSC's pkcs11-spy is not installed ({PKCS11_SPY} missing): install the Debian \
             package opensc, or run `cargo xtask test`, which does"
        );
        let log = LOG.get_or_init(|| {
            let log = process_token_dir().dir.join("pkcs11-spy.log");
            // SAFETY: runs once, before this process loads the spy (which is what reads the
            // variables, at load); see `process_token_dir` for the same reasoning.
            #[allow(unsafe_code)]
            unsafe {
                std::env::set_var("PKCS11SPY", real);
                std::env::set_var("PKCS11SPY_OUTPUT", &log);
            }
            log
        });
        Pkcs11Spy { log: log.clone() }
    }

    /// The module to load: the spy.
    pub fn module(&self) -> &'static str {
        PKCS11_SPY
    }

    /// Every call logged so far, by function name (`C_GetAttributeValue`, …), in order.
    pub fn calls(&self) -> Vec<String> {
        let text = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|line| {
                let (number, call) = line.split_once(": ")?;
                (number.bytes().all(|b| b.is_ascii_digit())
                    && !number.is_empty()
                    && call.starts_with("C_")
                    && call.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                .then(|| call.to_owned())
            })
            .collect()
    }

    /// How many calls were logged so far.
    pub fn count(&self) -> usize {
        self.calls().len()
    }

    /// The calls made while `f` ran: their number, and how many of each function.
    pub fn during<R>(&self, f: impl FnOnce() -> R) -> (R, SpiedCalls) {
        let before = self.count();
        let result = f();
        let calls = self.calls().split_off(before);
        (result, SpiedCalls(calls))
    }
}

/// Module calls seen by [`Pkcs11Spy::during`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiedCalls(pub Vec<String>);

impl SpiedCalls {
    /// How many calls.
    pub fn total(&self) -> usize {
        self.0.len()
    }

    /// How many calls of each function, in name order (`C_FindObjects x2, …`).
    pub fn by_function(&self) -> std::collections::BTreeMap<&str, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for call in &self.0 {
            *counts.entry(call.as_str()).or_default() += 1;
        }
        counts
    }
}

impl std::fmt::Display for SpiedCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .by_function()
            .into_iter()
            .map(|(call, n)| format!("{call} x{n}"))
            .collect();
        write!(f, "{} ({})", self.total(), parts.join(", "))
    }
}

/// Every form `needle` could take in a log line or message: as text (and its `Debug`), as hex
/// in either case, as base64 (standard and URL-safe), and as a Rust byte-array `Debug`
/// (`86, 65, …`, also inside a longer array). Named, for the leak reports of [`leaks`].
pub fn leak_forms(needle: &[u8]) -> Vec<(&'static str, String)> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut forms = vec![
        ("hex", hex::encode(needle)),
        ("HEX", hex::encode_upper(needle)),
        ("base64", STANDARD_NO_PAD.encode(needle)),
        ("base64url", URL_SAFE_NO_PAD.encode(needle)),
        (
            "byte-array Debug",
            needle
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    if let Ok(text) = std::str::from_utf8(needle) {
        forms.push(("text", text.to_owned()));
        forms.push(("Debug", format!("{text:?}")));
    }
    forms
}

/// Every `"<needle's name> as <form>"` found in `text` (see [`leak_forms`]): empty when
/// nothing leaked. Capture logs without colour (`with_ansi(false)`), or escape codes can split
/// a value.
pub fn leaks(text: &str, needles: &[(&str, &[u8])]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, needle) in needles {
        for (form, encoded) in leak_forms(needle) {
            if text.contains(&encoded) {
                found.push(format!("{name} as {form}"));
            }
        }
    }
    found
}

/// The variable that marks a benchmark's second run, under [`Pkcs11Spy`].
const SPIED_RUN: &str = "HSM_BENCH_SPIED_RUN";

/// For benchmarks that count module calls apart from timing (the spy's logging would slow
/// the timed run): whether this is the spied run.
pub fn is_spied_run() -> bool {
    std::env::var_os(SPIED_RUN).is_some()
}

/// Runs this program again as its spied run ([`is_spied_run`] true there) and returns what it
/// printed. Panics if it fails.
pub fn rerun_spied() -> String {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    let output = std::process::Command::new(exe)
        .env(SPIED_RUN, "1")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run the benchmark again under pkcs11-spy");
    assert!(
        output.status.success(),
        "the spied run failed: {}",
        output.status
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
