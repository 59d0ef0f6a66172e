//! The uevent port: hotplug notices from the kernel. [`NetlinkUevents`] listens on a
//! `NETLINK_KOBJECT_UEVENT` socket (the kernel's own broadcast, group 1: no udev daemon
//! needed); [`DatagramUevents`] reads the same payloads from a Unix datagram socket.
//! [`parse`] turns a payload into a [`DeviceEvent`] — a pure function over untrusted bytes.

use kobject_uevent::{ActionType, UEvent};
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket, protocols};
use std::future::Future;

/// Longer payloads are not kernel uevents (the kernel's buffer is 2 KiB).
pub const MAX_PAYLOAD_LEN: usize = 8192;
/// The netlink multicast group of kernel uevents (udev's rebroadcast is group 2).
pub const KERNEL_GROUP: u32 = 1;

/// What a uevent means for discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A USB device appeared or was bound to its driver: read it from sysfs.
    Present {
        /// Its devpath.
        devpath: String,
    },
    /// A USB device went away or was unbound from its driver.
    Gone {
        /// Its devpath.
        devpath: String,
    },
}

/// Why a payload is not a uevent discovery uses.
#[derive(Debug, thiserror::Error)]
pub enum UeventError {
    /// Longer than [`MAX_PAYLOAD_LEN`].
    #[error("a uevent of {0} bytes is too long")]
    TooLong(usize),
    /// Not the kernel's format.
    #[error("not a kernel uevent")]
    Malformed(#[source] kobject_uevent::Error),
    /// The header (`action@devpath`) disagrees with the `ACTION`/`DEVPATH` fields.
    #[error("the uevent header does not match its fields")]
    Inconsistent,
}

/// Parses a kernel uevent payload (`add@/devices/…\0ACTION=add\0DEVPATH=…\0…`). `Ok(None)`
/// for a well-formed event discovery ignores (another subsystem, a USB interface, `change`).
pub fn parse(payload: &[u8]) -> Result<Option<DeviceEvent>, UeventError> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(UeventError::TooLong(payload.len()));
    }
    let event = UEvent::from_netlink_packet(payload).map_err(UeventError::Malformed)?;
    let header = payload.split(|b| *b == 0).next().unwrap_or_default();
    let devpath = event.devpath.to_string_lossy().into_owned();
    if let Some((action, path)) = std::str::from_utf8(header)
        .ok()
        .and_then(|h| h.split_once('@'))
        && (event.env.get("ACTION").map(String::as_str) != Some(action) || path != devpath)
    {
        return Err(UeventError::Inconsistent);
    }
    Ok(usb_device_event(&event, devpath))
}

fn usb_device_event(event: &UEvent, devpath: String) -> Option<DeviceEvent> {
    if event.subsystem != "usb"
        || event.env.get("DEVTYPE").map(String::as_str) != Some("usb_device")
    {
        return None;
    }
    match event.action {
        ActionType::Add | ActionType::Bind => Some(DeviceEvent::Present { devpath }),
        ActionType::Remove | ActionType::Unbind => Some(DeviceEvent::Gone { devpath }),
        _ => None,
    }
}

/// Why a source could not give the next payload.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The kernel dropped events (the socket's buffer overflowed): re-scan everything.
    #[error("uevents were lost (receive buffer overflow)")]
    Overflow,
    /// The socket failed.
    #[error("cannot receive uevents")]
    Io(#[source] std::io::Error),
}

impl From<std::io::Error> for RecvError {
    fn from(error: std::io::Error) -> Self {
        if error.raw_os_error() == Some(nix::libc::ENOBUFS) {
            RecvError::Overflow
        } else {
            RecvError::Io(error)
        }
    }
}

/// A source of raw uevent payloads.
pub trait UeventSource: Send {
    /// The next payload.
    fn recv(&mut self) -> impl Future<Output = Result<Vec<u8>, RecvError>> + Send;
}

/// Kernel uevents from a netlink socket, in the network namespace of the thread that opens
/// it. Only messages sent by the kernel (port 0) are passed on: another process in the
/// namespace cannot forge hotplug events.
pub struct NetlinkUevents {
    socket: TokioSocket,
}

