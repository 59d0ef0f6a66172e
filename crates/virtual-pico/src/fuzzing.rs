//! The card's command handling as the fuzz target (`cargo xtask fuzz pico`) and the
//! randomized test drive it. Any bytes become a starting card and a run of command APDUs;
//! for every one the card must answer without panicking, and what it answers must hold:
//!
//! * every response ends in a status word, and only a success (9000) carries data;
//! * a successful UPDATE BINARY reads back exactly, unless the file is one nobody may read;
//! * the card's saved form round-trips after every command (a saved card is the same card);
//! * arbitrary bytes as a saved card are refused with an error, never a panic.

use crate::apdu::Apdu;
use crate::card::{AID, Card};
use crate::tlv;

/// The user PIN of an initialised starting card.
pub const USER_PIN: &[u8] = b"648219";
/// The SO PIN of an initialised starting card.
pub const SO_PIN: &[u8] = b"57621880";

/// The state a run starts from, chosen by its first byte: a blank card reaches INITIALIZE,
/// a logged-in one reaches the file commands straight away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// As from the factory: no PINs, only the device certificate.
    Blank,
    /// Initialised, applet selected, nobody logged in.
    Initialised,
    /// Initialised and the user PIN verified.
    LoggedIn,
}

impl Start {
    fn from_byte(byte: u8) -> Start {
        match byte % 3 {
            0 => Start::Blank,
            1 => Start::Initialised,
            _ => Start::LoggedIn,
        }
    }

    /// The card in this state.
    pub fn card(self) -> Card {
        let mut card = Card::new("DEEMU13092");
        if self == Start::Blank {
            return card;
        }
        succeed(&mut card, &select_applet());
        let mut initialise = vec![0x80, 0x50, 0x00, 0x00, 0x00, 0x80, 0x02, 0x00, 0x01];
        initialise.extend([0x81, USER_PIN.len() as u8]);
        initialise.extend(USER_PIN);
        initialise.extend([0x82, SO_PIN.len() as u8]);
        initialise.extend(SO_PIN);
        initialise.extend([0x91, 0x01, 0x03]);
        initialise[4] = (initialise.len() - 5) as u8;
        succeed(&mut card, &initialise);
        if self == Start::LoggedIn {
            let mut verify = vec![0x00, 0x20, 0x00, 0x81, USER_PIN.len() as u8];
            verify.extend(USER_PIN);
            succeed(&mut card, &verify);
        }
        card
    }
}

/// SELECT of the SmartCard-HSM applet.
fn select_applet() -> Vec<u8> {
    let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, AID.len() as u8];
    apdu.extend(AID);
    apdu
}

fn succeed(card: &mut Card, apdu: &[u8]) {
    let response = card.process(apdu);
    assert_eq!(status(&response), 0x9000, "setting up the starting card");
}

fn status(response: &[u8]) -> u16 {
    match response {
        [.., sw1, sw2] => u16::from_be_bytes([*sw1, *sw2]),
        _ => panic!("a response without a status word: {} bytes", response.len()),
    }
}

/// Splits `bytes` into length-prefixed APDUs (one length byte each; a short tail is an APDU
/// of what is left).
pub fn split(bytes: &[u8]) -> Vec<&[u8]> {
    let mut apdus = Vec::new();
    let mut rest = bytes;
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        apdus.push(&tail[..len]);
        rest = &tail[len..];
    }
    apdus
}

/// Runs `bytes` against the card: the first byte picks the [`Start`], the rest are
/// length-prefixed APDUs. The whole input is also offered as a saved card.
pub fn apdus(bytes: &[u8]) {
    let _ = Card::from_bytes(bytes);
    let Some((&start, rest)) = bytes.split_first() else {
        return;
    };
    let mut card = Start::from_byte(start).card();
    for apdu in split(rest) {
        command(&mut card, apdu);
    }
}

/// Sends one APDU and checks what the card answered and kept.
pub fn command(card: &mut Card, apdu: &[u8]) {
    let response = card.process(apdu);
    let sw = status(&response);
    assert!(
        sw == 0x9000 || response.len() == 2,
        "SW {sw:04X} came with {} bytes of data",
        response.len() - 2
    );
    if sw == 0x9000 {
        reads_back(card, apdu);
    }
    let saved = card.to_bytes();
    let restored = Card::from_bytes(&saved).expect("the card's own saved form loads");
    assert!(
        restored.to_bytes() == saved,
        "saving and loading changed the card"
    );
}

/// After a successful UPDATE BINARY, a READ BINARY of the same file (the card's current
/// file) at the same offset gives back the bytes written.
fn reads_back(card: &mut Card, apdu: &[u8]) {
    let Ok(update) = Apdu::parse(apdu) else {
        return;
    };
    if (update.cla, update.ins) != (0x00, 0xD7) {
        return;
    }
    let tags = tlv::parse(&update.data).expect("a successful update parsed");
    let offset = tags
        .iter()
        .find(|(tag, _)| *tag == 0x54)
        .map_or([0, 0], |(_, v)| [v[0], v[1]]);
    let written = tags
        .iter()
        .find(|(tag, _)| *tag == 0x53)
        .map(|(_, v)| v.to_vec())
        .expect("a successful update had data");
    // Extended READ BINARY of the current file, Le 65536.
    let read = [
        0x00, 0xB1, 0x00, 0x00, 0x00, 0x00, 0x04, 0x54, 0x02, offset[0], offset[1], 0x00, 0x00,
    ];
    let response = card.process(&read);
    match status(&response) {
        // The key files (CCxx) are never readable.
        0x6982 => {}
        0x9000 => assert!(
            response[..response.len() - 2].starts_with(&written),
            "an update of {} bytes did not read back",
            written.len()
        ),
        sw => panic!("reading back an update: SW {sw:04X}"),
    }
}
