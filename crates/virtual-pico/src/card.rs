//! The SmartCard-HSM card operating system, as far as OpenSC's `sc-hsm` driver uses it for
//! PINs and data objects: a flat file system of 2-byte file ids under the applet, the user
//! PIN and SO PIN with retry counters, INITIALIZE DEVICE, and the odd-instruction READ and
//! UPDATE BINARY. Every input gets a status word; nothing panics.

use crate::apdu::{Apdu, sw};
use crate::saved::{SavedCard, SavedError, SavedPin};
use crate::tlv;
use std::collections::BTreeMap;
use std::path::Path;
use zeroize::Zeroizing;

/// The applet id OpenSC selects.
pub const AID: [u8; 11] = [
    0xE8, 0x2B, 0x06, 0x01, 0x04, 0x01, 0x81, 0xC3, 0x1F, 0x02, 0x01,
];
/// SmartCard-HSM "standard" ATR (T=1), which OpenSC's ATR table maps to `sc-hsm`.
pub const ATR: [u8; 24] = [
    0x3B, 0xFE, 0x18, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x45, 0x80, 0x31, 0x81, 0x54, 0x48, 0x53, 0x4D,
    0x31, 0x73, 0x80, 0x21, 0x40, 0x81, 0x07, 0xFA,
];
/// EF.C_DevAut: the device certificate, read at every bind.
pub const DEVICE_CERT: u16 = 0x2F02;
/// EF.TokenInfo.
pub const TOKEN_INFO: u16 = 0x2F03;
/// Tries of the SO PIN.
pub const SO_TRIES: u8 = 15;
/// Option bit: the user PIN may be reset with the SO PIN.
pub const OPTION_RESET_RETRY_COUNTER: u16 = 0x0001;

/// A PIN and its counter.
#[derive(Clone)]
struct Pin {
    value: Zeroizing<Vec<u8>>,
    max: u8,
    left: u8,
}

/// Outcome of presenting a PIN.
enum Check {
    Ok,
    Failed(u16),
}

impl Pin {
    fn new(value: &[u8], max: u8) -> Pin {
        Pin {
            value: Zeroizing::new(value.to_vec()),
            max,
            left: max,
        }
    }

    /// Compares `offered`, moving the counter as a card does: reset on success, down on
    /// failure, blocked at zero (SW 6983, as Pico HSM answers).
    fn check(&mut self, offered: &[u8]) -> Check {
        if self.left == 0 {
            return Check::Failed(sw::BLOCKED);
        }
        if offered == self.value.as_slice() {
            self.left = self.max;
            Check::Ok
        } else {
            self.left -= 1;
            Check::Failed(if self.left == 0 {
                sw::BLOCKED
            } else {
                sw::tries_left(self.left)
            })
        }
    }

    fn status(&self) -> u16 {
        if self.left == 0 {
            sw::BLOCKED
        } else {
            sw::tries_left(self.left)
        }
    }
}

/// The card: what persists (files, PINs, options) and what a reset clears (selection,
/// PIN-verified state, current file).
#[derive(Clone)]
pub struct Card {
    files: BTreeMap<u16, Vec<u8>>,
    user: Option<Pin>,
    so: Option<Pin>,
    options: u16,
    selected: bool,
    verified: bool,
    current: Option<u16>,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Card")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("initialized", &self.user.is_some())
            .field("verified", &self.verified)
            .finish()
    }
}

impl Card {
    /// A blank (not initialised) card whose device certificate names `serial` (at least 3
    /// characters; OpenSC shows the certificate holder minus its last 5 characters).
    pub fn new(serial: &str) -> Card {
        let mut files = BTreeMap::new();
        files.insert(DEVICE_CERT, device_certificate(serial));
        Card {
            files,
            user: None,
            so: None,
            options: OPTION_RESET_RETRY_COUNTER,
            selected: false,
            verified: false,
            current: None,
        }
    }

