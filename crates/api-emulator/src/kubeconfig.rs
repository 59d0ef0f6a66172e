//! The kubeconfig that points `kubectl`, `kube::Config` and the manager at a served emulator.

use std::net::SocketAddr;

/// A kubeconfig (YAML) for `http://<addr>` with default namespace `default` and no
/// credentials (the emulator does not authenticate its clients).
pub fn render(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: api-emulator
  cluster:
    server: http://{addr}
users:
- name: api-emulator
  user: {{}}
contexts:
- name: api-emulator
  context:
    cluster: api-emulator
    user: api-emulator
    namespace: default
current-context: api-emulator
preferences: {{}}
"
    )
}
