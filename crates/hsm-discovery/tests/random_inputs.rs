//! The fuzz targets' checks on a fixed seed of mangled inputs, in the normal suite (the
//! coverage-guided fuzzer runs with `cargo xtask fuzz discovery`): real sysfs attributes and
//! kernel uevents, truncated, bit-flipped and spliced, never panic, and what parses keeps its
//! invariants into a report.

use hsm_discovery::fuzzing;
use hsm_discovery::sysfs::{ATTRIBUTES, DirSysfs, SysfsSource};
use hsm_discovery::testing::fixture_sysfs;
use hsm_discovery::uevent::payload;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The fixture's devices as fuzz inputs: attribute files joined by NUL in [`ATTRIBUTES`]
/// order.
fn sysfs_seeds() -> Vec<Vec<u8>> {
    DirSysfs::new(fixture_sysfs())
        .scan()
        .unwrap()
        .into_iter()
        .map(|raw| {
            ATTRIBUTES
                .iter()
                .map(|name| raw.attributes.get(*name).cloned().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(&0u8)
        })
        .collect()
}

fn uevent_seeds() -> Vec<Vec<u8>> {
    let fields = [
        ("SUBSYSTEM", "usb"),
        ("DEVTYPE", "usb_device"),
        ("DEVNAME", "bus/usb/001/015"),
        ("PRODUCT", "2e8a/10fd/100"),
        ("SEQNUM", "5120"),
    ];
    ["add", "remove", "bind", "unbind", "change"]
        .iter()
        .map(|action| payload(action, "/devices/pci0000:00/usb1/1-1", &fields))
        .collect()
}

fn mangle(rng: &mut StdRng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    match rng.random_range(0..4) {
        0 => bytes.truncate(rng.random_range(0..=bytes.len())),
        1 => {
            for _ in 0..rng.random_range(1..4) {
                if !bytes.is_empty() {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << rng.random_range(0..8);
                }
            }
        }
        2 => {
            let cut = rng.random_range(0..=bytes.len());
            let from = rng.random_range(0..=other.len());
            bytes.truncate(cut);
            bytes.extend_from_slice(&other[from..]);
        }
        _ => {
            bytes = (0..rng.random_range(0..256))
                .map(|_| rng.random())
                .collect()
        }
    }
    bytes
}

#[test]
fn mangled_sysfs_attributes_never_panic() {
    let seeds = sysfs_seeds();
    assert_eq!(seeds.len(), 13, "devices and interfaces of the fixture");
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for seed in &seeds {
        fuzzing::sysfs_attributes(seed);
    }
    for _ in 0..5000 {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let other = &seeds[rng.random_range(0..seeds.len())];
        fuzzing::sysfs_attributes(&mangle(&mut rng, seed, other));
    }
}

#[test]
fn mangled_uevents_never_panic() {
    let seeds = uevent_seeds();
    let mut rng = StdRng::seed_from_u64(0xe7e7);
    let mut parsed = 0;
    for seed in &seeds {
        assert!(hsm_discovery::uevent::parse(seed).is_ok());
        fuzzing::uevent(seed);
    }
    for _ in 0..5000 {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let other = &seeds[rng.random_range(0..seeds.len())];
        let bytes = mangle(&mut rng, seed, other);
        if matches!(hsm_discovery::uevent::parse(&bytes), Ok(Some(_))) {
            parsed += 1;
        }
        fuzzing::uevent(&bytes);
    }
    assert!(
        parsed > 100,
        "the mangling kept some events valid: {parsed}"
    );
}
