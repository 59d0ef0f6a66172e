//! The fuzz target's checks on a fixed seed of random APDU runs, in the normal suite (the
//! coverage-guided fuzzer itself runs with `cargo xtask fuzz pico`). The generator builds
//! commands the card knows, with plausible and implausible parameters, so the runs reach
//! deep into the card instead of stopping at the first status word.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use virtual_pico::card::AID;
use virtual_pico::fuzzing::{self, SO_PIN, Start, USER_PIN};

fn bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.random_range(0..=max);
    (0..len).map(|_| rng.random()).collect()
}

fn fid(rng: &mut StdRng) -> [u8; 2] {
    let prefix = [0xCD, 0xCC, 0xC9, 0x2F, 0xCE, 0x00][rng.random_range(0..6)];
    [prefix, rng.random_range(0..4)]
}

fn pin(rng: &mut StdRng, right: &[u8]) -> Vec<u8> {
    if rng.random_bool(0.5) {
        right.to_vec()
    } else {
        bytes(rng, 16)
    }
}

fn short(header: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut apdu = header.to_vec();
    if !data.is_empty() {
        apdu.push(data.len() as u8);
        apdu.extend(data);
    }
    apdu
}

/// An extended-length APDU with Le (data may exceed 255 bytes).
fn extended(header: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut apdu = header.to_vec();
    apdu.push(0);
    apdu.extend((data.len() as u16).to_be_bytes());
    apdu.extend(data);
    apdu.extend([0, 0]);
    apdu
}

fn command(rng: &mut StdRng) -> Vec<u8> {
    let [hi, lo] = fid(rng);
    let offset = [0u8, 0, 0, 1, 0x7F, 0xFF][rng.random_range(0..3) * 2..][..2].to_vec();
    match rng.random_range(0..12) {
        0 => short([0x00, 0xA4, 0x04, 0x00], &AID),
        1 => short([0x00, 0xA4, 0x00, 0x00], &[hi, lo]),
        2 => short([0x00, 0x20, 0x00, 0x81], &pin(rng, USER_PIN)),
        3 => short([0x00, 0x20, 0x00, 0x88], &pin(rng, SO_PIN)),
        4 => {
            let mut data = vec![0x54, 0x02];
            data.extend(&offset);
            data.push(0x53);
            let value = bytes(rng, 600);
            if value.len() < 0x80 {
                data.push(value.len() as u8);
            } else {
                data.extend([0x82, (value.len() >> 8) as u8, value.len() as u8]);
            }
            data.extend(value);
            extended([0x00, 0xD7, hi, lo], &data)
        }
        5 => {
            let mut data = vec![0x54, 0x02];
            data.extend(&offset);
            extended([0x00, 0xB1, hi, lo], &data)
        }
        6 => short([0x00, 0xE4, 0x02, 0x00], &[hi, lo]),
        7 => vec![0x80, 0x58, 0x00, 0x00, 0x00, 0x00, 0x00],
        8 => {
            let mut data = pin(rng, USER_PIN);
            data.extend(bytes(rng, 8));
            short([0x00, 0x24, 0x00, 0x81], &data)
        }
        9 => {
            let mut data = pin(rng, SO_PIN);
            data.extend(bytes(rng, 8));
            short([0x00, 0x2C, 0x00, 0x81], &data)
        }
        10 => vec![0x00, 0x84, 0x00, 0x00, rng.random()],
        _ => bytes(rng, 40),
    }
}

#[test]
fn random_apdu_runs_keep_the_cards_promises() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut answered_ok = 0;
    for _ in 0..400 {
        let mut card = match rng.random_range(0..3) {
            0 => Start::Blank,
            1 => Start::Initialised,
            _ => Start::LoggedIn,
        }
        .card();
        for _ in 0..rng.random_range(1..40) {
            let mut apdu = command(&mut rng);
            // Mangled now and then: truncated or bit-flipped.
            match rng.random_range(0..8) {
                0 => apdu.truncate(rng.random_range(0..=apdu.len())),
                1 if !apdu.is_empty() => {
                    let i = rng.random_range(0..apdu.len());
                    apdu[i] ^= 1 << rng.random_range(0..8);
                }
                _ => {}
            }
            let before = card.to_bytes();
            fuzzing::command(&mut card, &apdu);
            if card.to_bytes() != before {
                answered_ok += 1;
            }
        }
    }
    assert!(
        answered_ok > 500,
        "the generator must change the card often ({answered_ok})"
    );
}

#[test]
fn raw_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(0xb17e5);
    for _ in 0..2000 {
        fuzzing::apdus(&bytes(&mut rng, 300));
    }
}
