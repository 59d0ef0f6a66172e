//! Finding the manager as the Go plugin does: the operator's namespace (`-n`, then
//! `$HSM_OPERATOR_NAMESPACE`, then the one namespace holding the Service, then
//! `hsm-secrets-operator-system`), the Service `hsm-secrets-operator-api` exposing 8090, a
//! running manager pod, and a port-forward to it through the Kubernetes API (kube-rs,
//! WebSocket). The choices are plain functions; the API calls sit around them.

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// The manager's REST port.
pub const API_PORT: u16 = 8090;
/// The Service in front of the manager's REST API.
pub const SERVICE_NAME: &str = "hsm-secrets-operator-api";
/// The namespace when nothing else says.
pub const DEFAULT_NAMESPACE: &str = "hsm-secrets-operator-system";
/// The environment variable naming the operator's namespace.
pub const NAMESPACE_ENV: &str = "HSM_OPERATOR_NAMESPACE";
/// The labels of manager pods.
pub const MANAGER_SELECTOR: &str =
    "app.kubernetes.io/name=hsm-secrets-operator,control-plane=controller-manager";

/// The manager cannot be found or reached through the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No usable kubeconfig.
    #[error("cannot load the Kubernetes configuration")]
    Config(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The Service exists in more than one namespace.
    #[error(
        "service {SERVICE_NAME} exists in several namespaces ({}): choose one with -n or {NAMESPACE_ENV}",
        .0.join(", ")
    )]
    Ambiguous(Vec<String>),
    /// No Service where the namespace order led.
    #[error(
        "service {SERVICE_NAME} not found in namespace {} ({}): is the operator installed? \
         name its namespace with -n or {NAMESPACE_ENV}",
        .0.name,
        .0.source
    )]
    NoService(OperatorNamespace),
    /// The Service has no port 8090.
    #[error("service {SERVICE_NAME} in namespace {0} does not expose port {API_PORT}")]
    NoApiPort(String),
    /// No running manager pod.
    #[error("no running manager pod ({MANAGER_SELECTOR}) in namespace {0}")]
    NoPod(String),
    /// A Kubernetes API call failed.
    #[error("cannot {action}")]
    Kube {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The port-forward failed.
    #[error("cannot port-forward to pod {namespace}/{pod}:{API_PORT}")]
    PortForward {
        /// The namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The local end of the port-forward.
    #[error("cannot listen on 127.0.0.1:{port} for the port-forward")]
    Listen {
        /// The port.
        port: u16,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The operator's namespace, and which step of the namespace order gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorNamespace {
    /// The namespace.
    pub name: String,
    /// Where it came from.
    pub source: NamespaceSource,
}

/// The steps of the namespace order, so an error can say which namespaces were tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceSource {
    /// `-n`.
    Flag,
    /// `$HSM_OPERATOR_NAMESPACE`.
    Environment,
    /// The one namespace the cluster-wide search found the Service in.
    Search,
    /// The default, after a search of every namespace that found no Service.
    DefaultAfterSearch,
    /// The default, because services may not be listed cluster-wide.
    DefaultUnsearched,
}

impl std::fmt::Display for NamespaceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NamespaceSource::Flag => "given with -n",
            NamespaceSource::Environment => "given by HSM_OPERATOR_NAMESPACE",
            NamespaceSource::Search => "where the search of every namespace found it",
            NamespaceSource::DefaultAfterSearch => {
                "the default, tried after the search of every namespace found none"
            }
            NamespaceSource::DefaultUnsearched => {
                "the default: services may not be listed in every namespace to search for it"
            }
        })
    }
}

/// A Kubernetes client, and the kubeconfig's namespace and cluster URL.
pub struct Kube {
    /// The client.
    pub client: kube::Client,
    /// The context's namespace (`default` when it names none).
    pub namespace: String,
    /// The cluster's URL (part of the token cache's identity).
    pub cluster: String,
}

impl Kube {
    /// From the kubeconfig (`KUBECONFIG`, `~/.kube/config`) or the in-cluster environment;
    /// `context` picks a kubeconfig context.
    pub async fn load(context: Option<&str>) -> Result<Kube, ConnectError> {
        let config = match context {
            Some(context) => kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
                context: Some(context.to_owned()),
                ..Default::default()
            })
            .await
            .map_err(|e| ConnectError::Config(Box::new(e)))?,
            None => kube::Config::infer()
                .await
                .map_err(|e| ConnectError::Config(Box::new(e)))?,
        };
        let namespace = config.default_namespace.clone();
        let cluster = config.cluster_url.to_string();
        let client =
            kube::Client::try_from(config).map_err(|e| ConnectError::Config(Box::new(e)))?;
        Ok(Kube {
            client,
            namespace,
            cluster,
        })
    }
}

