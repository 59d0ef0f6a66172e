//! Installing and removing the operator as users do: `deploy/overlays/e2e` rendered by
//! `kubectl kustomize` and applied with `kubectl apply --server-side`.

use crate::cluster::Cluster;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::path::Path;

/// The kustomization the run installs.
pub const OVERLAY: &str = "deploy/overlays/e2e";
/// The manager Deployment's name in `deploy/`.
pub const MANAGER: &str = "hsm-secrets-operator-controller-manager";

/// The rendered objects of the e2e overlay.
pub fn render(root: &Path) -> Result<Vec<Value>> {
    let yaml = delivery::manifests::render(&root.join(OVERLAY)).context("rendering deploy/")?;
    Ok(delivery::manifests::documents(&yaml)?)
}

/// Adapts the manager to pods that are local processes sharing the host's network: its
/// listeners bind the pod's own address instead of every address, so that two replicas do
/// not take each other's ports. Containers in their own network namespace need nothing.
pub fn bind_to_pod_ip(objects: &mut [Value]) {
    for object in objects.iter_mut() {
        if object["kind"] != "Deployment" || object["metadata"]["name"] != MANAGER {
            continue;
        }
        let Some(containers) = object["spec"]["template"]["spec"]["containers"].as_array_mut()
        else {
            continue;
        };
        for container in containers {
            let Some(args) = container["args"].as_array_mut() else {
                continue;
            };
            for arg in args.iter_mut() {
                if let Some(text) = arg.as_str()
                    && let Some((flag, port)) = text.split_once("=:")
                {
                    *arg = json!(format!("{flag}=$(POD_IP):{port}"));
                }
            }
            args.push(json!("--api-bind-address=$(POD_IP):8090"));
            let env = container["env"].as_array_mut();
            let pod_ip =
                json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}});
            match env {
                Some(env) => env.insert(0, pod_ip),
                None => container["env"] = json!([pod_ip]),
            }
        }
    }
}

/// The objects as one YAML stream.
pub fn to_yaml(objects: &[Value]) -> Result<String> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(object)?);
    }
    Ok(out)
}

/// `kubectl apply --server-side` of the objects.
pub fn apply(cluster: &Cluster, objects: &[Value]) -> Result<()> {
    cluster.kubectl_with_input(
        &[
            "apply",
            "--server-side",
            "--field-manager=e2e-install",
            "-f",
            "-",
        ],
        Some(&to_yaml(objects)?),
    )?;
    Ok(())
}

/// `kubectl delete` of the objects, waiting until they are gone.
pub fn delete(cluster: &Cluster, objects: &[Value]) -> Result<()> {
    cluster.kubectl_with_input(
        &[
            "delete",
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
            "-f",
            "-",
        ],
        Some(&to_yaml(objects)?),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlay_renders_the_base_with_short_timers() {
        let objects = render(&crate::workspace_root()).unwrap();
        let manager = objects
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == MANAGER)
            .expect("the manager Deployment");
        let args = manager["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        assert!(args.contains("--device-absence-timeout=20s"), "{args}");
        assert!(args.contains("--leader-elect"), "{args}");
        assert!(
            objects
                .iter()
                .any(|o| o["kind"] == "CustomResourceDefinition")
        );
    }

    #[test]
    fn local_process_pods_bind_the_managers_listeners_to_their_own_address() {
        let mut objects = vec![json!({
            "kind": "Deployment", "metadata": {"name": MANAGER},
            "spec": {"template": {"spec": {"containers": [{"name": "manager",
                "args": ["--mode=manager", "--health-probe-bind-address=:8081", "--metrics-bind-address=:8080"],
                "env": [{"name": "OPERATOR_NAME", "value": "x"}]}]}}}
        })];
        bind_to_pod_ip(&mut objects);
        let container = &objects[0]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["args"],
            json!([
                "--mode=manager",
                "--health-probe-bind-address=$(POD_IP):8081",
                "--metrics-bind-address=$(POD_IP):8080",
                "--api-bind-address=$(POD_IP):8090"
            ])
        );
        assert_eq!(container["env"][0]["name"], "POD_IP");
        assert_eq!(container["env"][1]["name"], "OPERATOR_NAME");
    }
}
