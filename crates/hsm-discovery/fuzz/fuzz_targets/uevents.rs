//! Arbitrary bytes as a kernel uevent payload: see `hsm_discovery::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    hsm_discovery::fuzzing::uevent(bytes);
});
