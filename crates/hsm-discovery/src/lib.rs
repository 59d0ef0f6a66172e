//! Discovery: the DaemonSet side of hsm-secrets-operator. It finds USB HSMs from sysfs (no
//! libudev, no `/run/udev`: it runs from a scratch image and on Talos Linux), follows hotplug
//! through the kernel's uevents, matches devices against every HSMDevice's rules, writes one
//! report per HSMDevice on its own pod (`hsm.j5t.io/device-report.<device>`), and serves the
//! kubelet device plugin so agent pods get the device node without privileges.
//!
//! A pure core with ports at the edges:
//!
//! - [`usb`], [`uevent::parse`], [`allowlist`], [`rules`], [`inventory`], [`report`] and
//!   [`core`] are plain functions and structs over values;
//! - [`sysfs::SysfsSource`] and [`uevent::UeventSource`] are the ports to the machine
//!   ([`sysfs::DirSysfs`] reads a sysfs tree, [`uevent::NetlinkUevents`] a
//!   `NETLINK_KOBJECT_UEVENT` socket);
//! - [`kube`], [`plugin`], [`daemon`] and [`run`] are the shells: the Kubernetes API, the
//!   kubelet's gRPC, the loop and the binary's start.

pub mod allowlist;
pub mod cli;
pub mod core;
pub mod daemon;
pub mod fuzzing;
pub mod inventory;
pub mod kube;
pub mod plugin;
pub mod report;
pub mod rules;
pub mod run;
pub mod sysfs;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod uevent;
pub mod usb;

/// An error and its sources, one line: `outer: inner: innermost`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        line.push_str(": ");
        line.push_str(&inner.to_string());
        source = inner.source();
    }
    line
}
