//! `ccid-info-plist < Info.plist > patched`: the CCID driver's Info.plist with the Pico HSM
//! added, as the images carry it. The Nix images run this, so both image builds patch the
//! file with the same code.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("ccid-info-plist: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    match delivery::plist::add_reader(&text, delivery::plist::PICO_HSM) {
        Ok(patched) => match std::io::stdout().write_all(patched.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ccid-info-plist: cannot write stdout: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("ccid-info-plist: {e}");
            ExitCode::FAILURE
        }
    }
}
