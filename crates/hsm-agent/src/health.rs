//! The agent's HTTP health endpoints on :8093, with the Go agent's bodies:
//!
//! * `GET /healthz` — 200 `{"status":"healthy","hsmConnected":true,"uptime":…,"timestamp":…}`
//!   or 503 with `"status":"degraded"`;
//! * `GET /readyz` — 200 `{"status":"ready"}` or 503
//!   `{"status":"not_ready","reason":"hsm_token_unavailable"}`, plus (new) `detail` naming
//!   why: `PinRefused`, `TokenAbsent`, ….
//!
//! Both ask the token itself (`C_GetTokenInfo`) on a blocking thread with a hard timeout, so a
//! wedged token cannot hang the kubelet's probe.

use crate::connector::Connector;
use crate::device::{Device, Readiness};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a probe may take before it counts as a failure.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

struct Health<C: Connector> {
    device: Arc<Device<C>>,
    started: Instant,
    timeout: Duration,
}

impl<C: Connector> Clone for Health<C> {
    fn clone(&self) -> Self {
        Health {
            device: self.device.clone(),
            started: self.started,
            timeout: self.timeout,
        }
    }
}

/// The health router for `device`.
pub fn router<C: Connector>(device: Arc<Device<C>>) -> Router {
    router_with_timeout(device, PROBE_TIMEOUT)
}

/// The health router with another probe timeout (tests).
pub fn router_with_timeout<C: Connector>(device: Arc<Device<C>>, timeout: Duration) -> Router {
    Router::new()
        .route("/healthz", get(healthz::<C>))
        .route("/readyz", get(readyz::<C>))
        .with_state(Health {
            device,
            started: Instant::now(),
            timeout,
        })
}

async fn probe<C: Connector>(health: &Health<C>) -> Readiness {
    let device = health.device.clone();
    match tokio::time::timeout(
        health.timeout,
        tokio::task::spawn_blocking(move || device.probe()),
    )
    .await
    {
        Ok(Ok(readiness)) => readiness,
        Ok(Err(_)) | Err(_) => Readiness::NotReady {
            reason: crate::device::NotReadyReason::Failed,
            message: "the token did not answer in time".into(),
        },
    }
}

async fn healthz<C: Connector>(State(health): State<Health<C>>) -> impl IntoResponse {
    let connected = probe(&health).await == Readiness::Ready;
    let body = json!({
        "status": if connected { "healthy" } else { "degraded" },
        "hsmConnected": connected,
        "uptime": go_duration(health.started.elapsed()),
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    (status(connected), Json(body))
}

async fn readyz<C: Connector>(State(health): State<Health<C>>) -> impl IntoResponse {
    match probe(&health).await {
        Readiness::Ready => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Readiness::NotReady { reason, message } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not_ready",
                "reason": "hsm_token_unavailable",
                "detail": reason.as_str(),
                "message": message,
            })),
        ),
    }
}

fn status(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// A duration as Go's `time.Duration.String()` writes whole seconds: `1h2m3s`, `2m0s`, `5s`.
pub fn go_duration(d: Duration) -> String {
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        assert_eq!(go_duration(Duration::from_secs(0)), "0s");
        assert_eq!(go_duration(Duration::from_millis(5900)), "5s");
        assert_eq!(go_duration(Duration::from_secs(120)), "2m0s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
    }
}
