//! A virtual SmartCard-HSM (Pico HSM), so that OpenSC's real PKCS#11 path can run in tests.
//!
//! This crate is being built in steps. Present: the card operating system ([`card::Card`]):
//! command APDUs in ([`apdu`]), responses and status words out, with the file system, PINs
//! and retry counters, INITIALIZE DEVICE and the commands OpenSC's `sc-hsm` driver sends for
//! data objects, as measured against OpenSC 0.23. To come: the vpcd transport, removal and
//! latency controls, the pcscd fixture and the tests through `opensc-pkcs11.so`.

pub mod apdu;
pub mod card;
pub mod fixture;
pub mod saved;
pub mod tlv;
pub mod vpcd;