impl NetlinkUevents {
    /// Opens and binds the socket to the kernel's uevent group. Needs a Tokio runtime.
    pub fn open() -> std::io::Result<Self> {
        let mut socket = TokioSocket::new(protocols::NETLINK_KOBJECT_UEVENT)?;
        // Hotplug storms (a hub with many devices) must not overflow the buffer.
        let _ = socket.socket_ref().set_rx_buf_sz(1 << 20);
        socket
            .socket_mut()
            .bind(&SocketAddr::new(0, 1 << (KERNEL_GROUP - 1)))?;
        Ok(NetlinkUevents { socket })
    }
}

impl UeventSource for NetlinkUevents {
    async fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        loop {
            let (payload, from) = self.socket.recv_from_full().await?;
            if from.port_number() == 0 {
                return Ok(payload);
            }
            tracing::debug!(
                port = from.port_number(),
                "ignoring a uevent not sent by the kernel"
            );
        }
    }
}

/// Payloads from a Unix datagram socket: for tests where no netlink socket can be had, and
/// for relaying uevents from elsewhere.
pub struct DatagramUevents {
    socket: tokio::net::UnixDatagram,
}

impl DatagramUevents {
    /// Reads from `socket`.
    pub fn new(socket: tokio::net::UnixDatagram) -> Self {
        DatagramUevents { socket }
    }
}

impl UeventSource for DatagramUevents {
    async fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        let mut buf = vec![0; MAX_PAYLOAD_LEN + 1];
        let n = self.socket.recv(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// A kernel-format payload, as the kernel sends it: `action@devpath`, then `KEY=value`
/// fields, NUL-separated. For tests and fuzz seeds.
pub fn payload(action: &str, devpath: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0").into_bytes();
    for (key, value) in fields {
        out.extend_from_slice(format!("{key}={value}\0").as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PICO: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.2";

    fn usb(action: &str, devtype: &str) -> Vec<u8> {
        payload(
            action,
            PICO,
            &[
                ("SUBSYSTEM", "usb"),
                ("DEVTYPE", devtype),
                ("DEVNAME", "bus/usb/001/015"),
                ("PRODUCT", "2e8a/10fd/100"),
                ("SEQNUM", "4711"),
            ],
        )
    }

    #[test]
    fn usb_device_actions() {
        let present = Some(DeviceEvent::Present {
            devpath: PICO.into(),
        });
        let gone = Some(DeviceEvent::Gone {
            devpath: PICO.into(),
        });
        assert_eq!(parse(&usb("add", "usb_device")).unwrap(), present);
        assert_eq!(parse(&usb("bind", "usb_device")).unwrap(), present);
        assert_eq!(parse(&usb("remove", "usb_device")).unwrap(), gone);
        assert_eq!(parse(&usb("unbind", "usb_device")).unwrap(), gone);
        assert_eq!(parse(&usb("change", "usb_device")).unwrap(), None);
        assert_eq!(parse(&usb("add", "usb_interface")).unwrap(), None);
    }

    #[test]
    fn a_recorded_kernel_payload() {
        // As `udevadm monitor --kernel --property` shows a Pico HSM plugged in.
        let recorded = b"add@/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.2\0ACTION=add\0\
DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.2\0SUBSYSTEM=usb\0MAJOR=189\0MINOR=14\0\
DEVNAME=bus/usb/001/015\0DEVTYPE=usb_device\0PRODUCT=2e8a/10fd/100\0TYPE=0/0/0\0BUSNUM=001\0\
DEVNUM=015\0SEQNUM=5120\0";
        assert_eq!(
            parse(recorded).unwrap(),
            Some(DeviceEvent::Present {
                devpath: PICO.into()
            })
        );
    }

    #[test]
    fn hostile_payloads_are_errors() {
        assert!(matches!(
            parse(&vec![b'a'; MAX_PAYLOAD_LEN + 1]),
            Err(UeventError::TooLong(_))
        ));
        assert!(parse(b"libudev\0\xfe\xed\xca\xfe").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"add@/x\0ACTION=explode\0DEVPATH=/x\0SUBSYSTEM=usb\0SEQNUM=1\0").is_err());
        let mut truncated = usb("add", "usb_device");
        truncated.truncate(40);
        assert!(parse(&truncated).is_err());
        let lying = payload(
            "add",
            "/devices/a",
            &[
                ("SUBSYSTEM", "usb"),
                ("DEVTYPE", "usb_device"),
                ("SEQNUM", "1"),
            ],
        );
        let lying = [
            b"remove@/devices/b".as_slice(),
            &lying[lying.iter().position(|b| *b == 0).unwrap()..],
        ]
        .concat();
        assert!(matches!(parse(&lying), Err(UeventError::Inconsistent)));
    }
}
