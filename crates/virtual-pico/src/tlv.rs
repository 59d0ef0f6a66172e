//! BER-TLV as the card needs it: building FCPs and the device certificate, and reading the
//! tags of INITIALIZE DEVICE and UPDATE BINARY.

/// Encodes one TLV (one- or two-byte tag, definite length).
pub fn encode(tag: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 5);
    if tag > 0xFF {
        out.extend_from_slice(&tag.to_be_bytes());
    } else {
        out.push(tag as u8);
    }
    let len = value.len();
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(value);
    out
}

/// Splits a run of TLVs into `(tag, value)` pairs; `None` if malformed. Two-byte tags are
/// those whose first byte has the low five bits set.
pub fn parse(mut bytes: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (tag, rest) = match bytes {
            [first, second, rest @ ..] if first & 0x1F == 0x1F => {
                (u16::from_be_bytes([*first, *second]), rest)
            }
            [first, rest @ ..] => (*first as u16, rest),
            [] => return None,
        };
        let (len, rest) = match rest {
            [0x81, len, rest @ ..] => (*len as usize, rest),
            [0x82, hi, lo, rest @ ..] => (u16::from_be_bytes([*hi, *lo]) as usize, rest),
            [len, rest @ ..] if *len < 0x80 => (*len as usize, rest),
            _ => return None,
        };
        if rest.len() < len {
            return None;
        }
        out.push((tag, &rest[..len]));
        bytes = &rest[len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_short_long_and_two_byte_tags() {
        let mut bytes = encode(0x80, &[1, 2]);
        bytes.extend(encode(0x5F20, b"DEEMU1309200001"));
        bytes.extend(encode(0x53, &[9; 300]));
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed[0], (0x80, &[1u8, 2][..]));
        assert_eq!(parsed[1], (0x5F20, &b"DEEMU1309200001"[..]));
        assert_eq!(parsed[2].1.len(), 300);
        assert_eq!(parse(&[0x80, 0x05, 1]), None);
        assert_eq!(parse(&[0x80, 0x83, 0, 0, 1]), None);
    }
}
