//! The parsers as fuzz targets (`cargo xtask fuzz discovery`) and the randomized tests drive
//! them: arbitrary bytes as sysfs attributes and as uevent payloads. Nothing may panic, and
//! what a parser accepts must hold its invariants all the way into a report.

use crate::allowlist::Allowlist;
use crate::core::Discovery;
use crate::sysfs::{ATTRIBUTES, MemorySysfs};
use crate::usb::{RawDevice, UsbDevice, parse_uevent_file};
use k8s_openapi::jiff::Timestamp;

/// Splits `bytes` at NUL into the attribute files of one device (an empty piece: the file is
/// absent), parses it, and puts it through a scan and a report.
pub fn sysfs_attributes(bytes: &[u8]) {
    let raw = raw_device(bytes);
    let _ = parse_uevent_file(raw.attributes.get("uevent").map(Vec::as_slice));
    if let Ok(device) = UsbDevice::parse(&raw) {
        check(&device);
    }
    let sysfs = MemorySysfs { devices: vec![raw] };
    let mut core = discovery();
    let _ = core.rescan(Timestamp::UNIX_EPOCH, &sysfs);
    report(&core);
}

/// Parses `bytes` as a uevent and, when it is one, applies it against a device built from the
/// same bytes.
pub fn uevent(bytes: &[u8]) {
    let Ok(Some(event)) = crate::uevent::parse(bytes) else {
        return;
    };
    let mut raw = raw_device(bytes);
    let (crate::uevent::DeviceEvent::Present { devpath }
    | crate::uevent::DeviceEvent::Gone { devpath }) = &event;
    assert!(!devpath.is_empty());
    raw.devpath = devpath.clone();
    let sysfs = MemorySysfs { devices: vec![raw] };
    let mut core = discovery();
    core.apply(Timestamp::UNIX_EPOCH, event, &sysfs);
    report(&core);
}

fn raw_device(bytes: &[u8]) -> RawDevice {
    let attributes = ATTRIBUTES
        .iter()
        .zip(bytes.split(|b| *b == 0))
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
        .collect();
    RawDevice {
        kernel_name: "1-1".into(),
        devpath: "/devices/pci0000:00/usb1/1-1".into(),
        attributes,
    }
}

fn check(device: &UsbDevice) {
    for id in [&device.vendor_id, &device.product_id] {
        assert!(
            id.len() == 4
                && id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
    assert!(device.busnum > 0 && device.devnum > 0);
    assert_eq!(
        device.dev_node,
        format!("/dev/bus/usb/{:03}/{:03}", device.busnum, device.devnum)
    );
    assert!(!device.serial.chars().any(char::is_control));
}

fn discovery() -> Discovery {
    let mut core = Discovery::new("node-1", Allowlist::known_hsms());
    let spec: hsm_api::device::HSMDeviceSpec = serde_json::from_value(serde_json::json!({
        "deviceType": "Generic",
        "discovery": {"usb": [{"vendorId": "", "productId": ""}]}
    }))
    .expect("a valid spec");
    core.set_devices([("any".to_owned(), spec)].into_iter().collect());
    core
}

fn report(core: &Discovery) {
    for report in core.reports(Timestamp::UNIX_EPOCH).values() {
        let json = serde_json::to_string(report).expect("a report serialises");
        let back: hsm_api::report::PodDiscoveryReport =
            serde_json::from_str(&json).expect("a report parses back");
        assert!(crate::report::same_content(report, &back));
    }
    let _ = core.plugin_devices();
}
