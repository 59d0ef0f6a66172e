//! The manager's REST API on :8090, served by every replica (the Go manager served it on
//! the leader only: its defect 15), for `kubectl hsm` and anything else that writes to the
//! HSMs. Its routes, envelope, status and error codes are the Go manager's (contract §4);
//! what it adds:
//!
//! - every request authenticated (TokenReview, or the API's own tokens signed with a key
//!   shared through a Secret) and authorised by RBAC (SubjectAccessReview): [`auth`];
//! - secret names with `/` and `.` addressable, every Go URL keeping its meaning: [`paths`];
//! - reads resolved across devices by the same rule as the controller and mirroring, writes
//!   with a version above every device's, answered per device: [`core`];
//! - bad input refused field by field before anything is written: [`body`];
//! - an OpenAPI document made from the code at `/api/v1/openapi.json`: [`openapi`].
//!
//! Layers: [`handlers`] (HTTP shell) → [`core`] (one function per route, no HTTP types) →
//! [`errors`] (one exhaustive mapping to status and code).

pub mod auth;
pub mod body;
pub mod core;
pub mod envelope;
pub mod errors;
pub mod handlers;
pub mod mirror;
pub mod openapi;
pub mod paths;
pub mod types;

pub use auth::{Auth, AuthSettings};
pub use core::Core;
pub use mirror::{MirrorControl, MirrorSummary};

use crate::agents::AgentPool;
use auth::jwt::JwtKey;
use auth::kube::KubeReviews;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use handlers::ApiState;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// The default name of the Secret holding the API token signing key, in the manager's
/// namespace.
pub const JWT_SECRET: &str = "hsm-secrets-operator-api-token-key";

/// The largest request body (a 1 MiB secret, JSON-escaped, fits).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The API's router over `core`.
pub fn router(core: Arc<Core>) -> Router {
    let auth = core.auth.clone();
    let state = ApiState { core };
    let protected = Router::new()
        .route("/api/v1/info", get(handlers::info))
        .route("/api/v1/hsm/info", get(handlers::device_info))
        .route("/api/v1/hsm/status", get(handlers::status))
        .route("/api/v1/hsm/secrets", get(handlers::list))
        .route(
            "/api/v1/hsm/secrets/{*path}",
            get(handlers::get_secret)
                .post(handlers::write_secret)
                .put(handlers::write_secret)
                .delete(handlers::delete_secret),
        )
        .route("/api/v1/hsm/change-pin", post(handlers::change_pin))
        .route("/api/v1/hsm/mirror/sync", post(handlers::mirror_sync))
        .route_layer(axum::middleware::from_fn_with_state(
            auth,
            handlers::authenticate,
        ));
    let open = Router::new()
        .route("/", get(handlers::root))
        .route("/web", get(handlers::web))
        .route("/web/", get(handlers::web))
        .route("/web/{*rest}", get(handlers::web))
        .route("/healthz", get(handlers::healthz))
        .route("/api/v1/health", get(handlers::health))
        .route("/api/v1/auth/token", post(handlers::auth_token))
        .route("/api/v1/openapi.json", get(handlers::openapi_json));
    protected
        .merge(open)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(handlers::access_log))
        .layer(axum::middleware::from_fn(handlers::cors))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    core: Arc<Core>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(core))
        .with_graceful_shutdown(shutdown)
        .await
}

/// What the manager needs to start the API.
pub struct Setup {
    /// The manager's client: it makes the TokenReviews and SubjectAccessReviews and keeps
    /// the signing key Secret.
    pub client: kube::Client,
    /// The manager's namespace: accesses are authorised there, the key Secret lives there.
    pub namespace: String,
    /// The signing key Secret's name.
    pub jwt_secret: String,
    /// The devices.
    pub pool: AgentPool,
    /// Mirroring, when connected.
    pub mirror: Option<Arc<dyn MirrorControl>>,
    /// Review caching and token validity.
    pub settings: AuthSettings,
}

/// The API's logic, with the signing key read from (or made in) its Secret.
pub async fn core(setup: Setup) -> Result<Arc<Core>, auth::jwt::KeyError> {
    let key = JwtKey::load_or_create(&setup.client, &setup.namespace, &setup.jwt_secret).await?;
    let auth = Auth::new(
        Arc::new(KubeReviews::new(setup.client)),
        key,
        &setup.namespace,
        setup.settings,
    );
    Ok(Arc::new(Core {
        pool: setup.pool,
        auth: Arc::new(auth),
        mirror: setup.mirror,
        settle_timeout: core::SETTLE_TIMEOUT,
    }))
}

/// Binds `addr` and serves the API there in a task, until the process ends.
pub async fn start(addr: SocketAddr, core: Arc<Core>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = serve(listener, core, std::future::pending()).await {
            tracing::error!(%error, "REST API server stopped");
        }
    });
    tracing::info!(addr = %bound, "REST API listening");
    Ok(bound)
}
