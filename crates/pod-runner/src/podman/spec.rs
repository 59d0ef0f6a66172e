//! Pure: a planned container (or a pod's infra container) → the Docker API's create body.

use crate::plan::{ContainerPlan, Program, Security};
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, NetworkingConfig,
};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// The label every container and network of a Podman pod runner carries; its value is the
/// runner's id ([`super::PodmanConfig::id`]).
pub const RUNNER_LABEL: &str = "io.hsm-secrets-operator.pod-runner";
/// The label naming a container's pod, `namespace/name`.
pub const POD_LABEL: &str = "io.hsm-secrets-operator.pod";
/// The label naming a container's container in the pod spec ([`INFRA`] for the infra
/// container).
pub const CONTAINER_LABEL: &str = "io.hsm-secrets-operator.container";
/// The [`CONTAINER_LABEL`] of a pod's infra container.
pub const INFRA: &str = "POD";

/// The infra container: the pause image on the runner's network at the pod's address,
/// holding the network namespace every container of the pod joins.
pub fn infra(
    pause_image: &str,
    network: &str,
    ip: Ipv4Addr,
    hostname: &str,
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    let endpoint = EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(ip.to_string()),
            ..EndpointIpamConfig::default()
        }),
        ..EndpointSettings::default()
    };
    ContainerCreateBody {
        image: Some(pause_image.to_owned()),
        hostname: Some(hostname.to_owned()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_owned()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..HostConfig::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network.to_owned(), endpoint)])),
        }),
        ..ContainerCreateBody::default()
    }
}

/// A container of the pod, in the infra container's network namespace. None when the plan
/// is for a local executable.
pub fn container(
    plan: &ContainerPlan,
    infra_id: &str,
    labels: HashMap<String, String>,
) -> Option<ContainerCreateBody> {
    let Program::Image { image, command } = &plan.program else {
        return None;
    };
    // Kubernetes: `command` replaces the image's entrypoint (and its CMD with it), `args`
    // replaces its CMD.
    let cmd = match (command, plan.args.is_empty()) {
        (Some(_), _) | (None, false) => Some(plan.args.clone()),
        (None, true) => None,
    };
    let binds = plan
        .mounts
        .iter()
        .map(|m| {
            let mode = if m.read_only { "ro" } else { "rw" };
            format!("{}:{}:{mode}", m.source.display(), m.target)
        })
        .collect();
    let s = &plan.security;
    Some(ContainerCreateBody {
        image: Some(image.clone()),
        entrypoint: command.clone(),
        cmd,
        env: Some(plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: user(s),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{infra_id}")),
            binds: Some(binds),
            readonly_rootfs: Some(s.read_only_root),
            cap_add: (!s.cap_add.is_empty()).then(|| s.cap_add.clone()),
            cap_drop: (!s.cap_drop.is_empty()).then(|| s.cap_drop.clone()),
            group_add: (!s.supplemental_groups.is_empty())
                .then(|| s.supplemental_groups.iter().map(i64::to_string).collect()),
            privileged: Some(false),
            security_opt: s
                .no_new_privileges
                .then(|| vec!["no-new-privileges".into()]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    })
}

/// `runAsUser[:runAsGroup]`; None keeps the image's user (a group alone cannot be given
/// without a user through this API, so it goes with the image's user's group).
fn user(s: &Security) -> Option<String> {
    match (s.user, s.group) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, _) => None,
    }
}

/// Whether an image's configured user (`USER` of its Containerfile) is root.
pub fn image_user_is_root(user: Option<&str>) -> bool {
    let user = user.unwrap_or_default();
    let name = user.split(':').next().unwrap_or_default();
    name.is_empty() || name == "0" || name == "root"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Mount;
    use std::path::PathBuf;

    fn plan(command: Option<Vec<String>>, args: Vec<String>) -> ContainerPlan {
        ContainerPlan {
            name: "agent".into(),
            program: Program::Image {
                image: "localhost/hsm-agent:dev".into(),
                command,
            },
            args,
            env: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            mounts: vec![
                Mount {
                    source: PathBuf::from("/state/ns/p/volumes/tls"),
                    target: "/etc/hsm/tls".into(),
                    read_only: true,
                },
                Mount {
                    source: PathBuf::from("/state/ns/p/volumes/tmp"),
                    target: "/tmp".into(),
                    read_only: false,
                },
            ],
            security: Security {
                user: Some(65532),
                group: Some(65532),
                supplemental_groups: vec![2000],
                run_as_non_root: true,
                read_only_root: true,
                cap_add: vec![],
                cap_drop: vec!["ALL".into()],
                no_new_privileges: true,
            },
            readiness: None,
            liveness: None,
        }
    }

    #[test]
    fn a_container_joins_the_infra_namespace_with_its_mounts_and_security_context() {
        let body = container(&plan(None, vec!["--x".into()]), "infra1", HashMap::new()).unwrap();
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("container:infra1"));
        assert_eq!(
            host.binds.unwrap(),
            [
                "/state/ns/p/volumes/tls:/etc/hsm/tls:ro",
                "/state/ns/p/volumes/tmp:/tmp:rw"
            ]
        );
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(host.cap_add, None);
        assert_eq!(host.group_add.unwrap(), ["2000"]);
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.security_opt.unwrap(), ["no-new-privileges"]);
        assert_eq!(body.user.as_deref(), Some("65532:65532"));
        assert_eq!(body.env.unwrap(), ["A=1", "B=x=y"]);
        // args alone keep the image's entrypoint.
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.cmd.unwrap(), ["--x"]);
    }

    #[test]
    fn command_replaces_the_entrypoint_and_the_image_cmd() {
        let body = container(
            &plan(Some(vec!["/bin/a".into()]), vec![]),
            "i",
            HashMap::new(),
        )
        .unwrap();
        assert_eq!(body.entrypoint.unwrap(), ["/bin/a"]);
        assert_eq!(body.cmd, Some(vec![]));
        let body = container(&plan(None, vec![]), "i", HashMap::new()).unwrap();
        assert_eq!((body.entrypoint, body.cmd), (None, None));
    }

    #[test]
    fn the_infra_container_has_the_pods_address_on_the_network() {
        let body = infra(
            "localhost/pause:1",
            "net",
            Ipv4Addr::new(10, 89, 0, 7),
            "p",
            HashMap::new(),
        );
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        let ip = endpoints["net"].ipam_config.as_ref().unwrap();
        assert_eq!(ip.ipv4_address.as_deref(), Some("10.89.0.7"));
        assert_eq!(
            body.host_config.unwrap().network_mode.as_deref(),
            Some("net")
        );
    }

    #[test]
    fn root_is_uid_zero_the_name_root_or_no_user() {
        for (user, root) in [
            (None, true),
            (Some(""), true),
            (Some("0:0"), true),
            (Some("root"), true),
            (Some("65532:65532"), false),
            (Some("nonroot"), false),
        ] {
            assert_eq!(image_user_is_root(user), root, "{user:?}");
        }
    }
}
