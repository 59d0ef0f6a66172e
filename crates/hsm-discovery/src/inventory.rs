//! The node's USB devices over time: what is present, what was lost and when. A pure index fed
//! by full scans and uevents. A device with a serial number keeps its identity when it comes
//! back on another port; a lost device stays (unavailable) until the grace period has passed.

use crate::usb::UsbDevice;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

/// The Go discovery's lost-device cleanup: 5 minutes.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(300);

/// A device and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// What sysfs said last.
    pub device: UsbDevice,
    /// Whether it is there now.
    pub available: bool,
    /// When it (re)appeared, or when it was lost.
    pub since: Timestamp,
}

/// Every USB device seen on the node, by identity.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    entries: BTreeMap<String, Tracked>,
}

/// A device's identity: its ids and serial when it has a serial (so it survives a change of
/// port), else its place in the USB tree.
pub fn identity(device: &UsbDevice) -> String {
    if device.serial.is_empty() {
        format!("path:{}", device.devpath)
    } else {
        format!(
            "serial:{}:{}:{}",
            device.vendor_id, device.product_id, device.serial
        )
    }
}

impl Inventory {
    /// A full scan: every listed device is present, every other one is lost. Returns whether
    /// anything changed.
    pub fn rescan(&mut self, now: Timestamp, devices: Vec<UsbDevice>) -> bool {
        let mut seen = std::collections::BTreeSet::new();
        let mut changed = false;
        for device in devices {
            seen.insert(identity(&device));
            changed |= self.present(now, device);
        }
        for (id, entry) in &mut self.entries {
            if entry.available && !seen.contains(id) {
                entry.available = false;
                entry.since = now;
                changed = true;
            }
        }
        changed
    }

    /// A device is present (a scan found it, or it was added). Returns whether anything
    /// changed.
    pub fn present(&mut self, now: Timestamp, device: UsbDevice) -> bool {
        let id = identity(&device);
        // Another identity that claimed this place in the tree has left it.
        let mut changed = self.lose_where(now, |other_id, entry| {
            *other_id != id && entry.device.devpath == device.devpath
        });
        match self.entries.get_mut(&id) {
            Some(entry) if entry.available && entry.device == device => {}
            Some(entry) => {
                if !entry.available {
                    entry.since = now;
                }
                entry.available = true;
                entry.device = device;
                changed = true;
            }
            None => {
                self.entries.insert(
                    id,
                    Tracked {
                        device,
                        available: true,
                        since: now,
                    },
                );
                changed = true;
            }
        }
        changed
    }

    /// The device at `devpath` went away. Returns whether anything changed.
    pub fn gone(&mut self, now: Timestamp, devpath: &str) -> bool {
        self.lose_where(now, |_, entry| entry.device.devpath == devpath)
    }

    fn lose_where(&mut self, now: Timestamp, what: impl Fn(&String, &Tracked) -> bool) -> bool {
        let mut changed = false;
        for (id, entry) in &mut self.entries {
            if entry.available && what(id, entry) {
                entry.available = false;
                entry.since = now;
                changed = true;
            }
        }
        changed
    }

    /// Forgets devices lost for longer than `grace`. Returns whether any was forgotten.
    pub fn expire(&mut self, now: Timestamp, grace: Duration) -> bool {
        let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
        let before = self.entries.len();
        self.entries
            .retain(|_, entry| entry.available || now.duration_since(entry.since) <= grace);
        self.entries.len() != before
    }

    /// When the next lost device is due to be forgotten, if any is lost.
    pub fn next_expiry(&self, grace: Duration) -> Option<Timestamp> {
        let grace = SignedDuration::try_from(grace).ok()?;
        self.entries
            .values()
            .filter(|entry| !entry.available)
            .filter_map(|entry| entry.since.checked_add(grace).ok())
            .min()
    }

    /// Every tracked device, by identity.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tracked)> {
        self.entries.iter()
    }

    /// How many devices are tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usb::RawDevice;

    fn device(devpath: &str, serial: &str, devnum: u8) -> UsbDevice {
        let attrs = [
            ("uevent", "DEVTYPE=usb_device\n".to_owned()),
            ("idVendor", "2e8a".to_owned()),
            ("idProduct", "10fd".to_owned()),
            ("busnum", "1".to_owned()),
            ("devnum", devnum.to_string()),
            ("serial", serial.to_owned()),
        ];
        UsbDevice::parse(&RawDevice {
            kernel_name: devpath.rsplit('/').next().unwrap().into(),
            devpath: devpath.into(),
            attributes: attrs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into_bytes()))
                .collect(),
        })
        .unwrap()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_device_keeps_its_identity_across_ports_and_expires_after_grace() {
        let mut inv = Inventory::default();
        assert!(inv.rescan(at(0), vec![device("/devices/1-2", "S1", 3)]));
        assert!(!inv.rescan(at(10), vec![device("/devices/1-2", "S1", 3)]));
        assert!(inv.gone(at(20), "/devices/1-2"));
        let (_, lost) = inv.iter().next().unwrap();
        assert!(!lost.available);
        assert_eq!(lost.since, at(20));
        assert_eq!(inv.next_expiry(DEFAULT_GRACE_PERIOD), Some(at(320)));

        // Back on another port: same identity, new place, available again.
        assert!(inv.present(at(30), device("/devices/1-3", "S1", 7)));
        assert_eq!(inv.len(), 1);
        let (id, back) = inv.iter().next().unwrap();
        assert_eq!(id, "serial:2e8a:10fd:S1");
        assert!(back.available);
        assert_eq!(back.device.dev_node, "/dev/bus/usb/001/007");

        // Lost, then forgotten only after the grace period.
        assert!(inv.rescan(at(40), vec![]));
        assert!(!inv.expire(at(340), DEFAULT_GRACE_PERIOD));
        assert!(inv.expire(at(341), DEFAULT_GRACE_PERIOD));
        assert!(inv.is_empty());
    }

    #[test]
    fn a_serialless_device_is_known_by_its_place() {
        let mut inv = Inventory::default();
        inv.present(at(0), device("/devices/1-4", "", 5));
        // Another serial-less device at another place is another device.
        inv.present(at(1), device("/devices/1-5", "", 6));
        assert_eq!(inv.len(), 2);
        // A device with a serial taking 1-4's place: the old one is lost.
        inv.present(at(2), device("/devices/1-4", "S9", 8));
        let lost: Vec<_> = inv.iter().filter(|(_, t)| !t.available).collect();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0, "path:/devices/1-4");
    }
}
