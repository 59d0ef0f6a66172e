//! The discovery core: everything a discovery pod knows (the HSMDevices, the node, the USB
//! inventory) and everything it derives (reports, device-plugin lists), with no I/O besides
//! the [`SysfsSource`] it is handed. The daemon feeds it; tests drive it directly.

use crate::allowlist::Allowlist;
use crate::inventory::{DEFAULT_GRACE_PERIOD, Inventory};
use crate::report::{ReportInput, build, selected};
use crate::rules::{Rules, node_matches};
use crate::sysfs::{SysfsError, SysfsSource, parse_logged, usb_devices};
use crate::uevent::DeviceEvent;
use hsm_api::device::HSMDeviceSpec;
use hsm_api::report::PodDiscoveryReport;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// One device as the device plugin offers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginDevice {
    /// The device-plugin ID: `<node>-<serial>`, or `<node>-<device path with / as _>` for a
    /// device without a serial (the Go form), so an ID follows a device across ports.
    pub id: String,
    /// The device node.
    pub dev_node: String,
    /// The serial number.
    pub serial: String,
    /// Whether it can be allocated.
    pub healthy: bool,
    /// cgroup permissions for the node.
    pub permissions: String,
}

/// The state of one discovery pod.
#[derive(Debug)]
pub struct Discovery {
    /// The node's name.
    pub node_name: String,
    /// The node's labels (at least its hostname label).
    pub node_labels: BTreeMap<String, String>,
    /// What `autoDiscovery` accepts.
    pub allowlist: Allowlist,
    /// How long a lost device is still reported.
    pub grace_period: Duration,
    /// The USB devices of the node.
    pub inventory: Inventory,
    devices: BTreeMap<String, HSMDeviceSpec>,
}

impl Discovery {
    /// A pod on `node_name`, knowing no HSMDevice yet.
    pub fn new(node_name: impl Into<String>, allowlist: Allowlist) -> Self {
        let node_name = node_name.into();
        let node_labels = [(
            hsm_api::names::labels::HOSTNAME.to_owned(),
            node_name.clone(),
        )]
        .into_iter()
        .collect();
        Discovery {
            node_name,
            node_labels,
            allowlist,
            grace_period: DEFAULT_GRACE_PERIOD,
            inventory: Inventory::default(),
            devices: BTreeMap::new(),
        }
    }

    /// The HSMDevices now (name → spec).
    pub fn set_devices(&mut self, devices: BTreeMap<String, HSMDeviceSpec>) {
        self.devices = devices;
    }

    /// A full scan of sysfs. Returns whether the inventory changed.
    pub fn rescan(&mut self, now: Timestamp, sysfs: &dyn SysfsSource) -> Result<bool, SysfsError> {
        let devices = usb_devices(sysfs)?;
        let changed = self.inventory.rescan(now, devices);
        Ok(self.inventory.expire(now, self.grace_period) || changed)
    }

    /// A hotplug event: a device present is read from sysfs (gone again by then: lost).
    /// Returns whether the inventory changed.
    pub fn apply(&mut self, now: Timestamp, event: DeviceEvent, sysfs: &dyn SysfsSource) -> bool {
        match event {
            DeviceEvent::Present { devpath } => match sysfs.device(&devpath) {
                Ok(Some(raw)) => match parse_logged(&raw) {
                    Some(device) => self.inventory.present(now, device),
                    None => false,
                },
                Ok(None) => self.inventory.gone(now, &devpath),
                Err(error) => {
                    tracing::warn!(%error, "ignoring a uevent");
                    false
                }
            },
            DeviceEvent::Gone { devpath } => self.inventory.gone(now, &devpath),
        }
    }

    /// The HSMDevices this node serves (node filter passed), with their rules.
    fn served(&self) -> impl Iterator<Item = (&String, &HSMDeviceSpec, Result<Rules, String>)> {
        self.devices
            .iter()
            .filter(|(_, spec)| {
                node_matches(&spec.node_selector, &self.node_name, &self.node_labels)
            })
            .map(|(name, spec)| {
                let rules = Rules::from_spec(spec).map_err(|e| e.to_string());
                (name, spec, rules)
            })
    }

    /// The report of every HSMDevice this node serves, by device name.
    pub fn reports(&self, now: Timestamp) -> BTreeMap<String, PodDiscoveryReport> {
        self.served()
            .map(|(name, spec, rules)| {
                let input = ReportInput {
                    device_name: name,
                    device_type: &spec.device_type,
                    node_name: &self.node_name,
                    rules: rules.as_ref().map_err(Clone::clone),
                    allowlist: &self.allowlist,
                };
                (name.clone(), build(&input, &self.inventory, now))
            })
            .collect()
    }

    /// What each device plugin offers, by resource name (`hsm.j5t.io/<type>`): the union of
    /// the devices of every served HSMDevice of that type.
    pub fn plugin_devices(&self) -> BTreeMap<String, Vec<PluginDevice>> {
        let mut plugins: BTreeMap<String, BTreeMap<String, PluginDevice>> = BTreeMap::new();
        for (_, spec, rules) in self.served() {
            let Ok(rules) = rules else { continue };
            let resource = hsm_api::names::resource_name(&spec.device_type);
            let offered = plugins.entry(resource).or_default();
            for (_, tracked) in selected(&rules, &self.allowlist, &self.inventory) {
                let device = &tracked.device;
                let id = plugin_device_id(&self.node_name, &device.dev_node, &device.serial);
                offered.entry(id.clone()).or_insert_with(|| PluginDevice {
                    id,
                    dev_node: device.dev_node.clone(),
                    serial: device.serial.clone(),
                    healthy: tracked.available,
                    permissions: rules.permissions.clone(),
                });
            }
        }
        plugins
            .into_iter()
            .map(|(resource, devices)| (resource, devices.into_values().collect()))
            .collect()
    }
}

/// See [`PluginDevice::id`].
pub fn plugin_device_id(node: &str, dev_node: &str, serial: &str) -> String {
    if serial.is_empty() {
        format!("{node}-{}", dev_node.replace('/', "_"))
    } else {
        format!("{node}-{serial}")
    }
}

/// The suffix of the `HSM_DEVICE_<ID>` / `HSM_SERIAL_<ID>` variables for a device ID:
/// upper-cased, every character but letters and digits an `_`.
pub fn env_suffix(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}