    /// The card as saved bytes: files, PINs and counters, options (see [`crate::saved`]).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        self.saved().encode()
    }

    /// A card from [`Card::to_bytes`], as just powered on.
    pub fn from_bytes(bytes: &[u8]) -> Result<Card, SavedError> {
        Ok(Card::restored(SavedCard::decode(bytes)?))
    }

    /// Saves the card to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<(), SavedError> {
        self.saved().store(path)
    }

    /// The card saved at `path`, as just powered on.
    pub fn load(path: &Path) -> Result<Card, SavedError> {
        Ok(Card::restored(SavedCard::load(path)?))
    }

    fn saved(&self) -> SavedCard {
        let pin = |p: &Option<Pin>| {
            p.as_ref().map(|p| SavedPin {
                value: p.value.clone(),
                max: p.max,
                left: p.left,
            })
        };
        SavedCard {
            options: self.options,
            user: pin(&self.user),
            so: pin(&self.so),
            files: self.files.iter().map(|(k, v)| (*k, v.clone())).collect(),
        }
    }

    fn restored(saved: SavedCard) -> Card {
        let pin = |p: Option<SavedPin>| {
            p.map(|p| Pin {
                value: p.value,
                max: p.max,
                left: p.left,
            })
        };
        Card {
            files: saved.files.into_iter().collect(),
            user: pin(saved.user),
            so: pin(saved.so),
            options: saved.options,
            selected: false,
            verified: false,
            current: None,
        }
    }

    /// Power on, power off or reset: the volatile state goes.
    pub fn reset(&mut self) {
        self.selected = false;
        self.verified = false;
        self.current = None;
    }

    /// Whether INITIALIZE DEVICE has run.
    pub fn is_initialized(&self) -> bool {
        self.user.is_some()
    }

    /// Tries left for the user PIN (`None` before initialisation).
    pub fn user_tries_left(&self) -> Option<u8> {
        self.user.as_ref().map(|p| p.left)
    }

    /// The file ids on the card.
    pub fn file_ids(&self) -> Vec<u16> {
        self.files.keys().copied().collect()
    }

    /// Answers one command APDU: response data followed by SW1 SW2.
    pub fn process(&mut self, bytes: &[u8]) -> Vec<u8> {
        let (mut data, status) = match Apdu::parse(bytes) {
            Ok(apdu) => match self.dispatch(&apdu) {
                Ok(mut data) => {
                    if let Some(le) = apdu.le {
                        data.truncate(le);
                    }
                    (data, sw::OK)
                }
                Err(status) => (Vec::new(), status),
            },
            Err(status) => (Vec::new(), status),
        };
        data.extend_from_slice(&status.to_be_bytes());
        data
    }

    /// Applies `bytes` as a card losing power in the middle of it would: an UPDATE BINARY
    /// writes its data in order, so only the first half of it reaches the file (the
    /// SmartCard-HSM gives no atomicity within one UPDATE BINARY); every other command is
    /// all or nothing, and is not applied. Nothing is answered. Returns whether anything
    /// was written.
    pub fn process_torn(&mut self, bytes: &[u8]) -> bool {
        match Apdu::parse(bytes) {
            Ok(apdu) if (apdu.cla, apdu.ins) == (0x00, 0xD7) => {
                self.write_binary(&apdu, true).is_ok()
            }
            _ => false,
        }
    }

    fn dispatch(&mut self, apdu: &Apdu) -> Result<Vec<u8>, u16> {
        match (apdu.cla, apdu.ins) {
            (0xFF, _) => Err(sw::CLA_NOT_SUPPORTED),
            (0x00, 0xA4) => self.select(apdu),
            (0x00, 0x20) => self.verify(apdu),
            (0x00, 0x24) => self.change_reference_data(apdu),
            (0x00, 0x2C) => self.reset_retry_counter(apdu),
            (0x80, 0x50) => self.initialize(apdu),
            (0x80, 0x58) => self.enumerate(),
            (0x00, 0xB1) => self.read_binary(apdu),
            (0x00, 0xD7) => self.update_binary(apdu),
            (0x00, 0xE4) => self.delete_file(apdu),
            (0x00, 0x84) => Ok(challenge(apdu.le.ok_or(sw::WRONG_LENGTH)?)),
            _ => Err(sw::INS_NOT_SUPPORTED),
        }
    }

    fn select(&mut self, apdu: &Apdu) -> Result<Vec<u8>, u16> {
        match (apdu.p1, apdu.p2) {
            (0x04, _) if apdu.data == AID => {
                // Selecting the applet logs out, as on the real card.
                self.selected = true;
                self.verified = false;
                self.current = None;
                let [hi, lo] = self.options.to_be_bytes();
                let mut fcp = tlv::encode(0x82, &[0x38]);
                fcp.extend(tlv::encode(0x84, &AID));
                fcp.extend(tlv::encode(0x85, &[hi, lo, 0xFF, 0x04, 0x00]));
                Ok(tlv::encode(0x62, &fcp))
            }
            (0x04, _) => Err(sw::FILE_NOT_FOUND),
            (0x00, 0x00) | (0x00, 0x04) | (0x00, 0x0C) if self.selected => {
                let fid = fid_of(&apdu.data).ok_or(sw::WRONG_DATA)?;
                let size = self.files.get(&fid).ok_or(sw::FILE_NOT_FOUND)?.len();
                self.current = Some(fid);
                if apdu.p2 == 0x0C {
                    return Ok(Vec::new());
                }
                let mut fcp = tlv::encode(0x80, &fcp_size(size));
                fcp.extend(tlv::encode(0x82, &[0x01]));
                fcp.extend(tlv::encode(0x83, &fid.to_be_bytes()));
                Ok(tlv::encode(0x62, &fcp))
            }
            (0x00, _) => Err(sw::FILE_NOT_FOUND),
            _ => Err(sw::WRONG_P1P2),
        }
    }

    fn verify(&mut self, apdu: &Apdu) -> Result<Vec<u8>, u16> {
        match apdu.p2 {
            0x81 => {
                let pin = self.user.as_mut().ok_or(sw::DATA_NOT_FOUND)?;
                if apdu.data.is_empty() {
                    if pin.left > 0 && self.verified {
                        return Ok(Vec::new());
                    }
                    return Err(pin.status());
                }
                match pin.check(&apdu.data) {
                    Check::Ok => {
                        self.verified = true;
                        Ok(Vec::new())
                    }
                    Check::Failed(status) => {
                        self.verified = false;
                        Err(status)
                    }
                }
            }
            0x88 => {
                let pin = self.so.as_mut().ok_or(sw::DATA_NOT_FOUND)?;
                if apdu.data.is_empty() {
                    return Err(pin.status());
                }
                match pin.check(&apdu.data) {
                    Check::Ok => Ok(Vec::new()),
                    Check::Failed(status) => Err(status),
                }
            }
            // No PIN pad and no biometrics: anything else would make OpenSC assume a
            // protected authentication path.
            _ => Err(sw::DATA_NOT_FOUND),
        }
    }

    fn change_reference_data(&mut self, apdu: &Apdu) -> Result<Vec<u8>, u16> {
        match apdu.p2 {
            0x81 => {
                let pin = self.user.as_mut().ok_or(sw::DATA_NOT_FOUND)?;
                let split = pin.value.len();
                if apdu.data.len() <= split {
                    return Err(sw::WRONG_DATA);
                }
                let (old, new) = apdu.data.split_at(split);
                if !(6..=16).contains(&new.len()) {
                    return Err(sw::WRONG_DATA);
                }
                match pin.check(old) {
                    Check::Ok => {
                        *pin = Pin::new(new, pin.max);
                        Ok(Vec::new())
                    }
                    Check::Failed(status) => {
                        self.verified = false;
                        Err(status)
                    }
                }
            }
            0x88 => {
                let pin = self.so.as_mut().ok_or(sw::DATA_NOT_FOUND)?;
                if apdu.data.len() != 16 {
                    return Err(sw::WRONG_DATA);
                }
                let (old, new) = apdu.data.split_at(8);
                match pin.check(old) {
                    Check::Ok => {
                        *pin = Pin::new(new, SO_TRIES);
                        Ok(Vec::new())
                    }
                    Check::Failed(status) => Err(status),
                }
            }
            _ => Err(sw::WRONG_P1P2),
        }
    }

    fn reset_retry_counter(&mut self, apdu: &Apdu) -> Result<Vec<u8>, u16> {
        if apdu.p2 != 0x81 {
            return Err(sw::WRONG_P1P2);
        }
        if self.options & OPTION_RESET_RETRY_COUNTER == 0 {
            return Err(sw::NOT_ALLOWED);
        }
        let so = self.so.as_mut().ok_or(sw::DATA_NOT_FOUND)?;
        if apdu.data.len() < 8 {
            return Err(sw::WRONG_DATA);
        }
        let (offered, new) = apdu.data.split_at(8);
        if apdu.p1 == 0x00 && !(6..=16).contains(&new.len()) {
            return Err(sw::WRONG_DATA);
        }
        if let Check::Failed(status) = so.check(offered) {
            return Err(status);
        }
        let user = self.user.as_mut().ok_or(sw::DATA_NOT_FOUND)?;
        match apdu.p1 {
            0x00 => *user = Pin::new(new, user.max),
            0x01 => user.left = user.max,
            _ => return Err(sw::WRONG_P1P2),
        }
        Ok(Vec::new())
    }

    fn initialize(&mut self, apdu: &Apdu) -> Result<Vec<u8>, u16> {
        if apdu.data.is_empty() {
            // Free memory (4 bytes) and three bytes of device facts.
            return Ok(vec![0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00]);
        }
        let tags = tlv::parse(&apdu.data).ok_or(sw::WRONG_DATA)?;
        let tag = |t: u16| tags.iter().find(|(tag, _)| *tag == t).map(|(_, v)| *v);
        let user_pin = tag(0x81).ok_or(sw::WRONG_DATA)?;
        let so_pin = tag(0x82).ok_or(sw::WRONG_DATA)?;
        let retries = tag(0x91)
            .map(|v| v.first().copied().unwrap_or(3))
            .unwrap_or(3);
        let options = match tag(0x80) {
            Some([hi, lo]) => u16::from_be_bytes([*hi, *lo]),
            Some(_) => return Err(sw::WRONG_DATA),
            None => self.options,
        };
        if !(6..=16).contains(&user_pin.len()) || so_pin.len() != 8 || !(1..=15).contains(&retries)
        {
            return Err(sw::WRONG_DATA);
        }
        // Re-initialising needs the current SO PIN as the initialisation code.
        if let Some(so) = self.so.as_mut() {
            match so.check(so_pin) {
                Check::Ok => {}
                Check::Failed(status) if status == sw::BLOCKED => return Err(sw::BLOCKED),
                Check::Failed(_) => return Err(sw::CONDITIONS),
            }
        }
        self.files.retain(|fid, _| *fid == DEVICE_CERT);
        self.user = Some(Pin::new(user_pin, retries));
        self.so = Some(Pin::new(so_pin, SO_TRIES));
        self.options = options;
        self.verified = false;
        self.current = None;
        Ok(Vec::new())
    }

    fn enumerate(&self) -> Result<Vec<u8>, u16> {
        Ok(self
            .files
            .keys()
            .filter(|fid| **fid >= 0xC000)
            .flat_map(|fid| fid.to_be_bytes())
            .collect())
    }

    /// The file an odd-instruction command names in P1 P2 (0000: the current file).
    fn target(&self, apdu: &Apdu) -> Result<u16, u16> {
        match u16::from_be_bytes([apdu.p1, apdu.p2]) {
            0 => self.current.ok_or(sw::NOT_ALLOWED),
            fid => Ok(fid),
        }
    }

    fn read_binary(&mut self, apdu: &Apdu) -> Result<Vec<u8>, u16> {
        if !self.selected {
            return Err(sw::FILE_NOT_FOUND);
        }
        let fid = self.target(apdu)?;
        let offset = offset(&apdu.data)?;
        let [prefix, _] = fid.to_be_bytes();
        if prefix == 0xCC || (prefix == 0xCD && !self.verified) {
            return Err(sw::NOT_AUTHENTICATED);
        }
        let file = self.files.get(&fid).ok_or(sw::FILE_NOT_FOUND)?;
        self.current = Some(fid);
        if offset > file.len() {
            return Err(sw::WRONG_PARAMS);
        }
        let end = file.len().min(offset + apdu.le.unwrap_or(256));
        Ok(file[offset..end].to_vec())
    }

    fn update_binary(&mut self, apdu: &Apdu) -> Result<Vec<u8>, u16> {
        self.write_binary(apdu, false)
    }

    /// UPDATE BINARY; `torn`: only the first half of the command's data is written.
    fn write_binary(&mut self, apdu: &Apdu, torn: bool) -> Result<Vec<u8>, u16> {
        if !self.selected {
            return Err(sw::FILE_NOT_FOUND);
        }
        let fid = self.target(apdu)?;
        if fid == DEVICE_CERT {
            return Err(sw::NOT_ALLOWED);
        }
        if !self.verified {
            return Err(sw::NOT_AUTHENTICATED);
        }
        let tags = tlv::parse(&apdu.data).ok_or(sw::WRONG_DATA)?;
        let offset = match tags.iter().find(|(t, _)| *t == 0x54) {
            Some((_, [hi, lo])) => u16::from_be_bytes([*hi, *lo]) as usize,
            Some(_) => return Err(sw::WRONG_DATA),
            None => 0,
        };
        let data = tags
            .iter()
            .find(|(t, _)| *t == 0x53)
            .map(|(_, v)| *v)
            .ok_or(sw::WRONG_DATA)?;
        let data = if torn { &data[..data.len() / 2] } else { data };
        let file = self.files.entry(fid).or_default();
        if offset > file.len() {
            return Err(sw::WRONG_PARAMS);
        }
        let end = offset + data.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[offset..end].copy_from_slice(data);
        self.current = Some(fid);
        Ok(Vec::new())
    }

    fn delete_file(&mut self, apdu: &Apdu) -> Result<Vec<u8>, u16> {
        if (apdu.p1, apdu.p2) != (0x02, 0x00) {
            return Err(sw::WRONG_P1P2);
        }
        let fid = fid_of(&apdu.data).ok_or(sw::WRONG_DATA)?;
        if fid == DEVICE_CERT {
            return Err(sw::NOT_ALLOWED);
        }
        if !self.verified {
            return Err(sw::NOT_AUTHENTICATED);
        }
        self.files.remove(&fid).ok_or(sw::FILE_NOT_FOUND)?;
        if self.current == Some(fid) {
            self.current = None;
        }
        Ok(Vec::new())
    }
}

