//! The kubeconfig that points `kubectl`, `kube::Config` and the manager at a served emulator.

use base64::Engine as _;

/// A kubeconfig (YAML) for `server` with default namespace `default`, the administrator's
/// bearer token, and the cluster CA when the server speaks TLS.
pub fn render(server: &str, ca_pem: Option<&str>, token: &str) -> String {
    let ca = ca_pem
        .map(|pem| {
            format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: api-emulator
  cluster:
    server: {server}{ca}
users:
- name: api-emulator
  user:
    token: {token}
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
