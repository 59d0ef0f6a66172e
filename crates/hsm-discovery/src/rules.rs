//! Which USB devices belong to an HSMDevice, and whether this node is one of its nodes: the
//! Go operator's rules (`usb[]` specs OR-ed, `autoDiscovery` through the allowlist, nil
//! `discovery` meaning broad auto-discovery), plus `devicePath` globs (which the Go code
//! accepted and ignored) and a node filter that honours every `nodeSelector` key (the Go code
//! honoured only `kubernetes.io/hostname` and discovered nothing for any other key).

use crate::allowlist::{Allowlist, normalise_id};
use crate::usb::UsbDevice;
use hsm_api::device::HSMDeviceSpec;
use std::collections::BTreeMap;

/// One HSMDevice's matching rules, checked once.
#[derive(Clone, Debug)]
pub struct Rules {
    usb: Vec<UsbSpec>,
    auto_discovery: bool,
    device_path: Option<glob::Pattern>,
    /// At most this many devices are reported (`maxDevices`; 0 or less: no limit).
    pub max_devices: usize,
    /// The cgroup permissions the device plugin grants (`devicePath.permissions`, else `rw`).
    pub permissions: String,
}

#[derive(Clone, Debug)]
struct UsbSpec {
    vendor: String,
    product: String,
    serial: String,
}

/// Why an HSMDevice's rules cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// `discovery.devicePath.path` is not a glob.
    #[error("devicePath {path:?} is not a valid glob")]
    Glob {
        /// The pattern.
        path: String,
        /// Why.
        #[source]
        source: glob::PatternError,
    },
    /// `devicePath.permissions` has letters other than `r`, `w`, `m`.
    #[error("devicePath permissions {0:?} must be letters of rwm")]
    Permissions(String),
}

