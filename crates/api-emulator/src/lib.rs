//! An in-process emulator of the Kubernetes API, for tests and the local demo.
//!
//! No kube-apiserver can be installed where this project is built, yet the operator must be
//! tested against Kubernetes API semantics through a real `kube::Client` with real watches.
//! The emulator keeps objects in memory and serves the API two ways:
//!
//! - as a `tower::Service`: [`Emulator::client`] gives a `kube::Client` with no socket;
//! - as an HTTP or HTTPS server on 127.0.0.1: [`Emulator::serve`] / [`Emulator::serve_tls`]
//!   (or on another address, [`Emulator::serve_on`] / [`Emulator::serve_tls_on`]; or the
//!   `api-emulator serve [--bind ADDR] [--tls] [--authz rbac]` binary) listens and
//!   [`server::Server::write_kubeconfig`] writes a kubeconfig with the admin's token (and the
//!   cluster CA), so the manager binary and `kubectl` connect to it as to a cluster.
//!
//! What it does, as the real apiserver does:
//!
//! - routing of core (`/api/v1`) and named groups, namespaced and cluster-scoped resources,
//!   `/status` and `/scale` subresources, `pods/log` and `pods/portforward`; the built-ins
//!   the operator and its manifests use (Namespace, Secret, ConfigMap, Pod, Service, ServiceAccount, Event in both groups, Node,
//!   Deployment, DaemonSet, StatefulSet, Lease, Role, ClusterRole, RoleBinding,
//!   ClusterRoleBinding, NetworkPolicy, PodDisruptionBudget, ValidatingWebhookConfiguration,
//!   TokenReview, SubjectAccessReview, LocalSubjectAccessReview, SelfSubjectAccessReview,
//!   SelfSubjectReview, CustomResourceDefinition) and custom resources from CRD objects or
//!   YAML files;
//! - authentication ([`authn`]): the admin token of the written kubeconfig
//!   (`system:masters`), static tokens ([`Emulator::add_token`], `serve --token-file`), and
//!   ServiceAccount tokens from TokenRequest (`serviceaccounts/<name>/token`, `kubectl create
//!   token`): ES256-signed JWTs with audiences and expiry, bound to the ServiceAccount's uid
//!   (and a Pod's or Secret's when asked), so deleting it invalidates them; bad, expired or
//!   wrong-audience tokens get 401; no credentials is `system:anonymous`; impersonation
//!   headers (`kubectl --as`) with the `impersonate` verb checked;
//! - authorisation ([`rbac`]): the stored Roles and bindings with the real rules (verbs,
//!   apiGroups, resources and `res/sub`, `*/sub`, resourceNames, nonResourceURLs, `*`),
//!   `system:masters` always allowed, the bootstrap ClusterRoles for discovery and
//!   self-reviews; enforced on every request under [`Authorization::Rbac`] (`serve --authz
//!   rbac`) with the real 403 message (a WebSocket port-forward is checked for `get`, then
//!   `create`, on `pods/portforward`, as since Kubernetes 1.35), and always answering
//!   SubjectAccessReview and its kin (`kubectl auth can-i`, `kubectl auth whoami`);
//! - TLS ([`tls`]) with a generated cluster CA, which `kube-root-ca.crt` and ServiceAccount
//!   directories ([`Emulator::write_service_account_dir`]: `token`, `ca.crt`, `namespace`)
//!   carry, so a process gets a client by in-cluster config as in a pod (`tests/incluster.rs`);
//! - the ServiceAccount admission plugin on Pod create ([`service_account_admission`]):
//!   `serviceAccountName` defaulted to `default`, a missing ServiceAccount refused with the
//!   real 403, and unless `automountServiceAccountToken` is false the projected
//!   `kube-api-access-*` volume (bound token, `kube-root-ca.crt`, namespace) mounted at
//!   `/var/run/secrets/kubernetes.io/serviceaccount` in every container
//!   ([`Builder::service_account_admission`] turns it off);
//! - an audit log of every request ([`Builder::audit`], `serve --audit-log`);
//! - protobuf request bodies of the kinds `kubectl create` sends ([`protobuf`]); bodies
//!   over 3 MiB get 413, nesting deeper than 128 levels 422;
//! - discovery (legacy forms), `/version`, server-side Tables for `kubectl get`;
//! - metadata: uid, creationTimestamp, generateName, one global resourceVersion, generation
//!   bumped on spec changes only, managedFields; 404/409/422 Status bodies; stale
//!   resourceVersion → 409; updates that change nothing are no-ops;
//! - list with full label selectors and field selectors, `limit` and `continue`; watch
//!   from a resourceVersion with bookmarks, `timeoutSeconds`, `sendInitialEvents`, 410 Gone
//!   beyond the kept history;
//! - custom resources pruned, defaulted and validated against their CRD's schema (types,
//!   required, enum, bounds, lengths, patterns; no CEL rules), unknown fields refused under
//!   `fieldValidation=Strict` (what `kubectl apply` sends) and dropped silently otherwise
//!   (no `Warning` headers);
//! - JSON merge, JSON and strategic merge patch, server-side apply with conflicts and
//!   `force`; status subresource semantics; finalizers; propagationPolicy and garbage
//!   collection by ownerReference; namespace termination; a new namespace gets the
//!   `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap; graceful deletion of
//!   pods bound to a node (they stay terminating until a delete with
//!   `gracePeriodSeconds=0`, which is what a kubelet sends — the e2e pod runner plays that
//!   part); immutable fields (Secret type, workload selectors, immutable ConfigMaps and
//!   Secrets).
//!
//! Known differences:
//!
//! - no controllers: a Deployment makes no ReplicaSets or Pods, nothing fills workload
//!   status (the e2e pod runner does what the tests need);
//! - pages of a list after the first show the objects as they are now, not the first page's
//!   snapshot (see [`paging`]);
//! - RBAC is off in-process unless asked ([`Authorization::AlwaysAllow`] by default, so
//!   tests that do not care need no Roles); no escalation check on writes of Roles and
//!   bindings (`escalate`/`bind` verbs are not required); ClusterRole `aggregationRule` is
//!   stored but no rules are aggregated; no SelfSubjectRulesReview (`kubectl auth can-i
//!   --list`); no user `extra` in tokens or reviews;
//! - ServiceAccount tokens are signed with a key made at start and trusted by no other
//!   issuer; no OIDC discovery or JWKS endpoint; no legacy token Secrets; the verified
//!   signature of a token is cached (expiry, audience and bindings are checked each time);
//! - protobuf is decoded only for the request bodies of Namespace, Secret, ConfigMap,
//!   ServiceAccount, the RBAC kinds, TokenRequest and the access and self reviews (others
//!   get 415, e.g. `kubectl create deployment`); responses are always JSON (client-go
//!   accepts it);
//! - `pods/log` is answered by a registered [`PodRuntime`] (400 without one, no `follow`);
//! - `pods/portforward` ([`portforward`]) is served over WebSocket with the
//!   `v4.channel.k8s.io` subprotocol (what kube-rs speaks), relayed to the pod's
//!   `status.podIP`, and only through the HTTP server (an in-process client cannot upgrade);
//!   not served: SPDY, the SPDY-over-WebSocket tunnel (`SPDY/3.1+portforward.k8s.io`) and
//!   `v4.base64.channel.k8s.io`, so `kubectl port-forward` gets a 400 naming what is served;
//!   `pods/exec`, `pods/attach` and `pods/proxy` are not served at all;
//! - discovery in the legacy forms only (kubectl falls back from the aggregated form);
//!   OpenAPI v3 lists operations but no schemas (enough for kubectl's server-side validation
//!   check; `/openapi/v2` is 404); no `Warning` headers;
//! - field selectors of built-ins accept any field path (the real server a per-kind list);
//!   CEL validation rules of CRDs are not evaluated;
//! - only the storage version of a CRD is kept (other served versions see the same object
//!   with another apiVersion, no conversion);
//! - garbage collection and namespace termination finish inside the deleting request rather
//!   than shortly after it.
//!
//! # Fidelity: the same tests on a real cluster
//!
//! The conformance tests (`tests/conformance_*.rs`, `tests/kubectl.rs`) get their client
//! from `testing::TestEnv::new` (the `testing` module, behind the `test-support` feature).
//! When the environment variable `HSM_TEST_KUBECONFIG` names a kubeconfig, they run against
//! that cluster instead of the emulator — the same test bodies, each in a fresh `emu-test-*` namespace that is deleted when the test ends (also
//! when it fails), with the CRDs from `deploy/crds` server-side applied first (they stay).
//! A behaviour that differs is a failing test:
//!
//! ```sh
//! HSM_TEST_KUBECONFIG=$HOME/.kube/config cargo nextest run -p api-emulator
//! ```
//!
//! Without the variable they run on an in-process emulator. Tests that need the emulator's
//! own controls (history compaction, review decisions, bookmark interval) return early on a
//! real cluster. `tests/conformance_rbac.rs` compares RBAC decisions with the cluster's for
//! a table of cases (SubjectAccessReviews, and requests as an impersonated user). Pointing the variable at `api-emulator serve`'s kubeconfig runs the whole
//! suite over HTTP, as `tests/fidelity_switch.rs` does for the switch itself.

