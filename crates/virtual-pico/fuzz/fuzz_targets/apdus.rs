//! Arbitrary bytes as a starting card and a run of command APDUs: see
//! `virtual_pico::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    virtual_pico::fuzzing::apdus(bytes);
});
