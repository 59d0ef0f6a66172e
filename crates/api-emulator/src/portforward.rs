//! `pods/{name}/portforward` as the real API server (with its kubelet behind it) serves it to
//! WebSocket clients such as kube-rs: a WebSocket upgrade with the `v4.channel.k8s.io`
//! subprotocol, the ports in `ports` query parameters (repeated or comma-separated), and per
//! port two channels — data (`2i`) and error (`2i + 1`) — whose first frames carry the port as
//! two little-endian bytes. Each port's bytes are relayed over TCP to the pod's
//! `status.podIP` (the e2e pod runner gives every pod its own 127.0.X.Y address, so the
//! address a kubelet would reach inside the pod's network namespace is reachable here).
//!
//! As the real server:
//!
//! - authorisation: the upgrade is a `GET`, authorised as `get` on `pods/portforward` by the
//!   request filter, and then — as `AuthorizePodWebsocketUpgradeCreatePermission` (on by
//!   default since Kubernetes 1.35) does — also as `create`, so a role granting only `get`
//!   cannot open a tunnel; a `POST` is `create` already;
//! - before the upgrade: a missing pod is a 404 Status, a pod without a node a 400 ("does not
//!   have a host assigned"), a request without an upgrade a 400 ("Upgrade request
//!   required"), a pod that is not running or has no IP a 400, missing or bad ports a 400;
//! - after it: a port nothing listens on gets the kubelet's message on its error channel
//!   (`error forwarding port … connection refused`); when every port's connection has ended
//!   the WebSocket is closed; a Close from the client ends every connection.
//!
//! Not served: SPDY (`kubectl port-forward` up to 1.30, and the fallback of later
//! versions), the SPDY-over-WebSocket tunnel (`SPDY/3.1+portforward.k8s.io`, what kubectl
//! 1.31+ tries first) and the base64 text subprotocol `v4.base64.channel.k8s.io`: each gets a
//! 400 naming what is served. The upgrade needs a socket, so it works through
//! [`crate::Emulator::serve`] only; an in-process client gets a 400 saying so.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::authn::UserInfo;
use crate::error::ApiError;
use crate::request::Target;
use crate::routes::ResponseBody;
use crate::{Emulator, ops, rbac};

/// The binary channel subprotocol of port forwarding.
pub const PROTOCOL_V4: &str = "v4.channel.k8s.io";

/// The subprotocols served: `v4.channel.k8s.io`, or none at all (the kubelet treats a
/// request without `Sec-WebSocket-Protocol` as the same binary framing).
const SERVED: [&str; 1] = [PROTOCOL_V4];

/// How long a connection to a pod's port may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest read from a pod relayed as one frame.
const CHUNK: usize = 32 * 1024;

/// Ends the tunnels of a server when it stops: [`crate::server::Server`] puts one in every
/// request's extensions and drops its sender when dropped.
#[derive(Clone)]
pub struct ServerShutdown(pub watch::Receiver<()>);

/// Where a pod's ports are relayed to, and how the kubelet names it in error messages.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEndpoint {
    /// `status.podIP`.
    pub ip: IpAddr,
    /// `<name>_<namespace>`, the kubelet's full name of the pod.
    pub full_name: String,
    /// The pod's uid.
    pub uid: String,
}

/// The ports a request asks for: every `ports` query parameter, each a comma-separated list
/// (kube-rs sends `ports=80%2C1234`, client-go one parameter per port).
pub fn ports_of_query(query: Option<&str>) -> Result<Vec<u16>, ApiError> {
    let values: Vec<String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "ports")
        .map(|(_, v)| v.into_owned())
        .collect();
    if values.is_empty() {
        return Err(ApiError::BadRequest(
            "query parameter \"ports\" is required".into(),
        ));
    }
    let mut ports = Vec::new();
    for value in &values {
        if value.is_empty() {
            return Err(ApiError::BadRequest(
                "query parameter \"ports\" cannot be empty".into(),
            ));
        }
        for p in value.split(',') {
            let port: u16 = p.trim().parse().map_err(|e| {
                ApiError::BadRequest(format!("unable to parse {value:?} as a port: {e}"))
            })?;
            if port == 0 {
                return Err(ApiError::BadRequest(format!("port {value:?} must be > 0")));
            }
            ports.push(port);
        }
    }
    Ok(ports)
}

