//! The fuzz target's checks, on a fixed seed of random requests, in the normal suite (the
//! coverage-guided fuzzer itself runs with `cargo xtask fuzz agent`).

use hsm_proto::v1::{SecretData, SecretMetadata, WriteSecretRequest};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PATH_CHARS: &[u8] = b"abcz09-._/A_ ";
const KEY_CHARS: &[u8] = b"abz09-._/";

fn text(rng: &mut StdRng, alphabet: &[u8], max: usize) -> String {
    let len = rng.random_range(0..=max);
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

#[test]
fn random_requests_never_panic_and_round_trip() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut accepted = 0;
    for _ in 0..3000 {
        let keys = rng.random_range(0..4);
        let request = WriteSecretRequest {
            path: text(&mut rng, PATH_CHARS, 12),
            secret_data: Some(SecretData {
                data: (0..keys)
                    .map(|_| {
                        let len = rng.random_range(0..64);
                        let value: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                        (text(&mut rng, KEY_CHARS, 8), value)
                    })
                    .collect(),
            }),
            metadata: rng.random_bool(0.5).then(|| SecretMetadata {
                description: text(&mut rng, PATH_CHARS, 20),
                ..Default::default()
            }),
        };
        let bytes = request.encode_to_vec();
        if hsm_agent::validate::write_path(&request.path).is_ok() {
            accepted += 1;
        }
        hsm_agent::fuzzing::requests(&bytes);
        // And mangled: truncated and bit-flipped.
        let cut = rng.random_range(0..=bytes.len());
        hsm_agent::fuzzing::requests(&bytes[..cut]);
        let mut flipped = bytes.clone();
        if !flipped.is_empty() {
            let i = rng.random_range(0..flipped.len());
            flipped[i] ^= 1 << rng.random_range(0..8);
        }
        hsm_agent::fuzzing::requests(&flipped);
    }
    assert!(
        accepted > 100,
        "the generator must reach the store often ({accepted})"
    );
}