pub mod admission;
pub mod apply;
pub mod attributes;
pub mod audit;
pub mod authn;
pub mod bootstrap;
pub mod crd;
pub mod discovery;
pub mod error;
pub mod events;
pub mod fields;
pub mod gc;
pub mod impersonation;
pub mod kubeconfig;
pub mod meta;
pub mod openapi;
pub mod ops;
pub mod paging;
pub mod patch;
pub mod pods;
pub mod portforward;
pub mod protobuf;
pub mod rbac;
pub mod request;
pub mod resources;
pub mod reviews;
pub mod routes;
pub mod scale;
pub mod schema;
pub mod selector;
pub mod server;
pub mod service_account_admission;
pub mod serviceaccount;
pub mod store;
pub mod structural;
pub mod table;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tls;
pub mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};

pub use audit::AuditEntry;
pub use authn::UserInfo;
pub use error::{ApiError, EmulatorError};
pub use pods::PodRuntime;

use resources::Registry;
use store::Store;

/// The emulated API server. Cheap to clone; clones share the same objects.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Mutex<Store>,
    auth: RwLock<authn::Authenticator>,
    reviews: Mutex<reviews::Reviews>,
    audit: Mutex<audit::AuditLog>,
    ca: tls::ClusterCa,
    pod_runtime: RwLock<Option<Arc<dyn PodRuntime>>>,
    authorization: RwLock<Authorization>,
    rbac_snapshot: Mutex<(u64, Arc<rbac::Snapshot>)>,
    bookmark_interval: Duration,
    max_body_bytes: usize,
}

