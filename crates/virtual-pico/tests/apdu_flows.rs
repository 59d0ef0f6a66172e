//! The card answers the APDU flows measured between OpenSC 0.23 and a SmartCard-HSM: bind,
//! INITIALIZE as `sc-hsm-tool` sends it, login and PIN counters, unblock, change PIN, and
//! the create / read / delete of a private data object.

use virtual_pico::card::{AID, Card};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Sends `apdu` and returns (data, SW).
fn send(card: &mut Card, apdu: &[u8]) -> (Vec<u8>, u16) {
    let mut response = card.process(apdu);
    let sw = u16::from_be_bytes([response[response.len() - 2], response[response.len() - 1]]);
    response.truncate(response.len() - 2);
    (response, sw)
}

fn select_applet(card: &mut Card) -> (Vec<u8>, u16) {
    let mut apdu = hex("00 A4 04 00 0B");
    apdu.extend(AID);
    apdu.push(0x00);
    send(card, &apdu)
}

/// INITIALIZE DEVICE as `sc-hsm-tool --initialize --so-pin 3537363231383830 --pin 648219`.
const INITIALIZE: &str =
    "80 50 00 00 19 80 02 00 01 81 06 363438323139 82 08 3537363231383830 91 01 03";
const USER_PIN: &str = "363438323139";
const SO_PIN: &str = "3537363231383830";

fn initialized() -> Card {
    let mut card = Card::new("DEEMU13092");
    select_applet(&mut card);
    assert_eq!(send(&mut card, &hex(INITIALIZE)).1, 0x9000);
    card
}

fn login(card: &mut Card) {
    assert_eq!(
        send(card, &hex(&format!("00 20 00 81 06 {USER_PIN}"))).1,
        0x9000
    );
}

#[test]
fn bind_as_opensc_does() {
    let mut card = Card::new("DEEMU13092");
    // Foreign AIDs and path selects get errors.
    assert_eq!(
        send(&mut card, &hex("00 A4 04 00 07 627601FF000000 00")).1,
        0x6A82
    );
    let (fcp, sw) = select_applet(&mut card);
    assert_eq!(sw, 0x9000);
    let mut expected = hex("62 17 82 01 38 84 0B");
    expected.extend(AID);
    expected.extend(hex("85 05 00 01 FF 04 00"));
    assert_eq!(fcp, expected);
    assert_ne!(send(&mut card, &hex("00 A4 08 00 02 2F00 00")).1, 0x9000);
    // Device certificate: select, read, read at end of file (empty, 9000).
    let (fcp, sw) = send(&mut card, &hex("00 A4 00 00 02 2F02 00"));
    assert_eq!(sw, 0x9000);
    assert_eq!(&fcp[..4], &hex("62 0B 80 02"));
    let size = u16::from_be_bytes([fcp[4], fcp[5]]) as usize;
    let (cert, sw) = send(&mut card, &hex("00 B1 0000 04 54 02 0000 00"));
    assert_eq!((cert.len(), sw), (size, 0x9000));
    assert_eq!(&cert[..2], &[0x7F, 0x21]);
    let holder = b"DEEMU1309200001";
    assert!(cert.windows(holder.len()).any(|w| w == holder));
    let end = format!("00 B1 0000 04 54 02 {size:04X} 00");
    assert_eq!(send(&mut card, &hex(&end)), (vec![], 0x9000));
    assert_eq!(send(&mut card, &hex("00 A4 00 00 02 2F03 00")).1, 0x6A82);
    // No PIN pad, no biometrics.
    assert_eq!(send(&mut card, &hex("00 20 00 85")).1, 0x6A88);
    assert_eq!(send(&mut card, &hex("00 20 00 86")).1, 0x6A88);
    // Not initialised yet.
    assert_eq!(send(&mut card, &hex("00 20 00 81")).1, 0x6A88);
    assert_eq!(
        send(&mut card, &hex("80 58 00 00 00 00 00")),
        (vec![], 0x9000)
    );
    // A reader UID request must not succeed.
    assert_eq!(send(&mut card, &hex("FF CA 00 00 00")).1, 0x6E00);
}

#[test]
fn wrong_pins_count_down_and_block() {
    let mut card = initialized();
    assert_eq!(send(&mut card, &hex("00 20 00 81")).1, 0x63C3);
    assert_eq!(
        send(&mut card, &hex("00 20 00 81 06 313131313131")).1,
        0x63C2
    );
    assert_eq!(
        send(&mut card, &hex("00 20 00 81 06 313131313131")).1,
        0x63C1
    );
    // A right PIN resets the counter.
    login(&mut card);
    assert_eq!(card.user_tries_left(), Some(3));
    for expected in [0x63C2, 0x63C1, 0x6983] {
        assert_eq!(
            send(&mut card, &hex("00 20 00 81 06 313131313131")).1,
            expected
        );
    }
    // Blocked: even the right PIN is refused.
    assert_eq!(
        send(&mut card, &hex(&format!("00 20 00 81 06 {USER_PIN}"))).1,
        0x6983
    );
    assert_eq!(send(&mut card, &hex("00 20 00 81")).1, 0x6983);
    // SO status shows 15 tries.
    assert_eq!(send(&mut card, &hex("00 20 00 88")).1, 0x63CF);
    // Unblock with the SO PIN and a new user PIN (RESET RETRY COUNTER).
    let rrc = format!("00 2C 00 81 0E {SO_PIN} 313233343536");
    assert_eq!(send(&mut card, &hex(&rrc)).1, 0x9000);
    assert_eq!(
        send(&mut card, &hex("00 20 00 81 06 313233343536")).1,
        0x9000
    );
    // A wrong SO PIN spends an SO try.
    let bad = "00 2C 00 81 0E 0000000000000000 313233343536";
    assert_eq!(send(&mut card, &hex(bad)).1, 0x63CE);
}

