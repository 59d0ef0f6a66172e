//! Pod addresses: each pod gets its own loopback address 127.0.X.Y (from 127.0.0.2 up), so
//! that several pods can listen on the same port. An address is held through a lock on a
//! file named after it, so runners in different processes (tests run in parallel) never
//! hand out the same one; the lock goes with the holder, also when it is killed.

use std::fs::{File, OpenOptions, TryLockError};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// An address held for one pod until dropped.
#[derive(Debug)]
pub struct Lease {
    ip: Ipv4Addr,
    _lock: File,
}

impl Lease {
    /// The address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

/// No address could be taken.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// The lock directory could not be used.
    #[error("address lock {path}: {source}")]
    Lock {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Every address is taken.
    #[error("no free loopback address left")]
    Exhausted,
}

/// The candidate addresses, in order: 127.0.0.2 … 127.0.255.254 (no .0, .1 or .255 last
/// octet, so nothing that looks like a network, the host or a broadcast address).
pub fn candidates() -> impl Iterator<Item = Ipv4Addr> {
    (0u8..=255).flat_map(|x| (2u8..=254).map(move |y| Ipv4Addr::new(127, 0, x, y)))
}

/// Takes the first free address.
pub fn take(lock_dir: &Path) -> Result<Lease, AddressError> {
    std::fs::create_dir_all(lock_dir).map_err(|source| AddressError::Lock {
        path: lock_dir.to_owned(),
        source,
    })?;
    for ip in candidates() {
        let path = lock_dir.join(ip.to_string());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| AddressError::Lock {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => return Ok(Lease { ip, _lock: file }),
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(source)) => return Err(AddressError::Lock { path, source }),
        }
    }
    Err(AddressError::Exhausted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_addresses_are_not_given_twice_and_come_back_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = take(dir.path()).unwrap();
        let b = take(dir.path()).unwrap();
        assert_eq!(a.ip(), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(b.ip(), Ipv4Addr::new(127, 0, 0, 3));
        drop(a);
        assert_eq!(take(dir.path()).unwrap().ip(), Ipv4Addr::new(127, 0, 0, 2));
    }

    #[test]
    fn candidates_skip_network_host_and_broadcast_octets() {
        assert!(candidates().all(|ip| !matches!(ip.octets()[3], 0 | 1 | 255)));
        assert_eq!(candidates().count(), 256 * 253);
    }
}
