//! Rust types, clients and servers generated from the project's gRPC contracts.
//!
//! The `.proto` files live in the workspace's `proto/` directory and are compiled at build
//! time with `protox` and `tonic-prost-build` (no `protoc` binary needed):
//!
//! - [`hsm::v1`]: the agent service `hsm.v1.HSMAgent`, wire-compatible with the Go
//!   operator's ten RPCs, plus the index snapshot (`GetIndex`) and change feed
//!   (`WatchChanges`). Client: [`hsm::v1::hsm_agent_client::HsmAgentClient`]; server:
//!   [`hsm::v1::hsm_agent_server::HsmAgentServer`] around an implementation of
//!   [`hsm::v1::hsm_agent_server::HsmAgent`].
//! - [`deviceplugin::v1beta1`]: the kubelet device plugin API (`Registration` served by the
//!   kubelet, `DevicePlugin` served by a plugin).
//!
//! Messages that carry secret values or PINs ([`hsm::v1::SecretData`],
//! [`hsm::v1::ChangePinRequest`]) have a `Debug` that prints key names and sizes only, so a
//! request logged with `{:?}` leaks nothing. Maps in `hsm.v1` are `BTreeMap`s: iteration,
//! encoding and `Debug` are in key order.

/// Protobuf package `hsm`.
pub mod hsm {
    /// Protobuf package `hsm.v1`: the agent service `HSMAgent` and its messages.
    #[allow(clippy::all, clippy::pedantic, clippy::nursery)]
    pub mod v1 {
        tonic::include_proto!("hsm.v1");

        /// Full gRPC method names (`/hsm.v1.HSMAgent/<Rpc>`) of every RPC of the service, in
        /// declaration order: the Go operator's ten, then `GetIndex` and `WatchChanges`.
        pub const HSM_AGENT_METHODS: [&str; 12] = [
            "/hsm.v1.HSMAgent/GetInfo",
            "/hsm.v1.HSMAgent/ReadSecret",
            "/hsm.v1.HSMAgent/WriteSecret",
            "/hsm.v1.HSMAgent/ReadMetadata",
            "/hsm.v1.HSMAgent/DeleteSecret",
            "/hsm.v1.HSMAgent/ListSecrets",
            "/hsm.v1.HSMAgent/GetChecksum",
            "/hsm.v1.HSMAgent/IsConnected",
            "/hsm.v1.HSMAgent/Health",
            "/hsm.v1.HSMAgent/ChangePIN",
            "/hsm.v1.HSMAgent/GetIndex",
            "/hsm.v1.HSMAgent/WatchChanges",
        ];

        impl std::fmt::Debug for SecretData {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut map = f.debug_map();
                for (key, value) in &self.data {
                    map.entry(key, &format_args!("<{} bytes redacted>", value.len()));
                }
                map.finish()
            }
        }

        impl std::fmt::Debug for ChangePinRequest {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("ChangePinRequest")
                    .field("old_pin", &"<redacted>")
                    .field("new_pin", &"<redacted>")
                    .finish()
            }
        }
    }
}

pub use hsm::v1;

/// The kubelet's device plugin API.
pub mod deviceplugin {
    /// Protobuf package `v1beta1`: services `Registration` (served by the kubelet) and
    /// `DevicePlugin` (served by a device plugin), as the Kubernetes project publishes them.
    #[allow(clippy::all, clippy::pedantic, clippy::nursery)]
    pub mod v1beta1 {
        tonic::include_proto!("v1beta1");

        /// The API version a plugin sends in `RegisterRequest.version`.
        pub const VERSION: &str = "v1beta1";
        /// The directory (on the node) holding the kubelet's and the plugins' sockets.
        pub const DEVICE_PLUGIN_PATH: &str = "/var/lib/kubelet/device-plugins/";
        /// The kubelet's registration socket, inside [`DEVICE_PLUGIN_PATH`].
        pub const KUBELET_SOCKET: &str = "/var/lib/kubelet/device-plugins/kubelet.sock";
        /// `Device.health` of a usable device.
        pub const HEALTHY: &str = "Healthy";
        /// `Device.health` of a device that must not be allocated.
        pub const UNHEALTHY: &str = "Unhealthy";
    }
}
