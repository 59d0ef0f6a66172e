//! The card's persistent state as bytes, so a card can be unplugged, its emulator stopped, and
//! the same card plugged in again later, as a USB token keeps its flash. What a reset clears
//! (selection, verified PIN, current file) is not saved.
//!
//! The format is private to this crate and versioned by its magic: `VPICO` and a version byte,
//! the options, each PIN (present flag, maximum and remaining tries, length, value), then every
//! file (id, length, content), all integers big-endian. The file holds the test card's PINs in
//! the clear: it is a test card's flash, written with owner-only permissions.

use std::path::Path;

const MAGIC: &[u8; 6] = b"VPICO\x01";

/// Why saved card state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    /// The bytes are not a saved card of this version.
    #[error("not a saved virtual card (bad magic or version)")]
    BadMagic,
    /// The bytes end early or carry a length that does not fit.
    #[error("saved virtual card is truncated or corrupt at byte {0}")]
    Corrupt(usize),
    /// Reading or writing the file failed.
    #[error("saved virtual card {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// A PIN as saved: value, maximum tries, tries left.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SavedPin {
    pub value: zeroize::Zeroizing<Vec<u8>>,
    pub max: u8,
    pub left: u8,
}

impl std::fmt::Debug for SavedPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedPin")
            .field("max", &self.max)
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

/// Everything that survives a power cycle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SavedCard {
    pub options: u16,
    pub user: Option<SavedPin>,
    pub so: Option<SavedPin>,
    pub files: Vec<(u16, Vec<u8>)>,
}

impl SavedCard {
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(MAGIC.to_vec());
        out.extend_from_slice(&self.options.to_be_bytes());
        for pin in [&self.user, &self.so] {
            match pin {
                None => out.push(0),
                Some(pin) => {
                    out.extend_from_slice(&[1, pin.max, pin.left, pin.value.len() as u8]);
                    out.extend_from_slice(&pin.value);
                }
            }
        }
        out.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for (fid, content) in &self.files {
            out.extend_from_slice(&fid.to_be_bytes());
            out.extend_from_slice(&(content.len() as u32).to_be_bytes());
            out.extend_from_slice(content);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SavedCard, SavedError> {
        let mut reader = Reader { bytes, at: 0 };
        if reader.take(MAGIC.len())? != MAGIC {
            return Err(SavedError::BadMagic);
        }
        let options = u16::from_be_bytes(reader.array()?);
        let mut pins = [None, None];
        for pin in &mut pins {
            *pin = match reader.take(1)?[0] {
                0 => None,
                1 => {
                    let [max, left, len] = reader.array()?;
                    if left > max {
                        return Err(SavedError::Corrupt(reader.at));
                    }
                    Some(SavedPin {
                        value: zeroize::Zeroizing::new(reader.take(len as usize)?.to_vec()),
                        max,
                        left,
                    })
                }
                _ => return Err(SavedError::Corrupt(reader.at)),
            };
        }
        let count = u32::from_be_bytes(reader.array()?) as usize;
        let mut files = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let fid = u16::from_be_bytes(reader.array()?);
            let len = u32::from_be_bytes(reader.array()?) as usize;
            files.push((fid, reader.take(len)?.to_vec()));
        }
        if reader.at != bytes.len() {
            return Err(SavedError::Corrupt(reader.at));
        }
        let [user, so] = pins;
        Ok(SavedCard {
            options,
            user,
            so,
            files,
        })
    }

    /// Reads a saved card from `path`.
    pub fn load(path: &Path) -> Result<SavedCard, SavedError> {
        let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(io(path))?);
        SavedCard::decode(&bytes)
    }

    /// Writes it to `path` atomically (a temporary file beside it, renamed over it), so a
    /// crash mid-write leaves the previous state, as a card's flash would.
    pub fn store(&self, path: &Path) -> Result<(), SavedError> {
        use std::io::Write;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io(path))?;
        file.write_all(&self.encode()).map_err(io(path))?;
        file.as_file().sync_data().map_err(io(path))?;
        file.persist(path).map_err(|e| io(path)(e.error))?;
        Ok(())
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SavedError + '_ {
    move |source| SavedError::Io {
        path: path.display().to_string(),
        source,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SavedError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(SavedError::Corrupt(self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SavedError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedCard {
        SavedCard {
            options: 0x0001,
            user: Some(SavedPin {
                value: zeroize::Zeroizing::new(b"648219".to_vec()),
                max: 3,
                left: 2,
            }),
            so: None,
            files: vec![(0x2F02, vec![1, 2, 3]), (0xCD01, vec![0; 70_000])],
        }
    }

    #[test]
    fn round_trips() {
        let card = sample();
        assert_eq!(SavedCard::decode(&card.encode()).unwrap(), card);
    }

    #[test]
    fn every_truncation_and_a_wrong_magic_are_refused() {
        let bytes = sample().encode();
        for len in 0..bytes.len() - 70_000 {
            assert!(SavedCard::decode(&bytes[..len]).is_err(), "length {len}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(matches!(
            SavedCard::decode(&longer),
            Err(SavedError::Corrupt(_))
        ));
        let mut other = bytes.to_vec();
        other[5] = 2;
        assert!(matches!(
            SavedCard::decode(&other),
            Err(SavedError::BadMagic)
        ));
    }

    #[test]
    fn stores_atomically_with_owner_only_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card");
        sample().store(&path).unwrap();
        assert_eq!(SavedCard::load(&path).unwrap(), sample());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
