//! The sysfs port: where USB devices are read from. [`DirSysfs`] reads a directory tree
//! shaped like `/sys` (the host's, mounted at `/sys` or `/host/sys`, or a fixture tree in
//! tests); the parsing is [`crate::usb`]'s. No libudev and no `/run/udev` are needed, so this
//! runs from a scratch image and on Talos Linux.

use crate::usb::{MAX_ATTRIBUTE_LEN, RawDevice, UsbDevice, UsbParseError};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The attribute files read for each device.
pub const ATTRIBUTES: [&str; 9] = [
    "uevent",
    "idVendor",
    "idProduct",
    "serial",
    "manufacturer",
    "product",
    "busnum",
    "devnum",
    "bcdDevice",
];

/// More entries than this under `bus/usb/devices` is not a real machine: the rest is skipped.
pub const MAX_ENTRIES: usize = 4096;

/// Where the discovery pod finds the host's sysfs: the Go manifests mount it at `/sys`;
/// `/host/sys` is checked first for deployments that mount it there.
pub const DEFAULT_ROOTS: [&str; 2] = ["/host/sys", "/sys"];

/// A source of USB device directories.
pub trait SysfsSource: Send + Sync {
    /// Every entry of `bus/usb/devices` (devices and interfaces; parsing tells them apart).
    fn scan(&self) -> Result<Vec<RawDevice>, SysfsError>;
    /// The device at a uevent's `DEVPATH`; `None` when it is not there (any more).
    fn device(&self, devpath: &str) -> Result<Option<RawDevice>, SysfsError>;
}

/// Why sysfs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// The devices directory cannot be listed.
    #[error("cannot list {path}")]
    List {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A devpath that would leave the sysfs root.
    #[error("devpath {0:?} is not inside sysfs")]
    BadDevpath(String),
}

/// A sysfs tree on disk.
#[derive(Clone, Debug)]
pub struct DirSysfs {
    root: PathBuf,
}

impl DirSysfs {
    /// Reads the tree at `root` (`/sys`, or a fixture's root).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirSysfs { root: root.into() }
    }

    /// The first of [`DEFAULT_ROOTS`] that has `bus/usb/devices`, else `/sys`.
    pub fn detect() -> Self {
        let root = DEFAULT_ROOTS
            .iter()
            .map(PathBuf::from)
            .find(|root| root.join("bus/usb/devices").is_dir())
            .unwrap_or_else(|| PathBuf::from("/sys"));
        Self::new(root)
    }

    /// The tree's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads one device directory; `None` when it vanished or resolves outside the root.
    fn read_dir_entry(&self, canonical_root: &Path, entry: &Path) -> Option<RawDevice> {
        let target = std::fs::canonicalize(entry).ok()?;
        let devpath = target.strip_prefix(canonical_root).ok()?;
        let kernel_name = target.file_name()?.to_string_lossy().into_owned();
        let attributes = ATTRIBUTES
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), read_capped(&target.join(name))?)))
            .collect::<BTreeMap<_, _>>();
        Some(RawDevice {
            kernel_name,
            devpath: format!("/{}", devpath.display()),
            attributes,
        })
    }
}

/// Reads at most one byte more than [`MAX_ATTRIBUTE_LEN`] (so an oversized file is seen as
/// such without reading it all).
fn read_capped(path: &Path) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut content = Vec::new();
    file.take(MAX_ATTRIBUTE_LEN as u64 + 1)
        .read_to_end(&mut content)
        .ok()?;
    Some(content)
}

impl SysfsSource for DirSysfs {
    fn scan(&self) -> Result<Vec<RawDevice>, SysfsError> {
        let dir = self.root.join("bus/usb/devices");
        let list_error = |source| SysfsError::List {
            path: dir.clone(),
            source,
        };
        let canonical_root = std::fs::canonicalize(&self.root).map_err(list_error)?;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(list_error)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .take(MAX_ENTRIES + 1)
            .collect();
        if entries.len() > MAX_ENTRIES {
            tracing::warn!(
                max = MAX_ENTRIES,
                "absurd number of USB entries; the rest is skipped"
            );
            entries.truncate(MAX_ENTRIES);
        }
        entries.sort();
        Ok(entries
            .iter()
            .filter_map(|entry| self.read_dir_entry(&canonical_root, entry))
            .collect())
    }

    fn device(&self, devpath: &str) -> Result<Option<RawDevice>, SysfsError> {
        let relative = Path::new(devpath.trim_start_matches('/'));
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
            || relative.as_os_str().is_empty()
        {
            return Err(SysfsError::BadDevpath(devpath.to_owned()));
        }
        let Ok(canonical_root) = std::fs::canonicalize(&self.root) else {
            return Ok(None);
        };
        Ok(self.read_dir_entry(&canonical_root, &self.root.join(relative)))
    }
}

/// Every USB device a source has now, parsed. Entries that are not devices are skipped
/// silently; malformed devices are logged and skipped.
pub fn usb_devices(source: &dyn SysfsSource) -> Result<Vec<UsbDevice>, SysfsError> {
    Ok(source.scan()?.iter().filter_map(parse_logged).collect())
}

/// Parses a raw device, logging why one is skipped.
pub fn parse_logged(raw: &RawDevice) -> Option<UsbDevice> {
    match UsbDevice::parse(raw) {
        Ok(device) => Some(device),
        Err(UsbParseError::NotADevice(_)) => None,
        Err(error) => {
            tracing::warn!(%error, "skipping a USB device sysfs describes badly");
            None
        }
    }
}

/// Devices held in memory: for fuzzing and for tests of the core without a tree on disk.
#[derive(Clone, Debug, Default)]
pub struct MemorySysfs {
    /// The entries of `bus/usb/devices`.
    pub devices: Vec<RawDevice>,
}

impl SysfsSource for MemorySysfs {
    fn scan(&self) -> Result<Vec<RawDevice>, SysfsError> {
        Ok(self.devices.clone())
    }

    fn device(&self, devpath: &str) -> Result<Option<RawDevice>, SysfsError> {
        Ok(self.devices.iter().find(|d| d.devpath == devpath).cloned())
    }
}
