//! Watches: newline-delimited JSON events from a resourceVersion, with selectors, bookmarks,
//! `timeoutSeconds`, `sendInitialEvents`, and the real server's 410 for a version older than
//! the kept history (an ERROR event carrying an Expired Status, on a 200 response).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::error::ApiError;
use crate::request::{Target, present};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, EventType, Store};

/// The parameters of a watch request.
#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    /// `resourceVersion`; absent or `0` starts with the current objects as ADDED.
    pub resource_version: Option<String>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// `sendInitialEvents`: current objects first, then a bookmark marking their end.
    pub send_initial_events: bool,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

/// How a watch renders the objects of its events for kubectl (as Tables); `None` sends the
/// objects themselves.
pub type Render = Option<Arc<dyn Fn(&Value) -> Value + Send + Sync>>;

/// Starts a watch: everything up to now is decided under the store lock, the rest is a task
/// that forwards live events until the timeout, the client leaves, or it falls behind.
pub fn start(
    store: &Store,
    t: &Target,
    p: WatchParams,
    bookmark_interval: Duration,
    render: Render,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let key = t.key();
    let ns = t.namespace.clone();
    let current = store.current_rv();
    let from_now = matches!(p.resource_version.as_deref(), None | Some("" | "0"));
    let passes = {
        let p = p.clone();
        move |o: &Value| {
            (ns.is_empty() || o["metadata"]["namespace"].as_str() == Some(ns.as_str()))
                && p.labels.matches(o)
                && p.fields.matches(o)
        }
    };
    let mut initial: Vec<Bytes> = Vec::new();
    let from = if from_now || p.send_initial_events {
        let ns_filter = (!t.namespace.is_empty()).then_some(t.namespace.as_str());
        for o in store.list(&key, ns_filter).filter(|o| passes(o)) {
            initial.push(line(
                "ADDED",
                &rendered(&render, present(&t.res, &t.version, o)),
            ));
        }
        if p.send_initial_events && p.bookmarks {
            initial.push(bookmark(t, current, true));
        }
        current
    } else {
        p.resource_version
            .as_deref()
            .unwrap_or_default()
            .parse::<u64>()
            .map_err(|_| {
                ApiError::BadRequest(format!(
                    "resourceVersion: Invalid value: {:?}: must be a number",
                    p.resource_version
                ))
            })?
    };
    let (backlog, live) = match store.watch_from(&key, from) {
        Ok(x) => x,
        Err(too_old) => {
            let status = ApiError::Expired(format!(
                "too old resource version: {} ({})",
                too_old.requested, too_old.oldest
            ))
            .to_status();
            let _ = tx.try_send(line("ERROR", &status));
            return Ok(rx);
        }
    };
    let storage_version =
        t.version == t.res.storage_version() && !crate::events::is_events_group(&t.res);
    let render_event = {
        let t = t.clone();
        move |e: &Event| -> Option<Bytes> {
            let now_in = passes(&e.object);
            let was_in = e.old.as_deref().is_some_and(&passes);
            let (type_, obj): (&str, &Value) = match e.type_ {
                EventType::Added if now_in => ("ADDED", &e.object),
                EventType::Deleted if now_in => ("DELETED", &e.object),
                EventType::Modified if now_in && was_in => ("MODIFIED", &e.object),
                EventType::Modified if now_in => ("ADDED", &e.object),
                EventType::Modified if was_in => ("DELETED", e.old.as_deref()?),
                _ => return None,
            };
            if render.is_none() && storage_version && std::ptr::eq(obj, &*e.object) {
                // The stored object is already in its wire form (storage version, this
                // event's resourceVersion): encode it once for every watch.
                let wire = e.wire.get_or_init(|| {
                    Bytes::from(serde_json::to_vec(&*e.object).unwrap_or_default())
                });
                return Some(line_raw(type_, wire));
            }
            let mut obj = obj.clone();
            obj["metadata"]["resourceVersion"] = json!(e.rv.to_string());
            Some(line(
                type_,
                &rendered(&render, present(&t.res, &t.version, &obj)),
            ))
        }
    };
    let mut last_rv = from.max(backlog.last().map_or(0, |e| e.rv));
    let mut pending: Vec<Bytes> = initial;
    pending.extend(backlog.iter().filter_map(|e| render_event(e)));
    let t = t.clone();
    tokio::spawn(async move {
        let mut live = live;
        for b in pending {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let deadline = p.timeout.map(|d| tokio::time::Instant::now() + d);
        let mut ticker = tokio::time::interval(bookmark_interval);
        ticker.tick().await;
        loop {
            let timeout = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = timeout => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if p.bookmarks => {
                    if tx.send(bookmark(&t, last_rv, false)).await.is_err() {
                        return;
                    }
                }
                ev = live.recv() => match ev {
                    Ok(e) => {
                        if e.rv <= last_rv {
                            continue;
                        }
                        last_rv = e.rv;
                        if e.resource != key {
                            continue;
                        }
                        if let Some(b) = render_event(&e)
                            && tx.send(b).await.is_err()
                        {
                            return;
                        }
                    }
                    // Fell behind or the store is gone: end the watch; the client resumes
                    // from its last resourceVersion.
                    Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(rx)
}

fn rendered(render: &Render, object: Value) -> Value {
    match render {
        Some(r) => r(&object),
        None => object,
    }
}

fn line_raw(type_: &str, object: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(object.len() + 32);
    v.extend_from_slice(b"{\"type\":\"");
    v.extend_from_slice(type_.as_bytes());
    v.extend_from_slice(b"\",\"object\":");
    v.extend_from_slice(object);
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}

fn line(type_: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(t: &Target, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({
            "kind": t.res.kind,
            "apiVersion": t.res.api_version(&t.version),
            "metadata": metadata,
        }),
    )
}
