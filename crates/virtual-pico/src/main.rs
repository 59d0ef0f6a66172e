//! `virtual-pico --port PORT [--host ADDRESS] [--serial SERIAL] [--state FILE]`: plugs a
//! virtual SmartCard-HSM into the vpcd reader at ADDRESS:PORT (127.0.0.1 unless given) and
//! serves it until killed. With `--state`, the card is read from FILE (a blank card if FILE
//! does not exist yet) and saved there after every command that changes it, so stopping and
//! starting the emulator is unplugging and plugging the same card.
//!
//! `virtual-pico --state FILE --private-reader [-- COMMAND ARGS...]`: plugs the card saved in
//! FILE into a private pcscd of its own (a blank card is first initialised as `sc-hsm-tool
//! --initialize` does it, with the fixture's PINs and label, see [`virtual_pico::fixture`]),
//! runs COMMAND with `PCSCLITE_CSOCK_NAME` and `OPENSC_CONF` naming that pcscd and OpenSC
//! configuration, and unplugs the card: how a user initialises a card on a workstation
//! before plugging it in elsewhere, and how a test reads a pulled card itself.

use clap::Parser;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use virtual_pico::card::Card;
use virtual_pico::fixture::PicoFixture;
use virtual_pico::vpcd::VirtualCard;

/// A virtual SmartCard-HSM (Pico HSM) in pcscd's vpcd reader.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The vpcd reader's port (its reader.conf CHANNELID).
    #[arg(long, required_unless_present = "private_reader")]
    port: Option<u16>,
    /// The address of the machine (or network namespace) whose pcscd has the vpcd reader.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// The card's serial number (for a card not saved yet).
    #[arg(long, default_value = "DEVPC00001")]
    serial: String,
    /// Keep the card in this file: loaded at start, saved after every change.
    #[arg(long, required_if_eq("private_reader", "true"))]
    state: Option<PathBuf>,
    /// Plug the card into a private pcscd instead, initialise it if blank, run COMMAND there
    /// and unplug it.
    #[arg(long, conflicts_with_all = ["port", "host"])]
    private_reader: bool,
    /// The command to run with the card in the private reader.
    #[arg(last = true, requires = "private_reader")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match (args.private_reader, &args.state) {
        (true, Some(state)) => in_private_reader(state, &args.serial, &args.command),
        _ => serve(&args),
    }
}

/// Serves the card in the reader at `--host:--port` until killed.
fn serve(args: &Args) -> ExitCode {
    let reader = SocketAddr::new(args.host, args.port.expect("clap requires --port"));
    let _card = match &args.state {
        Some(path) => match VirtualCard::start_saved_at(reader, path, &args.serial) {
            Ok(card) => card,
            Err(e) => {
                eprintln!("virtual-pico: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => VirtualCard::start_at(reader, Card::new(&args.serial)),
    };
    println!(
        "virtual-pico: card {} plugged into the vpcd reader at {reader}",
        args.serial
    );
    loop {
        std::thread::park();
    }
}

/// Plugs the card saved at `state` into a private pcscd, initialised if blank, and runs
/// `command` (if any) there; its exit status.
fn in_private_reader(state: &Path, serial: &str, command: &[String]) -> ExitCode {
    if !state.exists()
        && let Err(e) = Card::new(serial).save(state)
    {
        eprintln!("virtual-pico: {e}");
        return ExitCode::FAILURE;
    }
    let fixture = match PicoFixture::start_saved(state) {
        Ok(fixture) => fixture,
        Err(e) => {
            eprintln!("virtual-pico: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some((program, args)) = command.split_first() else {
        return ExitCode::SUCCESS;
    };
    // The fixture has set PCSCLITE_CSOCK_NAME and OPENSC_CONF for this process: the command
    // inherits them.
    let status = std::process::Command::new(program).args(args).status();
    drop(fixture);
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("virtual-pico: {program} exited ({status})");
            ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8)
        }
        Err(e) => {
            eprintln!("virtual-pico: cannot run {program}: {e}");
            ExitCode::FAILURE
        }
    }
}
