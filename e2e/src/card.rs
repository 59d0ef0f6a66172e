//! The virtual Pico HSM: a SmartCard-HSM emulator (`virtual-pico`) plugged into the vpcd
//! reader of an agent's own pcscd, so the agent reaches it through pcscd and OpenSC's
//! `opensc-pkcs11.so` exactly as it reaches a USB card.
//!
//! The agent image's test layer gives its pcscd Debian's vpcd reader, which listens on every
//! address of the pod's network namespace ([`VPCD_PORT`]); the card is a process on this
//! machine that dials the agent pod's address there, as the node reaches its pods. Its state
//! lives in a file, so stopping the process pulls the card and starting it again with the
//! same file plugs the same card back in.
//!
//! The card is initialised before it is ever plugged into the agent, as a user initialises a
//! card on a workstation: `sc-hsm-tool --initialize` in a private pcscd on this machine
//! (`virtual-pico --private-reader`). While it is pulled, the run reads it the same way with
//! `hsmctl`, so scenarios check the card itself, not only what the operator says of it.

use crate::process::{self, Service};
use anyhow::{Context, Result, ensure};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The vpcd reader's port in the agent image (`CHANNELID 0x8C7B` of Debian's
/// `/etc/reader.conf.d/vpcd`, which the test layer adds).
pub const VPCD_PORT: u16 = 0x8C7B;
/// The card's serial number: that of the SmartCard-HSM the node's fixture sysfs tree shows.
pub const SERIAL: &str = "DENK0100123";
/// OpenSC's PKCS#11 module inside the agent image (and on this machine).
pub const MODULE: &str = virtual_pico::fixture::OPENSC_MODULE;
/// The token label OpenSC shows for the card (`sc-hsm-tool --label` plus `(UserPIN)`).
pub const TOKEN_LABEL: &str = "virtual-pico (UserPIN)";

/// One virtual card, plugged into at most one reader at a time.
pub struct VirtualCard {
    program: PathBuf,
    hsmctl: PathBuf,
    dir: PathBuf,
    /// The card's process while it is plugged in.
    plugged: Mutex<Option<Service>>,
}

impl VirtualCard {
    /// Makes the card under `dir` and initialises it (user PIN [`VirtualCard::pin`], label
    /// [`TOKEN_LABEL`]) in a private pcscd, with `program` (`virtual-pico`); `hsmctl` reads
    /// it while it is pulled.
    pub fn create(dir: &Path, program: &Path, hsmctl: &Path) -> Result<VirtualCard> {
        std::fs::create_dir_all(dir)?;
        let card = VirtualCard {
            program: program.to_owned(),
            hsmctl: hsmctl.to_owned(),
            dir: dir.to_owned(),
            plugged: Mutex::new(None),
        };
        crate::softhsm::write_private(&card.pin_file(), &card.pin())?;
        card.in_private_reader(&[])
            .context("initialising the virtual card")?;
        Ok(card)
    }

    /// The card's state: what its flash holds.
    fn state(&self) -> PathBuf {
        self.dir.join("card")
    }

    fn pin_file(&self) -> PathBuf {
        self.dir.join("pin")
    }

    /// The user PIN it was initialised with.
    pub fn pin(&self) -> String {
        virtual_pico::fixture::USER_PIN.to_owned()
    }

    /// Plugs the card into the vpcd reader of the pod at `address`.
    pub fn plug(&self, address: IpAddr) -> Result<()> {
        let mut plugged = self.plugged.lock().expect("card lock");
        ensure!(plugged.is_none(), "the virtual card is plugged in already");
        let args: Vec<String> = vec![
            "--host".into(),
            address.to_string(),
            "--port".into(),
            VPCD_PORT.to_string(),
            "--serial".into(),
            SERIAL.into(),
            "--state".into(),
            self.state().display().to_string(),
        ];
        *plugged = Some(Service::start(
            "virtual-pico",
            &self.program,
            &args,
            &self.dir.join("logs"),
        )?);
        Ok(())
    }

    /// Pulls the card: its process stops, the reader's connection closes.
    pub fn pull(&self) {
        if let Some(mut service) = self.plugged.lock().expect("card lock").take() {
            service.stop();
        }
    }

    /// Whether it is plugged in.
    pub fn is_plugged(&self) -> bool {
        self.plugged.lock().expect("card lock").is_some()
    }

    /// Key `key` of each secret in `names` as the card itself holds it (`None`: no such
    /// secret), read with `hsmctl` through OpenSC in a private pcscd. Only while pulled.
    pub fn values(&self, names: &[String], key: &str) -> Result<Vec<Option<String>>> {
        ensure!(
            !self.is_plugged(),
            "the card is read only while it is pulled"
        );
        // One pcscd for every read: a shell prints `name<TAB>value` for each secret held.
        let script = r#"h=$1 m=$2 l=$3 p=$4 k=$5; shift 5
listed=$("$h" --module "$m" --token-label "$l" --pin-file "$p" list) || exit 1
listed=$(printf '%s\n' "$listed" | awk 'NR > 1 { print $1 }')
for n; do
  if printf '%s\n' "$listed" | grep -qx "$n"; then
    printf '%s\t' "$n"; "$h" --module "$m" --token-label "$l" --pin-file "$p" get "$n" --key "$k" || exit 1; echo
  fi
done"#;
        let mut command: Vec<String> = vec![
            "sh".into(),
            "-c".into(),
            script.into(),
            "sh".into(),
            self.hsmctl.display().to_string(),
            MODULE.into(),
            TOKEN_LABEL.into(),
            self.pin_file().display().to_string(),
            key.into(),
        ];
        command.extend(names.iter().cloned());
        let out = self.in_private_reader(&command)?;
        let held: std::collections::BTreeMap<&str, &str> = out
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .collect();
        Ok(names
            .iter()
            .map(|n| held.get(n.as_str()).map(|v| (*v).to_owned()))
            .collect())
    }

    /// Runs `command` with the card in a private pcscd (initialising it first if blank).
    fn in_private_reader(&self, command: &[String]) -> Result<String> {
        let state = self.state().display().to_string();
        let mut args: Vec<&str> = vec!["--state", &state, "--serial", SERIAL, "--private-reader"];
        if !command.is_empty() {
            args.push("--");
            args.extend(command.iter().map(String::as_str));
        }
        process::run(&self.program, &args, &[])
    }
}

impl Drop for VirtualCard {
    fn drop(&mut self) {
        self.pull();
    }
}