/// How requests are authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Authorization {
    /// Every authenticated request is allowed (the default in-process, so tests that do not
    /// care about RBAC need no Roles).
    #[default]
    AlwaysAllow,
    /// The stored Roles, ClusterRoles and bindings decide, as a real cluster's RBAC.
    Rbac,
}

/// The real server's limit on a request body (3 MiB); larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Settings of an [`Emulator`].
#[derive(Debug, Clone)]
pub struct Builder {
    history_limit: usize,
    bookmark_interval: Duration,
    authorization: Authorization,
    audit: bool,
    max_body_bytes: usize,
    service_account_admission: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            history_limit: 20_000,
            bookmark_interval: Duration::from_secs(1),
            authorization: Authorization::AlwaysAllow,
            audit: false,
            max_body_bytes: MAX_BODY_BYTES,
            service_account_admission: true,
        }
    }
}

impl Builder {
    /// How many change events are kept for watches that resume from a resourceVersion;
    /// older versions get 410 Gone (default 20 000: each kept event holds a version of its
    /// object, so this bounds memory in long runs, as etcd's compaction does).
    pub fn history_limit(mut self, events: usize) -> Self {
        self.history_limit = events;
        self
    }

    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK (the real server sends
    /// one about a minute apart; tests want them sooner).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// How requests are authorised (default: [`Authorization::AlwaysAllow`]).
    pub fn authorization(mut self, mode: Authorization) -> Self {
        self.authorization = mode;
        self
    }

    /// Keeps an audit entry of every request in memory ([`Emulator::audit_log`]).
    pub fn audit(mut self, enabled: bool) -> Self {
        self.audit = enabled;
        self
    }

    /// The largest request body accepted (default [`MAX_BODY_BYTES`]).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Whether Pod creates pass the ServiceAccount admission plugin
    /// ([`service_account_admission`]): `serviceAccountName` defaulted to `default`, a
    /// missing ServiceAccount refused, the `kube-api-access-*` token volume mounted in every
    /// container. On by default, as in every real cluster; off only for tests that create
    /// pods of ServiceAccounts they do not make.
    pub fn service_account_admission(mut self, enabled: bool) -> Self {
        self.service_account_admission = enabled;
        self
    }

    /// The emulator, with the namespaces a new cluster has (`default`, `kube-system`,
    /// `kube-public`, `kube-node-lease`) and its bootstrap RBAC policy.
    pub fn build(self) -> Emulator {
        let ca = tls::ClusterCa::generate().expect("ring generates the cluster CA");
        let mut store = Store::new(Registry::with_builtins(), self.history_limit);
        store.cluster_ca_pem = ca.ca_pem().to_string();
        store.service_account_admission = self.service_account_admission;
        let emu = Emulator {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                auth: RwLock::new(authn::Authenticator::generate()),
                reviews: Mutex::new(reviews::Reviews::default()),
                audit: Mutex::new(audit::AuditLog {
                    enabled: self.audit,
                    ..Default::default()
                }),
                ca,
                pod_runtime: RwLock::new(None),
                authorization: RwLock::new(self.authorization),
                rbac_snapshot: Mutex::new((u64::MAX, Arc::default())),
                bookmark_interval: self.bookmark_interval,
                max_body_bytes: self.max_body_bytes,
            }),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            emu.create_object(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .expect("a fresh store accepts the standard namespaces");
        }
        for object in bootstrap::objects() {
            emu.create_object(object)
                .expect("a fresh store accepts the bootstrap policy");
        }
        emu
    }
}

