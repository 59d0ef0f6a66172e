//! A USB device as sysfs describes it, parsed from raw attribute bytes into checked values
//! and the udev-style properties the Go operator's reports carry (`ID_VENDOR_ID`,
//! `ID_SERIAL_SHORT`, `DEVNAME`, …), so reports look the same without libudev.

use std::collections::BTreeMap;

/// Longest attribute value kept; sysfs attributes of a USB device are short strings, so
/// anything longer is not one.
pub const MAX_ATTRIBUTE_LEN: usize = 4096;
/// Longest string descriptor (serial, manufacturer, product) kept: USB string descriptors
/// hold at most 126 UTF-16 code units.
pub const MAX_STRING_LEN: usize = 255;

/// One device directory of sysfs, unparsed: what a [`crate::sysfs::SysfsSource`] gives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawDevice {
    /// The kernel name (`1-1.2`, `usb1`).
    pub kernel_name: String,
    /// The device path below the sysfs root, as uevents carry it
    /// (`/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.2`).
    pub devpath: String,
    /// Attribute file name → content, as read (`idVendor` → `b"2e8a\n"`).
    pub attributes: BTreeMap<String, Vec<u8>>,
}

/// A USB device, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbDevice {
    /// See [`RawDevice::kernel_name`].
    pub kernel_name: String,
    /// See [`RawDevice::devpath`].
    pub devpath: String,
    /// Vendor id, four lower-case hex digits.
    pub vendor_id: String,
    /// Product id, four lower-case hex digits.
    pub product_id: String,
    /// The serial number string, empty when the device has none.
    pub serial: String,
    /// The manufacturer string.
    pub manufacturer: String,
    /// The product string.
    pub product: String,
    /// USB bus number (1–255).
    pub busnum: u8,
    /// Device number on the bus (1–255).
    pub devnum: u8,
    /// The device node: `/dev/bus/usb/BBB/DDD`.
    pub dev_node: String,
    /// The udev-style properties reports carry.
    pub properties: BTreeMap<String, String>,
}

/// Why a sysfs directory is not a usable USB device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsbParseError {
    /// Not a `usb_device` (an interface, a port, …): skipped silently.
    #[error("{0} is not a USB device")]
    NotADevice(String),
    /// A required attribute is missing.
    #[error("{device}: attribute {attribute} is missing")]
    Missing {
        /// The kernel name.
        device: String,
        /// The attribute.
        attribute: &'static str,
    },
    /// An attribute has a value it cannot have.
    #[error("{device}: attribute {attribute} is malformed")]
    Malformed {
        /// The kernel name.
        device: String,
        /// The attribute.
        attribute: &'static str,
    },
}

impl UsbDevice {
    /// Parses a raw device. Interfaces and other non-device directories give
    /// [`UsbParseError::NotADevice`]; malformed values give the other variants.
    pub fn parse(raw: &RawDevice) -> Result<UsbDevice, UsbParseError> {
        let name = &raw.kernel_name;
        let uevent = parse_uevent_file(raw.attributes.get("uevent").map(Vec::as_slice));
        if uevent.get("DEVTYPE").map(String::as_str) != Some("usb_device") {
            return Err(UsbParseError::NotADevice(name.clone()));
        }
        let vendor_id = hex_id(raw, "idVendor")?;
        let product_id = hex_id(raw, "idProduct")?;
        let busnum = number(raw, "busnum")?;
        let devnum = number(raw, "devnum")?;
        let serial = descriptor(raw, "serial")?;
        let manufacturer = descriptor(raw, "manufacturer")?;
        let product = descriptor(raw, "product")?;
        let dev_node = format!("/dev/bus/usb/{busnum:03}/{devnum:03}");
        let mut device = UsbDevice {
            kernel_name: name.clone(),
            devpath: raw.devpath.clone(),
            vendor_id,
            product_id,
            serial,
            manufacturer,
            product,
            busnum,
            devnum,
            dev_node,
            properties: BTreeMap::new(),
        };
        device.properties = device.udev_properties(uevent, raw);
        Ok(device)
    }

    /// The properties udev's `usb_id` builtin and the kernel's uevent give this device.
    fn udev_properties(
        &self,
        mut props: BTreeMap<String, String>,
        raw: &RawDevice,
    ) -> BTreeMap<String, String> {
        let mut set = |key: &str, value: String| {
            props.insert(key.to_owned(), value);
        };
        set("DEVNAME", self.dev_node.clone());
        set("DEVPATH", self.devpath.clone());
        set("SUBSYSTEM", "usb".into());
        set("DEVTYPE", "usb_device".into());
        set("BUSNUM", format!("{:03}", self.busnum));
        set("DEVNUM", format!("{:03}", self.devnum));
        set("ID_BUS", "usb".into());
        set("ID_VENDOR_ID", self.vendor_id.clone());
        set("ID_MODEL_ID", self.product_id.clone());
        let vendor = udev_safe(&self.manufacturer).unwrap_or_else(|| self.vendor_id.clone());
        let model = udev_safe(&self.product).unwrap_or_else(|| self.product_id.clone());
        set("ID_VENDOR", vendor.clone());
        set("ID_MODEL", model.clone());
        if let Some(revision) = raw.attributes.get("bcdDevice").and_then(|v| text(v)) {
            set("ID_REVISION", revision);
        }
        match udev_safe(&self.serial) {
            Some(serial) => {
                set("ID_SERIAL", format!("{vendor}_{model}_{serial}"));
                set("ID_SERIAL_SHORT", serial);
            }
            None => set("ID_SERIAL", format!("{vendor}_{model}")),
        }
        props
    }
}