impl Rules {
    /// The rules of a spec.
    pub fn from_spec(spec: &HSMDeviceSpec) -> Result<Rules, RulesError> {
        let discovery = spec.discovery.as_ref();
        let usb = discovery
            .map(|d| {
                d.usb
                    .iter()
                    .map(|u| UsbSpec {
                        vendor: normalise_id(&u.vendor_id),
                        product: normalise_id(&u.product_id),
                        serial: u.serial_number.trim().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let path = discovery.and_then(|d| d.device_path.as_ref());
        let device_path = path
            .map(|p| {
                glob::Pattern::new(&p.path).map_err(|source| RulesError::Glob {
                    path: p.path.clone(),
                    source,
                })
            })
            .transpose()?;
        let permissions = match path.map(|p| p.permissions.trim()) {
            None | Some("") => "rw".to_owned(),
            Some(p) if p.chars().all(|c| "rwm".contains(c)) && p.len() <= 3 => p.to_owned(),
            Some(p) => return Err(RulesError::Permissions(p.to_owned())),
        };
        Ok(Rules {
            usb,
            auto_discovery: discovery.is_none_or(|d| d.auto_discovery),
            device_path,
            max_devices: usize::try_from(spec.max_devices).unwrap_or(0),
            permissions,
        })
    }

    /// Whether a device belongs: any `usb[]` spec, or `autoDiscovery` and the allowlist, or
    /// the `devicePath` glob on its device node.
    pub fn matches(&self, device: &UsbDevice, allowlist: &Allowlist) -> bool {
        let by_spec = self.usb.iter().any(|spec| {
            (spec.vendor.is_empty() || spec.vendor == device.vendor_id)
                && (spec.product.is_empty() || spec.product == device.product_id)
                && (spec.serial.is_empty() || spec.serial == device.serial)
        });
        let by_allowlist =
            self.auto_discovery && allowlist.contains(&device.vendor_id, &device.product_id);
        let by_path = self
            .device_path
            .as_ref()
            .is_some_and(|glob| glob.matches(&device.dev_node));
        by_spec || by_allowlist || by_path
    }
}

/// Whether this node is one of the HSMDevice's: every `nodeSelector` pair must be one of the
/// node's labels. `kubernetes.io/hostname` also matches the node's name, as the Go operator
/// checked it, for nodes whose hostname label is missing or unreadable.
pub fn node_matches(
    selector: &BTreeMap<String, String>,
    node_name: &str,
    node_labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(key, want)| {
        node_labels.get(key) == Some(want)
            || (key == hsm_api::names::labels::HOSTNAME && want == node_name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usb::{RawDevice, UsbDevice};

    fn device(vendor: &str, product: &str, serial: &str, devnum: u8) -> UsbDevice {
        let attrs = [
            ("uevent", "DEVTYPE=usb_device\n".to_owned()),
            ("idVendor", vendor.to_owned()),
            ("idProduct", product.to_owned()),
            ("busnum", "1".to_owned()),
            ("devnum", devnum.to_string()),
            ("serial", serial.to_owned()),
        ];
        UsbDevice::parse(&RawDevice {
            kernel_name: "1-1".into(),
            devpath: "/devices/1-1".into(),
            attributes: attrs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into_bytes()))
                .collect(),
        })
        .unwrap()
    }

    fn spec(yaml: &str) -> Rules {
        let spec: HSMDeviceSpec =
            serde_json::from_value(serde_json::from_str::<serde_json::Value>(yaml).unwrap())
                .unwrap();
        Rules::from_spec(&spec).unwrap()
    }

    #[test]
    fn usb_specs_are_case_insensitive_and_serial_exact() {
        let rules = spec(
            r#"{"deviceType":"PicoHSM","discovery":{"usb":[
                {"vendorId":"0x2E8A","productId":"10FD","serialNumber":"AB"}]}}"#,
        );
        let none = Allowlist::default();
        assert!(rules.matches(&device("2e8a", "10fd", "AB", 2), &none));
        assert!(!rules.matches(&device("2e8a", "10fd", "ab", 2), &none));
        assert!(!rules.matches(&device("2e8a", "10fe", "AB", 2), &none));
    }

    #[test]
    fn auto_discovery_uses_the_allowlist_and_nil_discovery_means_auto() {
        let known = Allowlist::known_hsms();
        let nitro = device("20a0", "4230", "", 3);
        let yubikey = device("1050", "0407", "", 4);
        let broad = spec(r#"{"deviceType":"Generic"}"#);
        assert!(broad.matches(&nitro, &known));
        assert!(!broad.matches(&yubikey, &known));
        let off = spec(r#"{"deviceType":"Generic","discovery":{"autoDiscovery":false}}"#);
        assert!(!off.matches(&nitro, &known));
    }

    #[test]
    fn device_path_globs_match_the_device_node() {
        let rules = spec(
            r#"{"deviceType":"Generic","discovery":{
                "devicePath":{"path":"/dev/bus/usb/001/00[3-4]","permissions":"r"}}}"#,
        );
        let none = Allowlist::default();
        assert!(rules.matches(&device("1050", "0407", "", 4), &none));
        assert!(!rules.matches(&device("1050", "0407", "", 5), &none));
        assert_eq!(rules.permissions, "r");
        let bad: HSMDeviceSpec = serde_json::from_str(
            r#"{"deviceType":"G","discovery":{"devicePath":{"path":"/dev/[x"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            Rules::from_spec(&bad),
            Err(RulesError::Glob { .. })
        ));
        let bad: HSMDeviceSpec = serde_json::from_str(
            r#"{"deviceType":"G","discovery":{"devicePath":{"path":"/x","permissions":"rwx"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            Rules::from_spec(&bad),
            Err(RulesError::Permissions(_))
        ));
    }

    #[test]
    fn every_node_selector_key_is_honoured() {
        let labels: BTreeMap<String, String> = [
            ("kubernetes.io/hostname", "worker-1"),
            ("hsm", "pico"),
            ("zone", "a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let selector = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(node_matches(&selector(&[]), "worker-1", &labels));
        assert!(node_matches(
            &selector(&[("hsm", "pico")]),
            "worker-1",
            &labels
        ));
        assert!(node_matches(
            &selector(&[("hsm", "pico"), ("zone", "a")]),
            "worker-1",
            &labels
        ));
        assert!(!node_matches(
            &selector(&[("zone", "b")]),
            "worker-1",
            &labels
        ));
        assert!(!node_matches(
            &selector(&[("gpu", "yes")]),
            "worker-1",
            &labels
        ));
        let hostname = selector(&[("kubernetes.io/hostname", "worker-2")]);
        assert!(node_matches(&hostname, "worker-2", &BTreeMap::new()));
        assert!(!node_matches(&hostname, "worker-1", &labels));
    }
}
