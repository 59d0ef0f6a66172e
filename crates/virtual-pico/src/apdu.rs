//! Command APDUs (ISO 7816-4), short and extended: the vpcd reader passes both.

/// Status words the card answers with.
pub mod sw {
    /// Success.
    pub const OK: u16 = 0x9000;
    /// Wrong length (Lc/Le inconsistent with the APDU's size).
    pub const WRONG_LENGTH: u16 = 0x6700;
    /// Security status not satisfied (PIN not verified).
    pub const NOT_AUTHENTICATED: u16 = 0x6982;
    /// Authentication method blocked (PIN locked).
    pub const BLOCKED: u16 = 0x6983;
    /// Conditions of use not satisfied.
    pub const CONDITIONS: u16 = 0x6985;
    /// Command not allowed.
    pub const NOT_ALLOWED: u16 = 0x6986;
    /// Wrong data.
    pub const WRONG_DATA: u16 = 0x6A80;
    /// File not found.
    pub const FILE_NOT_FOUND: u16 = 0x6A82;
    /// Incorrect P1/P2.
    pub const WRONG_P1P2: u16 = 0x6A86;
    /// Referenced data not found (also: device not initialised).
    pub const DATA_NOT_FOUND: u16 = 0x6A88;
    /// Wrong P1/P2 for this instruction.
    pub const WRONG_PARAMS: u16 = 0x6B00;
    /// Instruction not supported.
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    /// Class not supported.
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    /// Wrong PIN, `x` tries left: `0x63C0 | x`.
    pub const fn tries_left(x: u8) -> u16 {
        0x63C0 | (x as u16 & 0x0F)
    }
}

/// One command APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apdu {
    /// Class byte.
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data.
    pub data: Vec<u8>,
    /// Expected response length, when given (0 in the APDU means the maximum).
    pub le: Option<usize>,
}

impl Apdu {
    /// Parses the four ISO cases, short and extended. Anything inconsistent is
    /// [`sw::WRONG_LENGTH`].
    pub fn parse(bytes: &[u8]) -> Result<Apdu, u16> {
        let (header, body) = match bytes.split_first_chunk::<4>() {
            Some((h, b)) => (h, b),
            None => return Err(sw::WRONG_LENGTH),
        };
        let [cla, ins, p1, p2] = *header;
        let apdu = |data: &[u8], le| Apdu {
            cla,
            ins,
            p1,
            p2,
            data: data.to_vec(),
            le,
        };
        let short_le = |b: u8| Some(if b == 0 { 256 } else { b as usize });
        let long = |hi: u8, lo: u8| u16::from_be_bytes([hi, lo]) as usize;
        let long_le = |hi: u8, lo: u8| {
            Some(if hi == 0 && lo == 0 {
                65536
            } else {
                long(hi, lo)
            })
        };
        match body {
            [] => Ok(apdu(&[], None)),
            [le] => Ok(apdu(&[], short_le(*le))),
            [0, hi, lo] => Ok(apdu(&[], long_le(*hi, *lo))),
            [0, hi, lo, rest @ ..] => {
                let lc = long(*hi, *lo);
                match rest.len().checked_sub(lc) {
                    Some(0) if lc > 0 => Ok(apdu(rest, None)),
                    Some(2) if lc > 0 => Ok(apdu(&rest[..lc], long_le(rest[lc], rest[lc + 1]))),
                    _ => Err(sw::WRONG_LENGTH),
                }
            }
            [lc, rest @ ..] => {
                let lc = *lc as usize;
                match rest.len().checked_sub(lc) {
                    Some(0) => Ok(apdu(rest, None)),
                    Some(1) => Ok(apdu(&rest[..lc], short_le(rest[lc]))),
                    _ => Err(sw::WRONG_LENGTH),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_cases_short_and_extended() {
        let a = Apdu::parse(&[0x00, 0xA4, 0x04, 0x00]).unwrap();
        assert_eq!((a.data.len(), a.le), (0, None));
        let a = Apdu::parse(&[0x00, 0x84, 0x00, 0x00, 0x00]).unwrap();
        assert_eq!(a.le, Some(256));
        let a = Apdu::parse(&[0x00, 0xA4, 0x00, 0x00, 0x02, 0x2F, 0x02, 0x00]).unwrap();
        assert_eq!((a.data, a.le), (vec![0x2F, 0x02], Some(256)));
        // ENUMERATE as OpenSC sends it: case 2E.
        let a = Apdu::parse(&[0x80, 0x58, 0x00, 0x00, 0x00, 0x00, 0x00]).unwrap();
        assert_eq!(a.le, Some(65536));
        // Case 3E: Lc 00 01 06.
        let mut bytes = vec![0x00, 0xD7, 0xCD, 0x01, 0x00, 0x01, 0x06];
        bytes.extend(vec![7u8; 0x106]);
        let a = Apdu::parse(&bytes).unwrap();
        assert_eq!((a.data.len(), a.le), (0x106, None));
    }

    #[test]
    fn inconsistent_lengths_are_wrong_length() {
        for bad in [
            &[0x00u8][..],
            &[0x00, 0xA4, 0x04],
            &[0x00, 0xA4, 0x04, 0x00, 0x05, 0x01],
            &[0x00, 0xA4, 0x04, 0x00, 0x01, 0x01, 0x00, 0x00],
            &[0x00, 0xD7, 0x00, 0x00, 0x00, 0x00, 0x05, 0x01],
        ] {
            assert_eq!(Apdu::parse(bad), Err(sw::WRONG_LENGTH), "{bad:02x?}");
        }
    }
}
