//! Kernel uevents over a real `NETLINK_KOBJECT_UEVENT` socket, in a private network namespace
//! so nothing on the host sees the synthetic events: a payload handed to the kernel (as udev's
//! `udevadm trigger` path and container runtimes do) comes back as a broadcast from port 0
//! and is parsed; the same bytes multicast straight from a user-space socket are dropped, so
//! a process in the namespace cannot forge hotplug events; and the daemon, on such a socket,
//! reports a device the kernel says was removed. Where no network namespace can be made, the
//! source contract is checked over a Unix socketpair instead.

mod common;

use common::cluster::{NODE, NS, POD, cluster, put_device, summary, until};
use hsm_discovery::allowlist::Allowlist;
use hsm_discovery::daemon::{DaemonConfig, run};
use hsm_discovery::kube::PodIdentity;
use hsm_discovery::sysfs::DirSysfs;
use hsm_discovery::testing::{copy_tree, fixture_sysfs, unplug};
use hsm_discovery::uevent::{
    DatagramUevents, DeviceEvent, NetlinkUevents, UeventSource, parse, payload,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_KOBJECT_UEVENT};
use std::time::Duration;

const DEVPATH: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-7/test-netlink";

fn event(action: &str, seq: &str) -> Vec<u8> {
    payload(
        action,
        DEVPATH,
        &[
            ("SUBSYSTEM", "usb"),
            ("DEVTYPE", "usb_device"),
            ("DEVNAME", "bus/usb/001/042"),
            ("SEQNUM", seq),
        ],
    )
}

/// A netlink message to the kernel carrying `payload` (nlmsghdr, NLM_F_REQUEST).
fn to_kernel(payload: &[u8]) -> Vec<u8> {
    let len = (16 + payload.len()) as u32;
    let mut message = Vec::new();
    message.extend_from_slice(&len.to_ne_bytes());
    message.extend_from_slice(&0x10_u16.to_ne_bytes()); // the first non-control type
    message.extend_from_slice(&1_u16.to_ne_bytes()); // NLM_F_REQUEST
    message.extend_from_slice(&1_u32.to_ne_bytes());
    message.extend_from_slice(&0_u32.to_ne_bytes());
    message.extend_from_slice(payload);
    message
}

/// Receives until an event for [`DEVPATH`] arrives (the host's own uevents may be broadcast
/// into the namespace too), or the timeout.
async fn next_ours(source: &mut impl UeventSource, within: Duration) -> Option<DeviceEvent> {
    tokio::time::timeout(within, async {
        loop {
            let payload = source.recv().await.expect("receive");
            if let Ok(Some(event)) = parse(&payload) {
                let (DeviceEvent::Present { devpath } | DeviceEvent::Gone { devpath }) = &event;
                if devpath == DEVPATH {
                    return event;
                }
            }
        }
    })
    .await
    .ok()
}

async fn over_netlink() {
    let mut uevents = NetlinkUevents::open().expect("a uevent socket");
    let mut sender = Socket::new(NETLINK_KOBJECT_UEVENT).unwrap();
    sender.bind_auto().unwrap();
    let kernel = SocketAddr::new(0, 0);

    // Straight to the multicast group from user space: not from the kernel, dropped.
    sender
        .send_to(&event("add", "1"), &SocketAddr::new(0, 1), 0)
        .unwrap();
    assert_eq!(
        next_ours(&mut uevents, Duration::from_millis(300)).await,
        None,
        "a forged event was accepted"
    );

    // Through the kernel: broadcast to the namespace from port 0.
    sender
        .send_to(&to_kernel(&event("add", "2")), &kernel, 0)
        .unwrap();
    assert_eq!(
        next_ours(&mut uevents, Duration::from_secs(5)).await,
        Some(DeviceEvent::Present {
            devpath: DEVPATH.into()
        })
    );
    sender
        .send_to(&to_kernel(&event("remove", "3")), &kernel, 0)
        .unwrap();
    assert_eq!(
        next_ours(&mut uevents, Duration::from_secs(5)).await,
        Some(DeviceEvent::Gone {
            devpath: DEVPATH.into()
        })
    );
}

async fn over_socketpair() {
    let (ours, theirs) = tokio::net::UnixDatagram::pair().unwrap();
    let mut uevents = DatagramUevents::new(ours);
    theirs.send(&event("add", "1")).await.unwrap();
    assert_eq!(
        next_ours(&mut uevents, Duration::from_secs(5)).await,
        Some(DeviceEvent::Present {
            devpath: DEVPATH.into()
        })
    );
}

/// The daemon on a real uevent socket: a Pico HSM unplugged from the fixture tree, and the
/// kernel's `remove` for it, show in the pod's report.
async fn daemon_over_netlink() {
    let (_emulator, client) = cluster().await;
    put_device(
        &client,
        "pico",
        serde_json::json!({"deviceType": "PicoHSM",
            "discovery": {"usb": [{"vendorId": "2e8a", "productId": "10fd"}]}}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sys");
    copy_tree(&fixture_sysfs(), &root).unwrap();
    let config = DaemonConfig {
        identity: PodIdentity {
            namespace: NS.into(),
            pod_name: POD.into(),
            node_name: NODE.into(),
        },
        sync_interval: Duration::from_secs(3600),
        grace_period: Duration::from_secs(3600),
        report_refresh: Duration::from_secs(60),
        plugins: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(run(
        client.clone(),
        config,
        Allowlist::known_hsms(),
        DirSysfs::new(&root),
        Some(NetlinkUevents::open().unwrap()),
        async {
            let _ = stopped.await;
        },
    ));
    let pico = (
        "DC6A33145E23A42A".to_owned(),
        "/dev/bus/usb/001/015".to_owned(),
        true,
    );
    until(&client, "the first report", |r| {
        summary(r, "pico") == [pico.clone()]
    })
    .await;

    unplug(&root, "1-1.2").unwrap();
    let mut sender = Socket::new(NETLINK_KOBJECT_UEVENT).unwrap();
    sender.bind_auto().unwrap();
    let removed = payload(
        "remove",
        "/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.2",
        &[
            ("SUBSYSTEM", "usb"),
            ("DEVTYPE", "usb_device"),
            ("SEQNUM", "9"),
        ],
    );
    sender
        .send_to(&to_kernel(&removed), &SocketAddr::new(0, 0), 0)
        .unwrap();
    let lost = (pico.0.clone(), pico.1.clone(), false);
    until(&client, "the Pico HSM lost", |r| {
        summary(r, "pico") == [lost.clone()]
    })
    .await;
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
}

/// Runs `test` on a thread of its own in a new network namespace (unshare(CLONE_NEWNET)
/// affects the calling thread only, so every socket the test opens is in it), or `fallback`
/// where no namespace can be made.
fn in_private_netns<F, G>(test: fn() -> F, fallback: fn() -> G)
where
    F: std::future::Future<Output = ()> + 'static,
    G: std::future::Future<Output = ()> + 'static,
{
    std::thread::spawn(move || {
        let private = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        match private {
            Ok(()) => runtime.block_on(test()),
            Err(error) => {
                eprintln!("no private network namespace ({error}); checking over a socketpair");
                runtime.block_on(fallback());
            }
        }
    })
    .join()
    .expect("the test thread");
}

#[test]
fn the_daemon_follows_kernel_uevents() {
    in_private_netns(daemon_over_netlink, over_socketpair);
}

#[test]
fn kernel_uevents_in_a_private_network_namespace() {
    in_private_netns(over_netlink, over_socketpair);
}

#[tokio::test]
async fn the_datagram_source_carries_payloads_unchanged() {
    over_socketpair().await;
}
