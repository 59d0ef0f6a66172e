//! Arbitrary bytes as the agent's requests: see `hsm_agent::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    hsm_agent::fuzzing::requests(bytes);
});
