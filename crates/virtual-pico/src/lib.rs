//! A virtual SmartCard-HSM (Pico HSM), so that OpenSC's real PKCS#11 path runs in tests.
//!
//! * [`card::Card`]: the card operating system. Command APDUs in ([`apdu`]), responses and
//!   status words out: the file system, PINs and retry counters, INITIALIZE DEVICE and the
//!   commands OpenSC's `sc-hsm` driver sends for data objects, as measured against OpenSC
//!   0.23. Its state can be saved to a file ([`saved`]) and loaded again.
//! * [`vpcd::VirtualCard`]: the card plugged into pcscd's vpcd reader, with the test
//!   controls: remove and insert, latency per APDU, an APDU counter and a log without data
//!   bytes, a drop-out after N APDUs, and saving after every change.
//! * [`fixture::PicoFixture`]: a private pcscd with the reader and an initialised card,
//!   for tests through `opensc-pkcs11.so`.
//! * [`fuzzing`]: the card's promises as the fuzz target and the randomized test check
//!   them.

pub mod apdu;
pub mod card;
pub mod fixture;
pub mod fuzzing;
pub mod saved;
pub mod tlv;
pub mod vpcd;
