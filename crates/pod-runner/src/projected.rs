//! Pure: projected and downwardAPI volumes as files, what a pod's ServiceAccount identity
//! takes on this machine, and the variables a kubelet gives every container for the API
//! server.
//!
//! A projected volume becomes a directory of files in the pod's private directory, as a
//! Secret volume does: its `serviceAccountToken` sources hold tokens the supervisor
//! requested (TokenRequest for the pod's ServiceAccount, bound to the Pod), its `secret`
//! and `configMap` sources the keys they select, its `downwardAPI` sources the pod's fields.
//! A local process cannot see that directory at
//! [`TOKEN_MOUNT_PATH`], so [`kubeconfig`] writes what in-cluster configuration would
//! have read there as a kubeconfig (server, `ca.crt`, `tokenFile`), which clients re-read
//! when the token is rewritten.

use crate::config::ApiServer;
use crate::plan::{FileToWrite, PlanError, Sources};
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};

/// Where a container finds its ServiceAccount token, CA and namespace.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The lifetime a `serviceAccountToken` source gets when it names none (the API's default).
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// A token a pod's projected volumes need: one TokenRequest each.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenSpec {
    /// The audience (none: the API server's).
    pub audience: Option<String>,
    /// The lifetime asked for.
    pub expiration_seconds: i64,
}

