//! Readiness and liveness probes: the spec as plain values (pure), and one attempt against
//! the pod's address (httpGet through hyper, tcpSocket as a connect).

use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, Probe as ProbeSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A probe the runner cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeError {
    /// exec and gRPC probes, or HTTPS.
    #[error("unsupported probe: {0} (only httpGet over HTTP and tcpSocket are run)")]
    Unsupported(&'static str),
    /// A named port the container does not declare, or a port out of range.
    #[error("probe port {0:?} is not a port of the container")]
    Port(String),
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// An HTTP GET: success is a status from 200 to 399.
    Http {
        /// Port.
        port: u16,
        /// Path (with query).
        path: String,
    },
    /// A TCP connect.
    Tcp {
        /// Port.
        port: u16,
    },
}

/// A probe with its timings, as the kubelet reads them (with its defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What to check.
    pub action: Action,
    /// Wait before the first attempt.
    pub initial_delay: Duration,
    /// Time between attempts.
    pub period: Duration,
    /// Time one attempt may take.
    pub timeout: Duration,
    /// Successes in a row that make it pass.
    pub success_threshold: u32,
    /// Failures in a row that make it fail.
    pub failure_threshold: u32,
}

fn port_of(p: &IntOrString, c: &Container) -> Result<u16, ProbeError> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| ProbeError::Port(n.to_string())),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| ProbeError::Port(name.clone())),
    }
}

impl Probe {
    /// Reads a container's probe spec.
    pub fn from_spec(p: &ProbeSpec, c: &Container) -> Result<Self, ProbeError> {
        let action = if let Some(h) = &p.http_get {
            if h.scheme
                .as_deref()
                .is_some_and(|s| !s.eq_ignore_ascii_case("http"))
            {
                return Err(ProbeError::Unsupported("httpGet over HTTPS"));
            }
            Action::Http {
                port: port_of(&h.port, c)?,
                path: h
                    .path
                    .clone()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "/".into()),
            }
        } else if let Some(t) = &p.tcp_socket {
            Action::Tcp {
                port: port_of(&t.port, c)?,
            }
        } else if p.exec.is_some() {
            return Err(ProbeError::Unsupported("exec"));
        } else {
            return Err(ProbeError::Unsupported("gRPC"));
        };
        let secs = |v: Option<i32>, default: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(default).max(0)).unwrap_or_default())
        };
        let count =
            |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
        Ok(Probe {
            action,
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_millis(100)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_millis(100)),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
        })
    }

    /// One attempt against the pod's address: whether it passed.
    pub async fn check(&self, ip: Ipv4Addr) -> bool {
        tokio::time::timeout(self.timeout, self.attempt(ip))
            .await
            .unwrap_or(false)
    }

    async fn attempt(&self, ip: Ipv4Addr) -> bool {
        match &self.action {
            Action::Tcp { port } => tokio::net::TcpStream::connect((ip, *port)).await.is_ok(),
            Action::Http { port, path } => http_get(SocketAddr::from((ip, *port)), path)
                .await
                .is_some_and(|s| (200..400).contains(&s)),
        }
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, "kube-probe/pod-runner")
        .body(Empty::<bytes::Bytes>::new())
        .ok()?;
    let status = sender
        .send_request(request)
        .await
        .ok()
        .map(|r| r.status().as_u16());
    driver.abort();
    status
}

/// Tracks a probe's consecutive results against its thresholds.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    successes: u32,
    failures: u32,
    passing: bool,
}

impl Tracker {
    /// A tracker that starts failing (readiness) or passing (liveness).
    pub fn starting(passing: bool) -> Self {
        Tracker {
            passing,
            ..Tracker::default()
        }
    }

    /// Records one result; answers whether the probe passes now.
    pub fn record(&mut self, probe: &Probe, ok: bool) -> bool {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= probe.success_threshold {
                self.passing = true;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= probe.failure_threshold {
                self.passing = false;
            }
        }
        self.passing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container() -> Container {
        serde_json::from_value(
            json!({"name": "c", "ports": [{"name": "health", "containerPort": 8093}]}),
        )
        .unwrap()
    }

    fn probe(v: serde_json::Value) -> Result<Probe, ProbeError> {
        Probe::from_spec(&serde_json::from_value(v).unwrap(), &container())
    }

    #[test]
    fn specs_are_read_with_the_kubelet_defaults() {
        let p = probe(json!({"httpGet": {"path": "/readyz", "port": "health"}})).unwrap();
        assert_eq!(
            p.action,
            Action::Http {
                port: 8093,
                path: "/readyz".into()
            }
        );
        assert_eq!(
            (
                p.period,
                p.timeout,
                p.failure_threshold,
                p.success_threshold
            ),
            (Duration::from_secs(10), Duration::from_secs(1), 3, 1)
        );
        let p =
            probe(json!({"tcpSocket": {"port": 9090}, "periodSeconds": 2, "failureThreshold": 1}))
                .unwrap();
        assert_eq!(p.action, Action::Tcp { port: 9090 });
        assert_eq!(p.period, Duration::from_secs(2));
        assert_eq!(
            probe(json!({"exec": {"command": ["true"]}})),
            Err(ProbeError::Unsupported("exec"))
        );
        assert_eq!(
            probe(json!({"tcpSocket": {"port": "nope"}})),
            Err(ProbeError::Port("nope".into()))
        );
    }

    #[test]
    fn thresholds_need_results_in_a_row() {
        let p =
            probe(json!({"tcpSocket": {"port": 1}, "successThreshold": 2, "failureThreshold": 2}))
                .unwrap();
        let mut t = Tracker::starting(false);
        assert!(!t.record(&p, true));
        assert!(t.record(&p, true));
        assert!(t.record(&p, false));
        assert!(t.record(&p, true));
        assert!(t.record(&p, false));
        assert!(!t.record(&p, false));
    }

    #[tokio::test]
    async fn checks_reach_a_listener_on_the_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = Probe {
            action: Action::Tcp { port },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 1,
        };
        assert!(p.check(Ipv4Addr::LOCALHOST).await);
        drop(listener);
        assert!(!p.check(Ipv4Addr::LOCALHOST).await);
    }
}