fn fid_of(data: &[u8]) -> Option<u16> {
    match data {
        [hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

/// The FCP's tag-80 file size. OpenSC reads it as a *signed* big-endian integer, so sizes from
/// 0x8000 take three bytes (a 64 KiB object is `01 00 00`); anything shorter would be read as
/// negative or zero and OpenSC would fall back to reading 1024 bytes.
fn fcp_size(size: usize) -> Vec<u8> {
    if size >= 0x8000 {
        vec![(size >> 16) as u8, (size >> 8) as u8, size as u8]
    } else {
        vec![(size >> 8) as u8, size as u8]
    }
}

/// The offset of an odd-instruction READ BINARY (`54 02 hi lo`, or none: 0).
fn offset(data: &[u8]) -> Result<usize, u16> {
    match data {
        [] => Ok(0),
        [0x54, 0x02, hi, lo] => Ok(u16::from_be_bytes([*hi, *lo]) as usize),
        _ => Err(sw::WRONG_DATA),
    }
}

fn challenge(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

/// A card-verifiable certificate as OpenSC 0.23 decodes it (it never checks the signature):
/// body with CPI, CAR, an ECDSA public key and the holder `<serial>00001`, then a signature.
fn device_certificate(serial: &str) -> Vec<u8> {
    let mut key = tlv::encode(
        0x06,
        &[0x04, 0x00, 0x7F, 0x00, 0x07, 0x02, 0x02, 0x02, 0x02, 0x03],
    );
    let mut point = vec![0x04];
    point.extend((0..64).map(|_| rand::random::<u8>()));
    key.extend(tlv::encode(0x86, &point));
    let mut body = tlv::encode(0x5F29, &[0x00]);
    body.extend(tlv::encode(0x42, b"DEEMUCA00001"));
    body.extend(tlv::encode(0x7F49, &key));
    body.extend(tlv::encode(0x5F20, format!("{serial}00001").as_bytes()));
    let mut certificate = tlv::encode(0x7F4E, &body);
    certificate.extend(tlv::encode(0x5F37, &[0x5A; 64]));
    tlv::encode(0x7F21, &certificate)
}

#[cfg(test)]
mod tests {
    use super::fcp_size;

    #[test]
    fn fcp_sizes_stay_positive_when_read_as_signed() {
        assert_eq!(fcp_size(0), [0x00, 0x00]);
        assert_eq!(fcp_size(0x7FFF), [0x7F, 0xFF]);
        assert_eq!(fcp_size(0x8000), [0x00, 0x80, 0x00]);
        assert_eq!(fcp_size(0xFFFF), [0x00, 0xFF, 0xFF]);
        assert_eq!(fcp_size(0x1_0000), [0x01, 0x00, 0x00]);
    }
}