/// The tokens the pod's projected volumes need, each once.
pub fn tokens_needed(pod: &Pod) -> Vec<TokenSpec> {
    let mut out: Vec<TokenSpec> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .map(|t| TokenSpec {
            audience: t.audience.clone().filter(|a| !a.is_empty()),
            expiration_seconds: t
                .expiration_seconds
                .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Names of the Secrets and ConfigMaps the pod's projected volumes take keys from.
pub fn referenced(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut secrets = Vec::new();
    let mut maps = Vec::new();
    let sources = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten());
    for s in sources {
        if let Some(s) = &s.secret {
            secrets.push(s.name.clone());
        }
        if let Some(c) = &s.config_map {
            maps.push(c.name.clone());
        }
    }
    (secrets, maps)
}

/// `path` under `dir`, if it stays there (relative, no `..`), as the API's validation
/// demands of volume item paths.
fn under(dir: &Path, path: &str, volume: &str) -> Result<PathBuf, PlanError> {
    let p = Path::new(path);
    let inside = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(dir.join(p))
    } else {
        Err(PlanError::BadItemPath {
            volume: volume.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// The files of a keyed source: the selected `items`, or every key.
fn keyed(
    dir: &Path,
    volume: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    missing_key: impl Fn(String) -> PlanError,
    out: &mut Vec<FileToWrite>,
) -> Result<(), PlanError> {
    match items {
        Some(items) => {
            for i in items {
                let value = data.get(&i.key).ok_or_else(|| missing_key(i.key.clone()))?;
                out.push(FileToWrite {
                    path: under(dir, &i.path, volume)?,
                    contents: value.clone(),
                });
            }
        }
        None => {
            for (k, value) in data {
                out.push(FileToWrite {
                    path: under(dir, k, volume)?,
                    contents: value.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The files of downward API items: pod fields (`fieldRef`); `resourceFieldRef` is not
/// served.
pub fn downward_files(
    pod: &Pod,
    volume: &str,
    items: &[DownwardAPIVolumeFile],
    ip: Ipv4Addr,
    dir: &Path,
    out: &mut Vec<FileToWrite>,
) -> Result<(), PlanError> {
    for item in items {
        let unsupported = |what: String| PlanError::UnsupportedDownwardApi {
            volume: volume.to_owned(),
            field: what,
        };
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => crate::plan::field(pod, f, ip)
                .or_else(|| whole_map(pod, &f.field_path))
                .ok_or_else(|| unsupported(f.field_path.clone()))?,
            (None, Some(r)) => return Err(unsupported(format!("resourceFieldRef {}", r.resource))),
            (None, None) => return Err(unsupported("an item without a source".into())),
        };
        out.push(FileToWrite {
            path: under(dir, &item.path, volume)?,
            contents: value.into_bytes(),
        });
    }
    Ok(())
}

/// `metadata.labels` and `metadata.annotations` as whole files (`key="value"` lines, sorted),
/// which only downward API volumes offer.
fn whole_map(pod: &Pod, path: &str) -> Option<String> {
    let map = match path {
        "metadata.labels" => pod.labels(),
        "metadata.annotations" => pod.annotations(),
        _ => return None,
    };
    Some(
        map.iter()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>(),
    )
}

/// The files of a projected volume in `dir`: tokens from `sources.tokens`, Secret and
/// ConfigMap keys, downward API fields.
pub fn projected_files(
    pod: &Pod,
    volume: &str,
    projected: &ProjectedVolumeSource,
    sources: &Sources,
    ip: Ipv4Addr,
    dir: &Path,
    out: &mut Vec<FileToWrite>,
) -> Result<(), PlanError> {
    for source in projected.sources.iter().flatten() {
        if let Some(t) = &source.service_account_token {
            let spec = TokenSpec {
                audience: t.audience.clone().filter(|a| !a.is_empty()),
                expiration_seconds: t
                    .expiration_seconds
                    .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS),
            };
            let token = sources
                .tokens
                .get(&spec)
                .ok_or_else(|| PlanError::MissingToken {
                    volume: volume.to_owned(),
                    service_account: service_account(pod),
                })?;
            out.push(FileToWrite {
                path: under(dir, &t.path, volume)?,
                contents: token.clone().into_bytes(),
            });
        } else if let Some(s) = &source.secret {
            match sources.secrets.get(&s.name) {
                Some(data) => {
                    let missing = |key| PlanError::MissingSecretKey {
                        name: s.name.clone(),
                        key,
                    };
                    keyed(dir, volume, data, s.items.as_ref(), missing, out)?;
                }
                None if s.optional.unwrap_or(false) => {}
                None => return Err(PlanError::MissingSecret(s.name.clone())),
            }
        } else if let Some(c) = &source.config_map {
            match sources.config_maps.get(&c.name) {
                Some(data) => {
                    let missing = |key| PlanError::MissingConfigMapKey {
                        name: c.name.clone(),
                        key,
                    };
                    keyed(dir, volume, data, c.items.as_ref(), missing, out)?;
                }
                None if c.optional.unwrap_or(false) => {}
                None => return Err(PlanError::MissingConfigMap(c.name.clone())),
            }
        } else if let Some(d) = &source.downward_api {
            downward_files(
                pod,
                volume,
                d.items.as_deref().unwrap_or_default(),
                ip,
                dir,
                out,
            )?;
        } else {
            return Err(PlanError::UnsupportedVolume {
                volume: volume.to_owned(),
            });
        }
    }
    Ok(())
}

/// The pod's ServiceAccount (`default` when it names none).
pub fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The variables a kubelet gives every container for the `kubernetes` Service.
pub fn service_env(api: &ApiServer) -> Vec<(String, String)> {
    let (host, port) = (api.host.clone(), api.port.to_string());
    let tcp = format!("tcp://{}", authority(api));
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone()),
        ("KUBERNETES_PORT".into(), tcp.clone()),
        (format!("KUBERNETES_PORT_{port}_TCP"), tcp),
        (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into()),
        (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.clone()),
        (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host),
    ]
}

fn authority(api: &ApiServer) -> String {
    if api.host.contains(':') {
        format!("[{}]:{}", api.host, api.port)
    } else {
        format!("{}:{}", api.host, api.port)
    }
}

/// A kubeconfig that says what in-cluster configuration reads from a ServiceAccount
/// directory `dir` (`token`, `ca.crt`) and the service variables: the token as `tokenFile`
/// (re-read by kube-rs and client-go, so a refreshed token is picked up), the CA file when
/// the server speaks HTTPS, and the pod's namespace as the context's.
pub fn kubeconfig(api: &ApiServer, dir: &Path, namespace: &str) -> String {
    let quote = |p: PathBuf| serde_json::to_string(&p.to_string_lossy()).unwrap_or_default();
    let ca = if api.https {
        format!("\n    certificate-authority: {}", quote(dir.join("ca.crt")))
    } else {
        String::new()
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: in-cluster\n  cluster:\n    server: {server}{ca}\n\
         users:\n- name: service-account\n  user:\n    tokenFile: {token}\n\
         contexts:\n- name: in-cluster\n  context:\n    cluster: in-cluster\n    user: service-account\n    namespace: {ns}\n\
         current-context: in-cluster\n",
        server = serde_json::to_string(&api.url()).unwrap_or_default(),
        token = quote(dir.join("token")),
        ns = serde_json::to_string(namespace).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                         "labels": {"b": "2", "a": "1"}},
            "spec": {"serviceAccountName": "sa", "containers": [], "volumes": [
                {"name": "kube-api-access-x", "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
                {"name": "vault", "projected": {"sources": [
                    {"serviceAccountToken": {"audience": "vault", "path": "vault-token"}},
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "again"}},
                    {"secret": {"name": "s", "items": [{"key": "k", "path": "sub/k"}]}},
                    {"secret": {"name": "gone", "optional": true}},
                    {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}]}}]}
        }))
        .unwrap()
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.config_maps.insert(
            "kube-root-ca.crt".into(),
            BTreeMap::from([("ca.crt".into(), b"CA".to_vec())]),
        );
        s.secrets
            .insert("s".into(), BTreeMap::from([("k".into(), b"v".to_vec())]));
        s.tokens.insert(
            TokenSpec {
                audience: None,
                expiration_seconds: 3607,
            },
            "api-token".into(),
        );
        s.tokens.insert(
            TokenSpec {
                audience: Some("vault".into()),
                expiration_seconds: 3600,
            },
            "vault-token".into(),
        );
        s
    }

    fn files(volume: usize, sources: &Sources) -> Result<Vec<(String, String)>, PlanError> {
        let pod = pod();
        let v = &pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[volume];
        let mut out = Vec::new();
        projected_files(
            &pod,
            &v.name,
            v.projected.as_ref().unwrap(),
            sources,
            Ipv4Addr::LOCALHOST,
            Path::new("/d"),
            &mut out,
        )?;
        Ok(out
            .into_iter()
            .map(|f| {
                (
                    f.path.display().to_string(),
                    String::from_utf8(f.contents).unwrap(),
                )
            })
            .collect())
    }

    #[test]
    fn each_token_is_requested_once() {
        assert_eq!(
            tokens_needed(&pod()),
            [
                TokenSpec {
                    audience: None,
                    expiration_seconds: 3607
                },
                TokenSpec {
                    audience: Some("vault".into()),
                    expiration_seconds: 3600
                },
            ]
        );
        assert_eq!(
            referenced(&pod()),
            (
                vec!["s".into(), "gone".into()],
                vec!["kube-root-ca.crt".into()]
            )
        );
    }

    #[test]
    fn the_service_account_volume_has_token_ca_and_namespace() {
        assert_eq!(
            files(0, &sources()).unwrap(),
            [
                ("/d/token".into(), "api-token".into()),
                ("/d/ca.crt".into(), "CA".into()),
                ("/d/namespace".into(), "ns".into()),
            ]
        );
    }

    #[test]
    fn audiences_secrets_and_whole_label_files() {
        assert_eq!(
            files(1, &sources()).unwrap(),
            [
                ("/d/vault-token".into(), "vault-token".into()),
                ("/d/again".into(), "api-token".into()),
                ("/d/sub/k".into(), "v".into()),
                ("/d/labels".into(), "a=\"1\"\nb=\"2\"\n".into()),
            ]
        );
    }

    #[test]
    fn a_missing_token_or_source_waits_and_a_path_outside_is_refused() {
        let mut s = sources();
        s.tokens.clear();
        let err = files(0, &s).unwrap_err();
        assert_eq!(
            err,
            PlanError::MissingToken {
                volume: "kube-api-access-x".into(),
                service_account: "sa".into()
            }
        );
        assert!(err.transient());
        let mut s = sources();
        s.config_maps.clear();
        assert_eq!(
            files(0, &s).unwrap_err(),
            PlanError::MissingConfigMap("kube-root-ca.crt".into())
        );
        let mut out = Vec::new();
        let item: DownwardAPIVolumeFile = serde_json::from_value(
            json!({"path": "../escape", "fieldRef": {"fieldPath": "metadata.name"}}),
        )
        .unwrap();
        let err = downward_files(
            &pod(),
            "v",
            &[item],
            Ipv4Addr::LOCALHOST,
            Path::new("/d"),
            &mut out,
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::BadItemPath { .. }), "{err}");
    }

    #[test]
    fn the_kubeconfig_names_the_volumes_files_and_the_server() {
        let api: ApiServer = "https://127.0.0.1:6443".parse().unwrap();
        let text = kubeconfig(
            &api,
            Path::new("/pods/ns/p/volumes/kube-api-access-x"),
            "ns",
        );
        let k: kube::config::Kubeconfig = serde_yaml_ng(&text);
        let cluster = k.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/pods/ns/p/volumes/kube-api-access-x/ca.crt")
        );
        let user = k.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.token_file.as_deref(),
            Some("/pods/ns/p/volumes/kube-api-access-x/token")
        );
        let ctx = k.contexts[0].context.as_ref().unwrap();
        assert_eq!(ctx.namespace.as_deref(), Some("ns"));
        assert_eq!(k.current_context.as_deref(), Some("in-cluster"));
        let env = service_env(&api);
        assert!(env.contains(&("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into())));
        assert!(env.contains(&("KUBERNETES_SERVICE_PORT".into(), "6443".into())));
        assert!(env.contains(&("KUBERNETES_PORT_6443_TCP_ADDR".into(), "127.0.0.1".into())));
    }

    /// Parses a kubeconfig the way kube-rs reads `KUBECONFIG`.
    fn serde_yaml_ng(text: &str) -> kube::config::Kubeconfig {
        kube::config::Kubeconfig::from_yaml(text).unwrap()
    }
}