/// Parses the `KEY=value` lines of a sysfs `uevent` file; lines without `=` are skipped.
pub fn parse_uevent_file(content: Option<&[u8]>) -> BTreeMap<String, String> {
    let Some(content) = content else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(content)
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic()))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// An attribute's content as text, trimmed; `None` when absent-equivalent (empty, too long,
/// or not UTF-8 text).
fn text(value: &[u8]) -> Option<String> {
    if value.len() > MAX_ATTRIBUTE_LEN {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn hex_id(raw: &RawDevice, attribute: &'static str) -> Result<String, UsbParseError> {
    let value = raw
        .attributes
        .get(attribute)
        .ok_or_else(|| UsbParseError::Missing {
            device: raw.kernel_name.clone(),
            attribute,
        })?;
    match text(value) {
        Some(id) if id.len() == 4 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(id.to_ascii_lowercase())
        }
        _ => Err(malformed(raw, attribute)),
    }
}

fn number(raw: &RawDevice, attribute: &'static str) -> Result<u8, UsbParseError> {
    let value = raw
        .attributes
        .get(attribute)
        .ok_or_else(|| UsbParseError::Missing {
            device: raw.kernel_name.clone(),
            attribute,
        })?;
    text(value)
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| malformed(raw, attribute))
}

/// A string descriptor: absent is empty; present must be printable text of sane length.
fn descriptor(raw: &RawDevice, attribute: &'static str) -> Result<String, UsbParseError> {
    let Some(value) = raw.attributes.get(attribute) else {
        return Ok(String::new());
    };
    let text = std::str::from_utf8(value)
        .map_err(|_| malformed(raw, attribute))?
        .trim();
    if text.len() > MAX_STRING_LEN || text.chars().any(char::is_control) {
        return Err(malformed(raw, attribute));
    }
    Ok(text.to_owned())
}

fn malformed(raw: &RawDevice, attribute: &'static str) -> UsbParseError {
    UsbParseError::Malformed {
        device: raw.kernel_name.clone(),
        attribute,
    }
}

/// udev's encoding of a string for `ID_*` properties: whitespace runs become one `_`, leading
/// and trailing whitespace go, and characters outside `0-9A-Za-z#+-.:=@_` become `_`.
/// `None` for a string with nothing left.
pub fn udev_safe(value: &str) -> Option<String> {
    let words: Vec<&str> = value.split_whitespace().collect();
    let joined = words.join("_");
    let safe: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    (!safe.is_empty()).then_some(safe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(attrs: &[(&str, &str)]) -> RawDevice {
        RawDevice {
            kernel_name: "1-2".into(),
            devpath: "/devices/x/1-2".into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    const DEVICE: &[(&str, &str)] = &[
        (
            "uevent",
            "DEVTYPE=usb_device\nDEVNAME=bus/usb/001/015\nMAJOR=189\n",
        ),
        ("idVendor", "2E8A\n"),
        ("idProduct", "10fd\n"),
        ("busnum", "1\n"),
        ("devnum", "15\n"),
        ("serial", "DC6A33145E23A42A\n"),
        ("manufacturer", "Pol Henarejos\n"),
        ("product", "Pico Key\n"),
        ("bcdDevice", "0100\n"),
    ];

    #[test]
    fn a_device_gets_the_go_reports_properties() {
        let device = UsbDevice::parse(&raw(DEVICE)).unwrap();
        assert_eq!(device.vendor_id, "2e8a");
        assert_eq!(device.dev_node, "/dev/bus/usb/001/015");
        let p = &device.properties;
        assert_eq!(p["DEVNAME"], "/dev/bus/usb/001/015");
        assert_eq!(p["ID_VENDOR"], "Pol_Henarejos");
        assert_eq!(p["ID_MODEL"], "Pico_Key");
        assert_eq!(p["ID_SERIAL_SHORT"], "DC6A33145E23A42A");
        assert_eq!(p["ID_SERIAL"], "Pol_Henarejos_Pico_Key_DC6A33145E23A42A");
        assert_eq!(p["BUSNUM"], "001");
        assert_eq!(p["MAJOR"], "189");
    }

    #[test]
    fn malformed_attributes_are_typed_errors() {
        let with = |key: &str, value: &str| {
            let mut attrs: Vec<(&str, &str)> =
                DEVICE.iter().copied().filter(|(k, _)| *k != key).collect();
            attrs.push((key, value));
            UsbDevice::parse(&raw(&attrs))
        };
        for (key, value) in [
            ("idVendor", "2e8a0"),
            ("idVendor", "zzzz"),
            ("busnum", "0"),
            ("devnum", "256"),
            ("devnum", "-1"),
            ("serial", "a\u{7}b"),
        ] {
            assert!(
                matches!(with(key, value), Err(UsbParseError::Malformed { .. })),
                "{key}={value:?}"
            );
        }
        let long = "x".repeat(MAX_STRING_LEN + 1);
        assert!(with("product", &long).is_err());
        let interface = raw(&[("uevent", "DEVTYPE=usb_interface\n")]);
        assert!(matches!(
            UsbDevice::parse(&interface),
            Err(UsbParseError::NotADevice(_))
        ));
        let no_vendor: Vec<_> = DEVICE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "idVendor")
            .collect();
        assert!(matches!(
            UsbDevice::parse(&raw(&no_vendor)),
            Err(UsbParseError::Missing {
                attribute: "idVendor",
                ..
            })
        ));
    }

    #[test]
    fn udev_encoding() {
        assert_eq!(udev_safe("  Pol  Henarejos "), Some("Pol_Henarejos".into()));
        assert_eq!(udev_safe("a/b*c"), Some("a_b_c".into()));
        assert_eq!(udev_safe("   "), None);
    }
}