/// `-n`, else `$HSM_OPERATOR_NAMESPACE` (empty counts as unset).
pub fn explicit_namespace(flag: Option<&str>, env: Option<&str>) -> Option<OperatorNamespace> {
    let given = |value: Option<&str>, source| {
        value
            .filter(|ns| !ns.is_empty())
            .map(|ns| OperatorNamespace {
                name: ns.to_owned(),
                source,
            })
    };
    given(flag, NamespaceSource::Flag).or_else(|| given(env, NamespaceSource::Environment))
}

/// The namespace from the cluster-wide search for the Service: the one namespace holding
/// it, the default when none does, an error when several do.
pub fn namespace_from_search(mut found: Vec<String>) -> Result<OperatorNamespace, ConnectError> {
    found.sort();
    found.dedup();
    match found.len() {
        0 => Ok(OperatorNamespace {
            name: DEFAULT_NAMESPACE.to_owned(),
            source: NamespaceSource::DefaultAfterSearch,
        }),
        1 => Ok(OperatorNamespace {
            name: found.remove(0),
            source: NamespaceSource::Search,
        }),
        _ => Err(ConnectError::Ambiguous(found)),
    }
}

/// Whether a Service exposes the API port.
pub fn exposes_api_port(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|ports| ports.iter().any(|p| p.port == i32::from(API_PORT)))
}

/// The pod to forward to: a Running pod that is Ready, else any Running one; by name, so
/// the choice is stable.
pub fn pick_pod(pods: &[Pod]) -> Option<String> {
    let running = |p: &&Pod| {
        p.metadata.deletion_timestamp.is_none()
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    };
    let ready = |p: &&Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let mut candidates: Vec<&Pod> = pods.iter().filter(running).collect();
    candidates.sort_by(|a, b| {
        ready(b)
            .cmp(&ready(a))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    candidates.first().and_then(|p| p.metadata.name.clone())
}

/// The operator's namespace: explicit, else searched for cluster-wide.
pub async fn resolve_namespace(
    kube: &Kube,
    flag: Option<&str>,
    env: Option<&str>,
) -> Result<OperatorNamespace, ConnectError> {
    if let Some(ns) = explicit_namespace(flag, env) {
        return Ok(ns);
    }
    let services: Api<Service> = Api::all(kube.client.clone());
    let params = ListParams::default().fields(&format!("metadata.name={SERVICE_NAME}"));
    match services.list(&params).await {
        Ok(list) => namespace_from_search(
            list.items
                .into_iter()
                .filter_map(|s| s.metadata.namespace)
                .collect(),
        ),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            tracing::info!("may not list services cluster-wide: using {DEFAULT_NAMESPACE}");
            Ok(OperatorNamespace {
                name: DEFAULT_NAMESPACE.to_owned(),
                source: NamespaceSource::DefaultUnsearched,
            })
        }
        Err(source) => Err(ConnectError::Kube {
            action: format!("search for service {SERVICE_NAME}"),
            source,
        }),
    }
}

/// The manager pod behind the Service in the operator's namespace.
pub async fn find_manager_pod(
    kube: &Kube,
    operator: &OperatorNamespace,
) -> Result<String, ConnectError> {
    let namespace = operator.name.as_str();
    let services: Api<Service> = Api::namespaced(kube.client.clone(), namespace);
    let service = services
        .get_opt(SERVICE_NAME)
        .await
        .map_err(|source| ConnectError::Kube {
            action: format!("read service {namespace}/{SERVICE_NAME}"),
            source,
        })?
        .ok_or_else(|| ConnectError::NoService(operator.clone()))?;
    if !exposes_api_port(&service) {
        return Err(ConnectError::NoApiPort(namespace.to_owned()));
    }
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(MANAGER_SELECTOR))
        .await
        .map_err(|source| ConnectError::Kube {
            action: format!("list manager pods in {namespace}"),
            source,
        })?;
    pick_pod(&list.items).ok_or_else(|| ConnectError::NoPod(namespace.to_owned()))
}

/// A local listener whose connections are each forwarded to the pod's port 8090. The
/// forwarding stops when this is dropped.
pub struct Forward {
    /// Where to connect.
    pub local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    failures: watch::Receiver<Option<String>>,
}

impl Forward {
    /// The last reason a forwarded connection failed, as the API server gave it on the
    /// tunnel's error channel (e.g. nothing listens on the pod's port).
    pub fn failures(&self) -> watch::Receiver<Option<String>> {
        self.failures.clone()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts forwarding `127.0.0.1:local_port` (0: any) to `pod`'s port 8090 through the
/// Kubernetes API. One forward is opened before returning, so a cluster that cannot
/// port-forward fails here, clearly.
pub async fn port_forward(
    kube: &Kube,
    namespace: &str,
    pod: &str,
    local_port: u16,
) -> Result<Forward, ConnectError> {
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), namespace);
    let (report, failures) = watch::channel(None);
    let report = Arc::new(report);
    let first =
        dial(&pods, pod, report.clone())
            .await
            .map_err(|source| ConnectError::PortForward {
                namespace: namespace.to_owned(),
                pod: pod.to_owned(),
                source,
            })?;
    let pod = pod.to_owned();
    let mut forward = bridge(local_port, first, move || {
        let (pods, pod, report) = (pods.clone(), pod.clone(), report.clone());
        async move { dial(&pods, &pod, report).await }
    })
    .await
    .map_err(|source| ConnectError::Listen {
        port: local_port,
        source,
    })?;
    forward.failures = failures;
    Ok(forward)
}