#[test]
fn change_pin_and_logout_by_selecting_the_applet() {
    let mut card = initialized();
    let change = format!("00 24 00 81 0C {USER_PIN} 393837363534");
    assert_eq!(send(&mut card, &hex(&change)).1, 0x9000);
    assert_eq!(
        send(&mut card, &hex(&format!("00 20 00 81 06 {USER_PIN}"))).1,
        0x63C2
    );
    assert_eq!(
        send(&mut card, &hex("00 20 00 81 06 393837363534")).1,
        0x9000
    );
    assert_eq!(send(&mut card, &hex("00 20 00 81")).1, 0x9000);
    select_applet(&mut card);
    assert_eq!(
        send(&mut card, &hex("00 20 00 81")).1,
        0x63C3,
        "SELECT logs out"
    );
}

#[test]
fn a_private_data_object_is_created_read_and_deleted() {
    let mut card = initialized();
    // Without login nothing is written.
    assert_eq!(send(&mut card, &hex("00 D7 CD01 02 53 00")).1, 0x6982);
    login(&mut card);
    // Create the content file, then write it in chunks through the current EF.
    assert_eq!(send(&mut card, &hex("00 A4 00 00 02 CD01 00")).1, 0x6A82);
    assert_eq!(send(&mut card, &hex("00 D7 CD01 02 53 00")).1, 0x9000);
    let value: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    for (offset, chunk) in [(0usize, &value[..200]), (200, &value[200..])] {
        let mut body = hex(&format!("54 02 {offset:04X} 53"));
        if chunk.len() > 127 {
            body.extend([0x81, chunk.len() as u8]);
        } else {
            body.push(chunk.len() as u8);
        }
        body.extend(chunk);
        let mut apdu = hex("00 D7 0000");
        if body.len() > 255 {
            apdu.extend([0x00, (body.len() >> 8) as u8, body.len() as u8]);
        } else {
            apdu.push(body.len() as u8);
        }
        apdu.extend(body);
        assert_eq!(send(&mut card, &apdu).1, 0x9000, "chunk at {offset}");
    }
    assert_eq!(send(&mut card, &hex("00 D7 C901 02 53 00")).1, 0x9000);
    assert_eq!(
        send(&mut card, &hex("80 58 00 00 00 00 00")),
        (hex("C901 CD01"), 0x9000)
    );
    // Read back in 256-byte chunks.
    let (fcp, _) = send(&mut card, &hex("00 A4 00 00 02 CD01 00"));
    assert_eq!(&fcp[4..6], &[0x01, 0x2C]);
    let (first, _) = send(&mut card, &hex("00 B1 CD01 04 54 02 0000 00"));
    let (rest, _) = send(&mut card, &hex("00 B1 CD01 04 54 02 0100 00"));
    assert_eq!([first, rest].concat(), value);
    // After a logout the content is refused; the description is not secret.
    select_applet(&mut card);
    assert_eq!(
        send(&mut card, &hex("00 B1 CD01 04 54 02 0000 00")).1,
        0x6982
    );
    assert_eq!(
        send(&mut card, &hex("00 B1 C901 04 54 02 0000 00")).1,
        0x9000
    );
    assert_eq!(send(&mut card, &hex("00 E4 02 00 02 CD01")).1, 0x6982);
    login(&mut card);
    assert_eq!(send(&mut card, &hex("00 E4 02 00 02 CD01")).1, 0x9000);
    assert_eq!(send(&mut card, &hex("00 E4 02 00 02 C901")).1, 0x9000);
    assert_eq!(send(&mut card, &hex("00 E4 02 00 02 C901")).1, 0x6A82);
    assert_eq!(
        send(&mut card, &hex("80 58 00 00 00 00 00")),
        (vec![], 0x9000)
    );
    // The device certificate can be neither written nor deleted.
    assert_eq!(send(&mut card, &hex("00 E4 02 00 02 2F02")).1, 0x6986);
}

#[test]
fn reinitialising_needs_the_so_pin_and_erases_everything_but_the_certificate() {
    let mut card = initialized();
    login(&mut card);
    assert_eq!(send(&mut card, &hex("00 D7 CD01 02 53 00")).1, 0x9000);
    let wrong = "80 50 00 00 19 80 02 00 01 81 06 363438323139 82 08 0000000000000000 91 01 03";
    assert_eq!(send(&mut card, &hex(wrong)).1, 0x6985);
    assert_eq!(
        send(&mut card, &hex("00 20 00 88")).1,
        0x63CE,
        "an SO try was spent"
    );
    assert_eq!(send(&mut card, &hex(INITIALIZE)).1, 0x9000);
    assert_eq!(card.file_ids(), vec![0x2F02]);
}

#[test]
fn malformed_input_gets_a_status_word_never_a_panic() {
    let mut card = initialized();
    let mut state = 0x2545F4914F6CDD1Du64;
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 40) as usize;
        let mut apdu: Vec<u8> = (0..len)
            .map(|i| (state.rotate_left(i as u32 * 7) & 0xFF) as u8)
            .collect();
        // Steer a share of the inputs into the card's own instructions.
        if len >= 2 && state.is_multiple_of(3) {
            let ins = [0xA4, 0x20, 0x24, 0x2C, 0xB1, 0xD7, 0xE4, 0x84, 0x50, 0x58];
            apdu[0] = if state.is_multiple_of(2) { 0x00 } else { 0x80 };
            apdu[1] = ins[(state % ins.len() as u64) as usize];
        }
        let response = card.process(&apdu);
        assert!(response.len() >= 2);
    }
}
