//! `virtual-pico --port PORT [--serial SERIAL] [--state FILE]`: plugs a virtual SmartCard-HSM
//! into the vpcd reader on 127.0.0.1:PORT and serves it until killed. With `--state`, the card
//! is read from FILE (a blank card if FILE does not exist yet) and saved there after every
//! command that changes it, so stopping and starting the emulator is unplugging and plugging
//! the same card.

use std::path::PathBuf;

const USAGE: &str = "usage: virtual-pico --port PORT [--serial SERIAL] [--state FILE]";

fn main() {
    let mut port = None;
    let mut serial = "DEVPC00001".to_owned();
    let mut state: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--port", Some(p)) => port = p.parse::<u16>().ok(),
            ("--serial", Some(s)) => serial = s,
            ("--state", Some(f)) => state = Some(f.into()),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let Some(port) = port else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let _card = match &state {
        Some(path) => match virtual_pico::vpcd::VirtualCard::start_saved(port, path, &serial) {
            Ok(card) => card,
            Err(e) => {
                eprintln!("virtual-pico: {e}");
                std::process::exit(1);
            }
        },
        None => {
            virtual_pico::vpcd::VirtualCard::start(port, virtual_pico::card::Card::new(&serial))
        }
    };
    println!("virtual-pico: card {serial} plugged into the vpcd reader on 127.0.0.1:{port}");
    loop {
        std::thread::park();
    }
}
