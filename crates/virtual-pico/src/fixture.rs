//! A test fixture: a private pcscd with a vpcd reader, a virtual card plugged into it and
//! initialised with `sc-hsm-tool`, ready for OpenSC's `opensc-pkcs11.so`. Everything it
//! starts is stopped when it is dropped, also when a test panics.
//!
//! pcscd runs in a private mount namespace whose `/run/pcscd` is a temporary directory, so
//! the machine's own pcscd and socket are never touched; the vpcd reader listens on a port
//! chosen per fixture. A PKCS#11 module reads `PCSCLITE_CSOCK_NAME` once, at
//! `C_Initialize`, so a process can use one fixture (cargo-nextest runs each test in its own
//! process).

use crate::card::Card;
use crate::vpcd::VirtualCard;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// OpenSC's PKCS#11 module on Debian (amd64).
pub const OPENSC_MODULE: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";
/// The vpcd reader driver.
pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
/// The user PIN the fixture sets.
pub const USER_PIN: &str = "648219";
/// The SO PIN the fixture sets (16 hex digits, as `sc-hsm-tool` takes it).
pub const SO_PIN_HEX: &str = "3537363231383830";
/// The fixture's OpenSC configuration: OpenSC's defaults, stated, so that a machine's own
/// `/etc/opensc.conf` cannot change what the tests see. No file cache: every process reads
/// the card itself, as the agent does on a real token.
const OPENSC_CONF: &str =
    "app default {\n\tdebug = 0;\n\tframework pkcs15 {\n\t\tuse_file_caching = no;\n\t}\n}\n";

/// The token label the fixture sets; OpenSC shows `<label> (UserPIN)`.
pub const TOKEN_LABEL: &str = "virtual-pico";

/// Why the fixture could not start.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// Something needed is not installed.
    #[error("{0} is missing: install the Debian packages pcscd, vsmartcard-vpcd and opensc")]
    Missing(String),
    /// A step failed.
    #[error("{0}")]
    Step(String),
}

static IN_USE: AtomicBool = AtomicBool::new(false);

/// The serial number of the fixture's card.
pub const SERIAL: &str = "DEEMU13092";

/// pcscd, the reader and the card.
pub struct PicoFixture {
    dir: tempfile::TempDir,
    pcscd: Child,
    port: u16,
    saved: Option<PathBuf>,
    /// The card: remove, insert, latency, APDU counter and log.
    pub card: VirtualCard,
}

impl std::fmt::Debug for PicoFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PicoFixture")
            .field("socket", &self.socket())
            .finish()
    }
}

/// Prefix of the fixtures' temporary directories, followed by the process id.
const DIR_PREFIX: &str = "virtual-pico-";

fn free_port() -> Result<u16, FixtureError> {
    // vpcd opens the port and the next one (two readers).
    for _ in 0..50 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| FixtureError::Step(format!("no free port: {e}")))?
            .port();
        if port < u16::MAX && std::net::TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err(FixtureError::Step("no pair of free ports".into()))
}

impl PicoFixture {
    /// Starts pcscd and the card, and initialises the card (user PIN [`USER_PIN`], label
    /// [`TOKEN_LABEL`]). Sets `PCSCLITE_CSOCK_NAME` and `OPENSC_CONF` (a private
    /// configuration) for this process.
    pub fn start() -> Result<PicoFixture, FixtureError> {
        PicoFixture::start_with(None)
    }

    /// As [`PicoFixture::start`], with the card saved to `path` after every change: a card
    /// already saved there is plugged in as it is (initialised only if it is blank).
    pub fn start_saved(path: &Path) -> Result<PicoFixture, FixtureError> {
        PicoFixture::start_with(Some(path))
    }