impl Default for Emulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Emulator {
    /// An emulator with default settings.
    pub fn new() -> Self {
        Builder::default().build()
    }

    /// Settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A `kube::Client` that calls this emulator in-process (no socket), default namespace
    /// `default`. It sends no credentials: it is `system:anonymous`, which only matters
    /// under [`Authorization::Rbac`] (see [`Emulator::client_with_token`]).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// An in-process `kube::Client` that authenticates with a bearer token.
    pub fn client_with_token(&self, token: &str) -> kube::Client {
        let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .expect("a token is a valid header value");
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut req: http::Request<kube::client::Body>| {
                req.headers_mut()
                    .insert(http::header::AUTHORIZATION, value.clone());
                req
            })
            .service(self.clone());
        kube::Client::new(service, "default")
    }

    /// An in-process `kube::Client` as the administrator (`system:masters`).
    pub fn admin_client(&self) -> kube::Client {
        self.client_with_token(&self.admin_token())
    }

    /// The administrator's bearer token (the one in the kubeconfigs the emulator writes).
    pub fn admin_token(&self) -> String {
        self.inner.auth.read().admin_token().to_string()
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.inner.ca.ca_pem().to_string()
    }

    /// Switches authorisation (e.g. to [`Authorization::Rbac`] after a test set up its Roles).
    pub fn set_authorization(&self, mode: Authorization) {
        *self.inner.authorization.write() = mode;
    }

    /// The RBAC objects as they are now, from the snapshot taken at their last change.
    pub(crate) fn rbac_snapshot(&self, store: &Store) -> Arc<rbac::Snapshot> {
        let mut cached = self.inner.rbac_snapshot.lock();
        if cached.0 != store.rbac_generation {
            *cached = (store.rbac_generation, Arc::new(rbac::Snapshot::of(store)));
        }
        cached.1.clone()
    }

    /// What the RBAC authoriser decides for `attributes` now (whatever the enforcement
    /// mode).
    pub fn authorize(&self, attributes: &rbac::Attributes) -> rbac::Decision {
        let snapshot = self.rbac_snapshot(&self.inner.store.lock());
        rbac::authorize(&snapshot, attributes)
    }

    /// Registers what serves `pods/log`: a pod runner. (`pods/portforward` needs none: it
    /// reaches the pod at its `status.podIP`, see [`portforward`].)
    pub fn set_pod_runtime(&self, runtime: Arc<dyn PodRuntime>) {
        *self.inner.pod_runtime.write() = Some(runtime);
    }

    /// Every request seen since the emulator started (or [`Emulator::clear_audit_log`]),
    /// when built with [`Builder::audit`].
    pub fn audit_log(&self) -> Vec<AuditEntry> {
        self.inner.audit.lock().entries.clone()
    }

    /// Forgets the audit entries kept so far.
    pub fn clear_audit_log(&self) {
        self.inner.audit.lock().entries.clear();
    }

    /// Also appends every audit entry to `path` as a JSON line.
    pub fn audit_to_file(&self, path: &Path) -> Result<(), EmulatorError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| EmulatorError::Io {
                context: format!("opening {}", path.display()),
                source,
            })?;
        self.inner.audit.lock().file = Some(file);
        Ok(())
    }

    /// Serves over plain HTTP on `127.0.0.1:port` (0 picks a free port) until the returned
    /// server is dropped.
    pub async fn serve(&self, port: u16) -> Result<server::Server, EmulatorError> {
        self.serve_on(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
    }

    /// Serves over plain HTTP on `addr` (port 0 picks a free port).
    pub async fn serve_on(&self, addr: SocketAddr) -> Result<server::Server, EmulatorError> {
        server::Server::start(self.clone(), addr, None).await
    }

    /// Serves over HTTPS with a certificate of the cluster CA on `127.0.0.1:port`.
    pub async fn serve_tls(&self, port: u16) -> Result<server::Server, EmulatorError> {
        self.serve_tls_on(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
    }

    /// Serves over HTTPS on `addr` (port 0 picks a free port), with a certificate of the
    /// cluster CA that names `addr`'s address besides the loopback and in-cluster names: an
    /// address where containers on a bridge reach this machine, for instance, as a cluster's
    /// API server certificate names its advertised address.
    pub async fn serve_tls_on(&self, addr: SocketAddr) -> Result<server::Server, EmulatorError> {
        let config = self.inner.ca.server_config(addr.ip())?;
        server::Server::start(self.clone(), addr, Some(config)).await
    }

    /// Registers every CRD found in the YAML files of `dir`, as `kubectl apply -f dir` would.
    /// Returns how many were registered.
    pub fn load_crds(&self, dir: &Path) -> Result<usize, EmulatorError> {
        let crds = crd::read_crd_dir(dir)?;
        let n = crds.len();
        for c in crds {
            let name = c["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            self.create_object(c).map_err(|source| EmulatorError::Api {
                context: format!("CRD {name}"),
                source,
            })?;
        }
        Ok(n)
    }

    /// Creates every object in the YAML documents of `path` (a file or a directory of
    /// files), as `kubectl create -f` would. Returns how many were created.
    pub fn load_objects(&self, path: &Path) -> Result<usize, EmulatorError> {
        self.create_all(crd::read_objects(path)?)
    }

    /// Creates every object of a multi-document YAML text, as a test fixture.
    pub fn load_objects_from_str(&self, yaml: &str) -> Result<usize, EmulatorError> {
        self.create_all(crd::parse_objects(yaml, "YAML text")?)
    }

    fn create_all(&self, objects: Vec<Value>) -> Result<usize, EmulatorError> {
        let n = objects.len();
        for o in objects {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            self.create_object(o).map_err(|source| EmulatorError::Api {
                context: format!("object {name}"),
                source,
            })?;
        }
        Ok(n)
    }

    /// Creates any object (its apiVersion and kind select the resource), as a test fixture.
    pub fn create_object(&self, object: Value) -> Result<Value, ApiError> {
        let api_version = object["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let (group, version) = resources::split_api_version(&api_version);
        let mut store = self.inner.store.lock();
        let res = store
            .registry
            .by_kind(group, &kind)
            .ok_or_else(|| ApiError::BadRequest(format!("no resource for {api_version} {kind}")))?;
        let t = request::Target {
            res: res.clone(),
            version: version.to_string(),
            namespace: if res.namespaced {
                object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string()
            } else {
                String::new()
            },
            name: String::new(),
            status: false,
        };
        let opts = request::WriteOptions {
            field_manager: "api-emulator".into(),
            explicit_manager: true,
            ..Default::default()
        };
        ops::create(&mut store, &t, object, &opts)
    }

    /// Lets a bearer token authenticate as `user`, in requests and TokenReviews (as a
    /// static token file does).
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.inner
            .auth
            .write()
            .static_tokens
            .insert(token.to_string(), user);
    }

    /// Overrides how SubjectAccessReviews are answered: `decide` gets the review's `spec`
    /// and says whether it is allowed. Without an override the RBAC authoriser answers.
    pub fn set_access_decision(&self, decide: impl Fn(&Value) -> bool + Send + Sync + 'static) {
        self.inner.reviews.lock().decision = Some(Arc::new(decide));
    }

    /// Forgets the watch history, as an etcd compaction: watches from older resourceVersions
    /// then get 410 Gone.
    pub fn compact_history(&self) {
        self.inner.store.lock().compact();
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.store.lock().current_rv()
    }

    /// Number of stored objects of every resource.
    pub fn object_count(&self) -> usize {
        self.inner.store.lock().all_objects().count()
    }
}
