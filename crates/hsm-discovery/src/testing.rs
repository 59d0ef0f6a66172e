//! Test support: fixture sysfs trees copied to a temporary directory, and devices unplugged
//! and plugged back in elsewhere, as the kernel would show them.

use std::io;
use std::path::{Path, PathBuf};

/// The fixture tree in the repository: a root hub, a hub with a Pico HSM behind it, a
/// SmartCard-HSM, a Nitrokey HSM and a YubiKey on bus 1.
pub fn fixture_sysfs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs")
}

/// The fixture devices: `(kernel name, vendor, product, serial)`.
pub const FIXTURE_DEVICES: [(&str, &str, &str, &str); 6] = [
    ("usb1", "1d6b", "0002", "0000:00:14.0"),
    ("1-1", "05e3", "0610", ""),
    ("1-1.2", "2e8a", "10fd", "DC6A33145E23A42A"),
    ("1-2", "04e6", "5816", "DENK0100123"),
    ("1-3", "20a0", "4230", "DENK0200456"),
    ("1-4", "1050", "0407", ""),
];

/// Copies a tree, keeping symlinks as symlinks (sysfs's relative links stay inside it).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A device taken out of a tree, ready to be plugged in again.
pub struct Unplugged {
    held: PathBuf,
    parent: PathBuf,
    name: String,
}

/// Removes device `name` (and its interfaces) from the tree at `root`, as unplugging does.
pub fn unplug(root: &Path, name: &str) -> io::Result<Unplugged> {
    let devices = root.join("bus/usb/devices");
    let dir = std::fs::canonicalize(devices.join(name))?;
    let parent = dir.parent().expect("a device has a parent").to_owned();
    let held = root.with_extension(format!("held-{name}"));
    std::fs::rename(&dir, &held)?;
    for entry in std::fs::read_dir(&devices)? {
        let entry = entry?.file_name().to_string_lossy().into_owned();
        if entry == name || entry.starts_with(&format!("{name}:")) {
            std::fs::remove_file(devices.join(entry))?;
        }
    }
    Ok(Unplugged {
        held,
        parent,
        name: name.to_owned(),
    })
}

impl Unplugged {
    /// Plugs the device back in as `new_name` (a port of the same parent) with device number
    /// `devnum`; returns its new devpath below the root.
    pub fn plug_as(self, root: &Path, new_name: &str, devnum: u8) -> io::Result<String> {
        let dir = self.parent.join(new_name);
        std::fs::rename(&self.held, &dir)?;
        std::fs::write(dir.join("devnum"), format!("{devnum}\n"))?;
        let uevent = std::fs::read_to_string(dir.join("uevent"))?;
        let uevent: String = uevent
            .lines()
            .map(|line| match line.split_once('=') {
                Some(("DEVNUM", _)) => format!("DEVNUM={devnum:03}\n"),
                Some(("DEVNAME", name)) => {
                    let bus = name.rsplit('/').nth(1).unwrap_or("001").to_owned();
                    format!("DEVNAME=bus/usb/{bus}/{devnum:03}\n")
                }
                _ => format!("{line}\n"),
            })
            .collect();
        std::fs::write(dir.join("uevent"), uevent)?;
        let devices = root.join("bus/usb/devices");
        let canonical_root = std::fs::canonicalize(root)?;
        link(&devices, new_name, &dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let old = entry.file_name().to_string_lossy().into_owned();
            if let Some(interface) = old.strip_prefix(&format!("{}:", self.name)) {
                let renamed = dir.join(format!("{new_name}:{interface}"));
                std::fs::rename(entry.path(), &renamed)?;
                link(&devices, &format!("{new_name}:{interface}"), &renamed)?;
            }
        }
        let canonical = std::fs::canonicalize(&dir)?;
        let devpath = canonical
            .strip_prefix(&canonical_root)
            .expect("inside the tree");
        Ok(format!("/{}", devpath.display()))
    }
}

/// A relative symlink `devices/<name>` → the device directory, as sysfs has.
fn link(devices: &Path, name: &str, dir: &Path) -> io::Result<()> {
    let root = devices
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("root");
    let root = std::fs::canonicalize(root)?;
    let relative = dir.strip_prefix(&root).expect("inside the tree");
    std::os::unix::fs::symlink(Path::new("../../..").join(relative), devices.join(name))
}