    fn start_with(saved: Option<&Path>) -> Result<PicoFixture, FixtureError> {
        for needed in [
            "/usr/sbin/pcscd",
            VPCD_DRIVER,
            OPENSC_MODULE,
            "/usr/bin/sc-hsm-tool",
        ] {
            if !Path::new(needed).exists() {
                return Err(FixtureError::Missing(needed.into()));
            }
        }
        if IN_USE.swap(true, Ordering::SeqCst) {
            return Err(FixtureError::Step(
                "one PicoFixture per process (run the tests with cargo-nextest)".into(),
            ));
        }
        let step = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| FixtureError::Step(format!("{what}: {e}"))
        };
        // A killed test cannot clean up: its pcscd dies with it (`PR_SET_PDEATHSIG` below),
        // but its directory stays until the next fixture sweeps it.
        test_dirs::sweep_dead_process_dirs(DIR_PREFIX);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(step("temporary directory"))?;
        let (run, readers) = (dir.path().join("run"), dir.path().join("readers"));
        std::fs::create_dir(&run).map_err(step("run directory"))?;
        std::fs::create_dir(&readers).map_err(step("reader directory"))?;
        let port = free_port()?;
        std::fs::write(
            readers.join("vpcd"),
            format!(
                "FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:0x{port:04X}\nLIBPATH {VPCD_DRIVER}\nCHANNELID 0x{port:04X}\n"
            ),
        )
        .map_err(step("reader configuration"))?;
        std::fs::write(dir.path().join("opensc.conf"), OPENSC_CONF)
            .map_err(step("OpenSC configuration"))?;
        let script = format!(
            "mkdir -p /run/pcscd && mount --bind {} /run/pcscd && exec /usr/sbin/pcscd -f -c {}",
            run.display(),
            readers.display()
        );
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // pcscd dies with the thread that started it, even when the fixture is never dropped
        // (a test that panics while another thread still holds it, or a killed test
        // process). `unshare` and `sh` exec in place, so the setting reaches pcscd.
        // SAFETY: the closure runs between fork and exec and makes one prctl system call,
        // which is async-signal-safe; it touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let pcscd = command.spawn().map_err(step("starting pcscd"))?;
        let socket = run.join("pcscd.comm");
        let card = match saved {
            Some(path) => VirtualCard::start_saved(port, path, SERIAL)
                .map_err(|e| FixtureError::Step(e.to_string()))?,
            None => VirtualCard::start(port, Card::new(SERIAL)),
        };
        let fixture = PicoFixture {
            dir,
            pcscd,
            port,
            saved: saved.map(Path::to_owned),
            card,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() || !fixture.card.is_recognised() {
            if Instant::now() > deadline {
                return Err(FixtureError::Step(
                    "pcscd or the card did not come up".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: set once per process (guarded above), before the test loads OpenSC's
        // module, which reads it at C_Initialize.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("PCSCLITE_CSOCK_NAME", &socket);
            std::env::set_var("OPENSC_CONF", fixture.opensc_conf());
        };
        if !fixture.card.card().is_initialized() {
            fixture.initialize()?;
        }
        Ok(fixture)
    }

    /// Pulls the card, replaces everything on it with `card` and plugs it in again, waiting
    /// until the reader has it. Sessions opened before see the card removed; a new session
    /// sees `card` (a snapshot from [`VirtualCard::card`] restores the card as it was).
    pub fn replug(&self, card: Card) -> Result<(), FixtureError> {
        self.card.remove();
        self.wait_for(false)?;
        self.card
            .set_card(card)
            .map_err(|e| FixtureError::Step(e.to_string()))?;
        self.card.insert();
        self.wait_for(true)
    }

    /// Stops the card's emulator and starts a new one from the file the card is saved in,
    /// as unplugging a USB token and plugging it in later. Only for [`PicoFixture::start_saved`].
    pub fn restart_card(&mut self) -> Result<(), FixtureError> {
        let path = self.saved.clone().ok_or_else(|| {
            FixtureError::Step("restart_card needs a fixture from start_saved".into())
        })?;
        // The old emulator must let go of the reader before the new one connects.
        self.card.remove();
        self.wait_for(false)?;
        self.card = VirtualCard::start_saved(self.port, &path, SERIAL)
            .map_err(|e| FixtureError::Step(e.to_string()))?;
        self.wait_for(true)
    }

    fn wait_for(&self, connected: bool) -> Result<(), FixtureError> {
        // Going means pcscd has noticed the reader empty, and coming back that it has
        // recognised the card, not only that the reader has it: until pcscd's next poll its
        // clients still see the old state.
        let done = |card: &VirtualCard| match connected {
            true => card.is_recognised(),
            false => card.is_removal_noticed(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.card) {
            if Instant::now() > deadline {
                return Err(FixtureError::Step(format!(
                    "the card did not {}",
                    if connected { "come back" } else { "go" }
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// pcscd's process id.
    pub fn pcscd_pid(&self) -> u32 {
        self.pcscd.id()
    }

    /// The fixture's temporary directory (pcscd's socket, reader and OpenSC configuration).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The private OpenSC configuration (what `OPENSC_CONF` names).
    pub fn opensc_conf(&self) -> PathBuf {
        self.dir.path().join("opensc.conf")
    }

    /// pcscd's socket (what `PCSCLITE_CSOCK_NAME` names).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/pcscd.comm")
    }

    fn initialize(&self) -> Result<(), FixtureError> {
        // pcscd polls its readers: the card may not be "present" for up to a second after
        // it connected.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let output = Command::new("sc-hsm-tool")
                .args([
                    "--initialize",
                    "--so-pin",
                    SO_PIN_HEX,
                    "--pin",
                    USER_PIN,
                    "--label",
                    TOKEN_LABEL,
                ])
                .env("PCSCLITE_CSOCK_NAME", self.socket())
                .env("OPENSC_CONF", self.opensc_conf())
                .output()
                .map_err(|e| FixtureError::Step(format!("sc-hsm-tool: {e}")))?;
            let said = String::from_utf8_lossy(&output.stderr);
            if said.contains("not present") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            // sc-hsm-tool exits 0 even when the card refuses: check what it said, and the
            // card itself.
            if !output.status.success()
                || said.contains("failed")
                || !self.card.card().is_initialized()
            {
                return Err(FixtureError::Step(format!(
                    "sc-hsm-tool --initialize did not initialise the card: {}",
                    said.trim()
                )));
            }
            return Ok(());
        }
    }
}

impl Drop for PicoFixture {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pcscd.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.pcscd.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = self.pcscd.kill();
                    let _ = self.pcscd.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        IN_USE.store(false, Ordering::SeqCst);
    }
}
