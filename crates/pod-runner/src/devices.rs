//! The node's devices: what a container that asks for an extended resource gets, as a
//! kubelet gives it what the resource's device plugin answered to `Allocate` (a
//! `ContainerAllocateResponse`: environment variables, mounts, device nodes).
//!
//! The runner does not speak the device-plugin protocol: it is told, per resource, the one
//! allocation the node has ([`RunnerConfig::devices`](crate::RunnerConfig::devices)). A
//! container whose `resources.limits` ask for at least one unit of a configured resource
//! gets that allocation's variables (before its own `env`, which may override them, as
//! from a kubelet) and mounts (a container runtime mounts them; for a local process their
//! container paths in arguments and environment are rewritten to the host paths, as for
//! volumes). Device nodes are not passed: the runner never runs a container with access to
//! this machine's devices. A resource the runner was not told about is ignored (a kubelet
//! would keep the pod Pending).

use k8s_openapi::api::core::v1::Container;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A host path mounted into a container by an allocation (`Mount` of the device-plugin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMount {
    /// The path on this machine.
    pub host_path: PathBuf,
    /// Where the container sees it.
    pub container_path: String,
    /// Whether it is mounted read-only.
    pub read_only: bool,
}

/// What a container gets for one resource (a `ContainerAllocateResponse`, without device
/// nodes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceAllocation {
    /// Environment variables.
    pub envs: BTreeMap<String, String>,
    /// Mounts.
    pub mounts: Vec<DeviceMount>,
}

impl DeviceAllocation {
    /// An allocation with nothing in it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a variable.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.insert(name.into(), value.into());
        self
    }

    /// Adds a read-write mount of `host_path` at `container_path`.
    pub fn with_mount(
        mut self,
        host_path: impl Into<PathBuf>,
        container_path: impl Into<String>,
    ) -> Self {
        self.mounts.push(DeviceMount {
            host_path: host_path.into(),
            container_path: container_path.into(),
            read_only: false,
        });
        self
    }
}

/// The node's devices, by extended resource name (`hsm.j5t.io/picohsm`).
#[derive(Debug, Clone, Default)]
pub struct Devices {
    by_resource: BTreeMap<String, DeviceAllocation>,
}

impl Devices {
    /// No devices.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets what a container asking for `resource` gets.
    pub fn insert(&mut self, resource: impl Into<String>, allocation: DeviceAllocation) {
        self.by_resource.insert(resource.into(), allocation);
    }

    /// Sets what a container asking for `resource` gets.
    pub fn with(mut self, resource: impl Into<String>, allocation: DeviceAllocation) -> Self {
        self.insert(resource, allocation);
        self
    }

    /// The allocations of the resources `container` asks for (in `resources.limits`, where
    /// Kubernetes requires extended resources to be; a quantity of zero asks for nothing),
    /// in resource-name order.
    pub fn allocated(&self, container: &Container) -> Vec<&DeviceAllocation> {
        let Some(limits) = container.resources.as_ref().and_then(|r| r.limits.as_ref()) else {
            return Vec::new();
        };
        limits
            .iter()
            .filter(|(_, quantity)| !is_zero(&quantity.0))
            .filter_map(|(resource, _)| self.by_resource.get(resource))
            .collect()
    }
}

/// Whether a quantity is zero (`0`, `0.0`, `0k`): extended resources are whole numbers.
fn is_zero(quantity: &str) -> bool {
    let digits = quantity.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    digits.parse::<f64>().is_ok_and(|v| v == 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(limits: serde_json::Value) -> Container {
        serde_json::from_value(json!({
            "name": "agent",
            "resources": {"limits": limits, "requests": {"hsm.j5t.io/other": "1"}},
        }))
        .unwrap()
    }

    fn devices() -> Devices {
        Devices::new()
            .with(
                "hsm.j5t.io/picohsm",
                DeviceAllocation::new()
                    .with_env("SOFTHSM2_CONF", "/etc/softhsm2.conf")
                    .with_mount("/node/tokens", "/var/lib/softhsm/tokens"),
            )
            .with(
                "hsm.j5t.io/other",
                DeviceAllocation::new().with_env("OTHER", "1"),
            )
    }

    #[test]
    fn a_container_asking_for_a_resource_gets_its_allocation() {
        let c = container(json!({"cpu": "500m", "hsm.j5t.io/picohsm": "1"}));
        let got = devices();
        let got = got.allocated(&c);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].envs["SOFTHSM2_CONF"], "/etc/softhsm2.conf");
        assert_eq!(
            got[0].mounts,
            [DeviceMount {
                host_path: "/node/tokens".into(),
                container_path: "/var/lib/softhsm/tokens".into(),
                read_only: false,
            }]
        );
    }

    #[test]
    fn requests_alone_zero_quantities_and_unknown_resources_get_nothing() {
        let d = devices();
        // `hsm.j5t.io/other` is only in requests.
        assert!(d.allocated(&container(json!({"cpu": "1"}))).is_empty());
        assert!(
            d.allocated(&container(json!({"hsm.j5t.io/picohsm": "0"})))
                .is_empty()
        );
        assert!(
            d.allocated(&container(json!({"hsm.j5t.io/unknown": "1"})))
                .is_empty()
        );
        let bare: Container = serde_json::from_value(json!({"name": "x"})).unwrap();
        assert!(d.allocated(&bare).is_empty());
    }
}
