//! `virtual-pico --port PORT [--serial SERIAL] [--state FILE]`: plugs a virtual SmartCard-HSM
//! into the vpcd reader on 127.0.0.1:PORT and serves it until killed. With `--state`, the card
//! is read from FILE (a blank card if FILE does not exist yet) and saved there after every
//! command that changes it, so stopping and starting the emulator is unplugging and plugging
//! the same card.

use clap::Parser;
use std::path::PathBuf;
use virtual_pico::card::Card;
use virtual_pico::vpcd::VirtualCard;

/// A virtual SmartCard-HSM (Pico HSM) in pcscd's vpcd reader.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The vpcd reader's port on 127.0.0.1 (its reader.conf CHANNELID).
    #[arg(long)]
    port: u16,
    /// The card's serial number.
    #[arg(long, default_value = "DEVPC00001")]
    serial: String,
    /// Keep the card in this file: loaded at start, saved after every change.
    #[arg(long)]
    state: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let _card = match &args.state {
        Some(path) => match VirtualCard::start_saved(args.port, path, &args.serial) {
            Ok(card) => card,
            Err(e) => {
                eprintln!("virtual-pico: {e}");
                std::process::exit(1);
            }
        },
        None => VirtualCard::start(args.port, Card::new(&args.serial)),
    };
    println!(
        "virtual-pico: card {} plugged into the vpcd reader on 127.0.0.1:{}",
        args.serial, args.port
    );
    loop {
        std::thread::park();
    }
}