/// The subprotocol to answer with, from the client's offer (`None`: the client offered none,
/// which the kubelet serves as the binary framing). Offers of only other protocols are a
/// 400, as the kubelet's handshake refuses them.
pub fn negotiate(headers: &HeaderMap) -> Result<Option<&'static str>, ApiError> {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(None);
    }
    offered
        .iter()
        .find_map(|p| SERVED.iter().find(|s| **s == p.as_str()).copied())
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "requested protocol(s) are not supported: {offered:?}; supports {SERVED:?} \
                 (the emulator serves port forwarding over plain WebSocket channels only: \
                 no SPDY, no SPDY-over-WebSocket tunnel)"
            ))
        })
}

/// Where a pod's ports can be reached, or why they cannot: the pod must be bound to a node,
/// running, and have an IP.
pub fn pod_endpoint(pod: &Value) -> Result<PodEndpoint, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    bound_to_node(pod)?;
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if phase != "Running" {
        return Err(ApiError::BadRequest(format!(
            "unable to forward to pod {name}: it is not running (phase {phase})"
        )));
    }
    let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
    let ip = ip.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "unable to forward to pod {name}: it has no IP address (status.podIP {ip:?})"
        ))
    })?;
    Ok(PodEndpoint {
        ip,
        full_name: format!("{name}_{namespace}"),
        uid: pod["metadata"]["uid"].as_str().unwrap_or_default().into(),
    })
}

/// The API server's own check, before it proxies to the pod's kubelet: the pod is bound to
/// a node.
fn bound_to_node(pod: &Value) -> Result<(), ApiError> {
    if pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        return Err(ApiError::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    Ok(())
}

/// Whether the request asks to upgrade to a WebSocket.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or_default()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    has(header::UPGRADE, "websocket") && has(header::CONNECTION, "upgrade")
}

impl Emulator {
    /// `GET` (or `POST`) `pods/{name}/portforward`: checks, then answers 101 and relays in
    /// the background until either side ends.
    pub(crate) fn port_forward(
        &self,
        req: &Request<Bytes>,
        t: &Target,
        user: &UserInfo,
    ) -> Result<Response<ResponseBody>, ApiError> {
        if req.method() != Method::GET && req.method() != Method::POST {
            return Err(ApiError::MethodNotAllowed(
                "the server does not allow this method on the requested resource".into(),
            ));
        }
        if req.method() == Method::GET {
            self.authorize_create(t, user)?;
        }
        let pod = ops::get(&self.inner.store.lock(), t)?;
        bound_to_node(&pod)?;
        if !is_websocket_upgrade(req.headers()) {
            let spdy = req
                .headers()
                .get(header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_uppercase().starts_with("SPDY"));
            return Err(ApiError::BadRequest(if spdy {
                format!(
                    "SPDY upgrades are not served by the emulator: use a WebSocket with the \
                     {PROTOCOL_V4} subprotocol"
                )
            } else {
                "Upgrade request required".into()
            }));
        }
        let endpoint = pod_endpoint(&pod)?;
        // The protocol first: kubectl's SPDY tunnel names its ports inside the tunnel, not
        // in the query, and should hear that the tunnel is what is not served.
        let protocol = negotiate(req.headers())?;
        let ports = ports_of_query(req.uri().query())?;
        let key = req
            .headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or_else(|| ApiError::BadRequest("missing Sec-WebSocket-Key".into()))?;
        let on_upgrade = req
            .extensions()
            .get::<OnUpgrade>()
            .cloned()
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "port forwarding needs a connection to upgrade: serve the emulator over HTTP \
                 (Emulator::serve) rather than calling it in-process"
                        .into(),
                )
            })?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ApiError::Internal("no runtime to relay the port-forward on".into()))?;
        let shutdown = req.extensions().get::<ServerShutdown>().cloned();
        runtime.spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => relay(upgraded, ports, endpoint, shutdown).await,
                Err(e) => tracing::debug!("port-forward upgrade failed: {e}"),
            }
        });
        let mut response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(
                header::SEC_WEBSOCKET_ACCEPT,
                derive_accept_key(key.as_bytes()),
            );
        if let Some(protocol) = protocol {
            response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        Ok(response
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .expect("valid response"))
    }

    /// The second check of a WebSocket upgrade: `create` on `pods/portforward`, as the real
    /// server makes since `AuthorizePodWebsocketUpgradeCreatePermission`.
    fn authorize_create(&self, t: &Target, user: &UserInfo) -> Result<(), ApiError> {
        let attributes = rbac::Attributes {
            user: user.clone(),
            verb: "create".into(),
            resource: Some(rbac::ResourceAttributes {
                namespace: t.namespace.clone(),
                group: String::new(),
                resource: "pods".into(),
                subresource: "portforward".into(),
                name: t.name.clone(),
            }),
            path: String::new(),
        };
        let snapshot = self.rbac_snapshot(&self.inner.store.lock());
        self.authorize_within(&snapshot, &attributes)
    }
}

