//! Arbitrary bytes as a USB device's sysfs attributes: see `hsm_discovery::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    hsm_discovery::fuzzing::sysfs_attributes(bytes);
});
