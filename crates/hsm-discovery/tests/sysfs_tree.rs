//! The sysfs reader on the fixture tree (shaped like a real /sys, symlinks included): every
//! device parsed with the properties the Go reports carry, interfaces skipped, and a tree
//! with hostile entries read without a panic, losing only the bad entries.

use hsm_discovery::sysfs::{DirSysfs, SysfsError, SysfsSource, usb_devices};
use hsm_discovery::testing::{FIXTURE_DEVICES, copy_tree, fixture_sysfs, unplug};
use std::path::Path;

#[test]
fn the_fixture_tree_gives_every_device_and_no_interface() {
    let devices = usb_devices(&DirSysfs::new(fixture_sysfs())).unwrap();
    let found: Vec<_> = devices
        .iter()
        .map(|d| {
            (
                d.kernel_name.as_str(),
                d.vendor_id.as_str(),
                d.product_id.as_str(),
                d.serial.as_str(),
            )
        })
        .collect();
    let mut want = FIXTURE_DEVICES.to_vec();
    want.sort();
    let mut found_sorted = found.clone();
    found_sorted.sort();
    assert_eq!(found_sorted, want);

    let pico = devices.iter().find(|d| d.kernel_name == "1-1.2").unwrap();
    assert_eq!(
        pico.devpath,
        "/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.2"
    );
    assert_eq!(pico.dev_node, "/dev/bus/usb/001/015");
    let p = &pico.properties;
    for (key, value) in [
        ("ID_VENDOR_ID", "2e8a"),
        ("ID_MODEL_ID", "10fd"),
        ("ID_SERIAL_SHORT", "DC6A33145E23A42A"),
        ("ID_VENDOR", "Pol_Henarejos"),
        ("ID_MODEL", "Pico_Key"),
        ("DEVNAME", "/dev/bus/usb/001/015"),
        ("DEVTYPE", "usb_device"),
        ("SUBSYSTEM", "usb"),
        ("BUSNUM", "001"),
        ("DEVNUM", "015"),
        ("PRODUCT", "2e8a/10fd/100"),
    ] {
        assert_eq!(p.get(key).map(String::as_str), Some(value), "{key}");
    }
    let yubikey = devices.iter().find(|d| d.kernel_name == "1-4").unwrap();
    assert_eq!(yubikey.serial, "");
    assert!(!yubikey.properties.contains_key("ID_SERIAL_SHORT"));
}

#[test]
fn a_device_is_read_by_its_uevent_devpath() {
    let sysfs = DirSysfs::new(fixture_sysfs());
    let raw = sysfs
        .device("/devices/pci0000:00/0000:00:14.0/usb1/1-2")
        .unwrap()
        .unwrap();
    assert_eq!(raw.kernel_name, "1-2");
    assert!(
        sysfs
            .device("/devices/pci0000:00/nothing")
            .unwrap()
            .is_none()
    );
    for escape in ["/../../etc", "/devices/../../x", "", "/"] {
        assert!(
            matches!(sysfs.device(escape), Err(SysfsError::BadDevpath(_))),
            "{escape:?}"
        );
    }
}

#[test]
fn hostile_entries_are_skipped_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sys");
    copy_tree(&fixture_sysfs(), &root).unwrap();
    let devices = root.join("bus/usb/devices");
    let pci = root.join("devices/pci0000:00/0000:00:14.0/usb1");
    // A link leaving the tree.
    std::os::unix::fs::symlink("/etc", devices.join("1-9")).unwrap();
    // A dangling link.
    std::os::unix::fs::symlink("../../../devices/gone", devices.join("1-8")).unwrap();
    // Malformed attributes: the Nitrokey's vendor id, the SmartCard-HSM's device number.
    std::fs::write(pci.join("1-3/idVendor"), "not hex\n").unwrap();
    std::fs::write(pci.join("1-2/devnum"), "99999\n").unwrap();
    // A huge and a binary attribute on the YubiKey: the serial is binary, product huge.
    std::fs::write(pci.join("1-4/serial"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    std::fs::write(pci.join("1-4/product"), vec![b'x'; 1 << 20]).unwrap();
    // A regular file among the links.
    std::fs::write(devices.join("junk"), "x").unwrap();

    let found: Vec<String> = usb_devices(&DirSysfs::new(&root))
        .unwrap()
        .into_iter()
        .map(|d| d.kernel_name)
        .collect();
    assert_eq!(found, ["1-1", "1-1.2", "usb1"]);
}

#[test]
fn a_missing_tree_is_an_error_not_a_panic() {
    let err = usb_devices(&DirSysfs::new(Path::new("/nonexistent-sysfs"))).unwrap_err();
    assert!(matches!(err, SysfsError::List { .. }));
}

#[test]
fn unplugging_and_plugging_elsewhere_moves_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sys");
    copy_tree(&fixture_sysfs(), &root).unwrap();
    let pico = unplug(&root, "1-1.2").unwrap();
    let names = |root: &Path| -> Vec<String> {
        usb_devices(&DirSysfs::new(root))
            .unwrap()
            .into_iter()
            .map(|d| d.kernel_name)
            .collect()
    };
    assert!(!names(&root).contains(&"1-1.2".to_owned()));
    let devpath = pico.plug_as(&root, "1-1.4", 21).unwrap();
    assert_eq!(devpath, "/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.4");
    let moved = usb_devices(&DirSysfs::new(&root))
        .unwrap()
        .into_iter()
        .find(|d| d.kernel_name == "1-1.4")
        .unwrap();
    assert_eq!(moved.serial, "DC6A33145E23A42A");
    assert_eq!(moved.dev_node, "/dev/bus/usb/001/021");
    assert_eq!(moved.properties["DEVNAME"], "/dev/bus/usb/001/021");
    assert!(root.join("bus/usb/devices/1-1.4:1.0").exists());
}