/// What goes to the client: a frame (channel byte first), or the end of one port.
enum Out {
    Frame(Bytes),
    PortEnded,
}

fn frame(channel: u8, payload: &[u8]) -> Bytes {
    let mut bytes = Vec::with_capacity(payload.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(payload);
    Bytes::from(bytes)
}

/// The tunnel: the ports' first frames, a connection to each port, then bytes both ways
/// until every port has ended, the client closes, or the server stops.
async fn relay(
    upgraded: Upgraded,
    ports: Vec<u16>,
    pod: PodEndpoint,
    shutdown: Option<ServerShutdown>,
) {
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let (mut sink, stream) = ws.split();
    for (i, port) in ports.iter().enumerate() {
        let data = (2 * i) as u8;
        for channel in [data, data + 1] {
            if sink
                .send(Message::Binary(frame(channel, &port.to_le_bytes())))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let (out_tx, out_rx) = mpsc::channel::<Out>(64);
    let mut readers = tokio::task::JoinSet::new();
    let mut writers = Vec::with_capacity(ports.len());
    let mut open = 0;
    for (i, port) in ports.iter().enumerate() {
        let data = (2 * i) as u8;
        match connect(SocketAddr::new(pod.ip, *port)).await {
            Ok(conn) => {
                let (read, write) = conn.into_split();
                writers.push(Some(write));
                readers.spawn(from_pod(read, data, out_tx.clone()));
                open += 1;
            }
            Err(e) => {
                writers.push(None);
                let message = format!(
                    "error forwarding port {port} to pod {}, uid {}: failed to connect to {}:{port}: {e}",
                    pod.full_name, pod.uid, pod.ip
                );
                if sink
                    .send(Message::Binary(frame(data + 1, message.as_bytes())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    drop(out_tx);
    let stopped = async {
        match shutdown {
            Some(ServerShutdown(mut rx)) => while rx.changed().await.is_ok() {},
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = to_client(&mut sink, out_rx, open) => {}
        () = from_client(stream, writers) => {}
        () = stopped => {}
    }
    // The closing handshake: the reply to the client's Close, or our own Close (as the
    // kubelet closes the connection once every port is done).
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    // Dropping `readers` aborts what still reads from the pods.
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "i/o timeout"))??;
    let _ = conn.set_nodelay(true);
    Ok(conn)
}

/// A pod's bytes on its data channel, then the port's end.
async fn from_pod(mut read: OwnedReadHalf, channel: u8, out: mpsc::Sender<Out>) {
    let mut buf = vec![0u8; CHUNK + 1];
    buf[0] = channel;
    loop {
        match read.read(&mut buf[1..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out
                    .send(Out::Frame(Bytes::copy_from_slice(&buf[..=n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = out.send(Out::PortEnded).await;
}

/// Frames to the client, until no port is left.
async fn to_client<S>(sink: &mut S, mut out: mpsc::Receiver<Out>, mut open: usize)
where
    S: futures::Sink<Message> + Unpin,
{
    while open > 0 {
        match out.recv().await {
            Some(Out::Frame(bytes)) => {
                if sink.send(Message::Binary(bytes)).await.is_err() {
                    return;
                }
            }
            Some(Out::PortEnded) => open -= 1,
            None => break,
        }
    }
}

/// The client's data frames to their ports, until it closes.
async fn from_client<S>(mut stream: S, mut writers: Vec<Option<OwnedWriteHalf>>)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Binary(bytes) if bytes.len() > 1 => {
                let channel = usize::from(bytes[0]);
                // Odd channels are the error channels, written by the server only.
                if channel % 2 != 0 {
                    continue;
                }
                if let Some(slot) = writers.get_mut(channel / 2)
                    && let Some(write) = slot
                    && write.write_all(&bytes[1..]).await.is_err()
                {
                    *slot = None;
                }
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports_come_repeated_or_comma_separated() {
        assert_eq!(ports_of_query(Some("ports=80%2C1234")).unwrap(), [80, 1234]);
        assert_eq!(
            ports_of_query(Some("ports=80&ports=81,82")).unwrap(),
            [80, 81, 82]
        );
        for bad in [
            None,
            Some(""),
            Some("ports="),
            Some("ports=0"),
            Some("ports=x"),
        ] {
            let e = ports_of_query(bad).unwrap_err();
            assert_eq!(e.code(), 400, "{bad:?}: {e}");
        }
        assert!(
            ports_of_query(Some("ports=70000"))
                .unwrap_err()
                .to_string()
                .contains("\"70000\"")
        );
    }

    #[test]
    fn v4_is_chosen_from_what_kube_rs_offers_and_spdy_is_refused() {
        let offer = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, v.parse().unwrap());
            h
        };
        assert_eq!(
            negotiate(&offer("v5.channel.k8s.io, v4.channel.k8s.io")).unwrap(),
            Some(PROTOCOL_V4)
        );
        assert_eq!(negotiate(&HeaderMap::new()).unwrap(), None);
        let e = negotiate(&offer("SPDY/3.1+portforward.k8s.io")).unwrap_err();
        assert_eq!(e.code(), 400);
        assert!(e.to_string().contains("not supported"), "{e}");
        assert!(negotiate(&offer("v4.base64.channel.k8s.io")).is_err());
    }

    #[test]
    fn only_a_bound_running_pod_with_an_ip_is_forwarded_to() {
        let pod = |node: &str, phase: &str, ip: &str| {
            json!({"metadata": {"name": "p", "namespace": "n", "uid": "u"},
                   "spec": {"nodeName": node},
                   "status": {"phase": phase, "podIP": ip}})
        };
        assert_eq!(
            pod_endpoint(&pod("local", "Running", "127.0.3.4")).unwrap(),
            PodEndpoint {
                ip: "127.0.3.4".parse().unwrap(),
                full_name: "p_n".into(),
                uid: "u".into()
            }
        );
        let e = pod_endpoint(&pod("", "Running", "127.0.3.4")).unwrap_err();
        assert_eq!(e.to_string(), "pod p does not have a host assigned");
        let e = pod_endpoint(&pod("local", "Pending", "")).unwrap_err();
        assert!(e.to_string().contains("not running (phase Pending)"), "{e}");
        let e = pod_endpoint(&pod("local", "Running", "")).unwrap_err();
        assert!(e.to_string().contains("no IP address"), "{e}");
        assert_eq!(e.code(), 400);
    }

    #[test]
    fn only_websocket_upgrades_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "WebSocket".parse().unwrap());
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert!(is_websocket_upgrade(&h));
        h.insert(header::UPGRADE, "SPDY/3.1".parse().unwrap());
        assert!(!is_websocket_upgrade(&h));
    }
}