/// One connection to the pod's API port through the Kubernetes API (WebSocket); what the
/// API server says on the port's error channel goes to `report`.
async fn dial(
    pods: &Api<Pod>,
    pod: &str,
    report: Arc<watch::Sender<Option<String>>>,
) -> Result<tokio::io::DuplexStream, kube::Error> {
    let mut forwarder = pods.portforward(pod, &[API_PORT]).await?;
    let stream = forwarder
        .take_stream(API_PORT)
        .expect("the stream of the one port asked for");
    let error = forwarder
        .take_error(API_PORT)
        .expect("the error channel of the one port asked for");
    tokio::spawn(async move {
        if let Some(message) = error.await {
            tracing::debug!("port-forward error: {message}");
            report.send_replace(Some(message));
        }
    });
    // The forwarder's task ends when the stream is closed.
    tokio::spawn(async move {
        if let Err(e) = forwarder.join().await {
            tracing::debug!("port-forward ended: {e}");
        }
    });
    Ok(stream)
}

/// Listens on `127.0.0.1:local_port` and joins each accepted connection to a stream from
/// `dial` (`first` is used for the first connection), copying both ways.
pub async fn bridge<S, D, F, E>(local_port: u16, first: S, dial: D) -> std::io::Result<Forward>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    D: Fn() -> F + Send + 'static,
    F: std::future::Future<Output = Result<S, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", local_port)).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut ready = Some(first);
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let upstream = match ready.take() {
                Some(stream) => Ok(stream),
                None => dial().await,
            };
            tokio::spawn(async move {
                let mut upstream = match upstream {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!("port-forward failed: {e}");
                        return;
                    }
                };
                if let Err(e) = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await {
                    tracing::debug!("port-forward connection ended: {e}");
                }
            });
        }
    });
    Ok(Forward {
        local,
        task,
        failures: watch::channel(None).1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, ServicePort, ServiceSpec};
    use kube::api::ObjectMeta;

    fn pod(name: &str, phase: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ns(name: &str, source: NamespaceSource) -> Option<OperatorNamespace> {
        Some(OperatorNamespace {
            name: name.into(),
            source,
        })
    }

    #[test]
    fn the_namespace_flag_wins_then_the_environment() {
        use NamespaceSource::*;
        assert_eq!(explicit_namespace(Some("a"), Some("b")), ns("a", Flag));
        assert_eq!(explicit_namespace(None, Some("b")), ns("b", Environment));
        assert_eq!(
            explicit_namespace(Some(""), Some("b")),
            ns("b", Environment)
        );
        assert_eq!(explicit_namespace(None, Some("")), None);
        assert_eq!(explicit_namespace(None, None), None);
    }

    #[test]
    fn the_search_gives_one_namespace_the_default_or_an_error() {
        use NamespaceSource::*;
        assert_eq!(
            namespace_from_search(vec![]).ok(),
            ns(DEFAULT_NAMESPACE, DefaultAfterSearch)
        );
        assert_eq!(
            namespace_from_search(vec!["ops".into(), "ops".into()]).ok(),
            ns("ops", Search)
        );
        let e = namespace_from_search(vec!["b".into(), "a".into()]).unwrap_err();
        assert!(e.to_string().contains("a, b"), "{e}");
    }

    #[test]
    fn a_missing_service_names_the_namespaces_tried() {
        let e = ConnectError::NoService(
            ns(DEFAULT_NAMESPACE, NamespaceSource::DefaultAfterSearch).unwrap(),
        );
        assert_eq!(
            e.to_string(),
            "service hsm-secrets-operator-api not found in namespace hsm-secrets-operator-system \
             (the default, tried after the search of every namespace found none): is the \
             operator installed? name its namespace with -n or HSM_OPERATOR_NAMESPACE"
        );
        let e = ConnectError::NoService(ns("ops", NamespaceSource::Flag).unwrap());
        assert!(
            e.to_string().contains("namespace ops (given with -n)"),
            "{e}"
        );
    }

    #[test]
    fn a_ready_running_pod_is_preferred() {
        let pods = vec![
            pod("a", "Pending", false),
            pod("b", "Running", false),
            pod("c", "Running", true),
        ];
        assert_eq!(pick_pod(&pods).as_deref(), Some("c"));
        assert_eq!(pick_pod(&pods[..2]).as_deref(), Some("b"));
        assert_eq!(pick_pod(&pods[..1]), None);
    }

    #[test]
    fn the_service_must_expose_8090() {
        let service = |port| Service {
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    port,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(exposes_api_port(&service(8090)));
        assert!(!exposes_api_port(&service(80)));
        assert!(!exposes_api_port(&Service::default()));
    }
}
