//! Events on HSMSecrets (events.k8s.io/v1), with a bounded memory of the recent ones.
//!
//! kube's `Recorder` keeps every event it sent for six minutes, whole (`Event` with its
//! metadata and references, about 3 KiB a table slot): a first sync of 10 000 HSMSecrets
//! records 10 000 `SecretCreated` and held 47 MiB of the manager's heap. Repeats, the only
//! reason to remember an event, are rare here (a Secret restored again, a device failing
//! again), so this recorder remembers at most [`MAX_RECENT`] events, by what identifies a
//! repeat, with the name and count needed to bump the event's series.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use std::collections::HashMap;

/// How many recent events are remembered for series.
pub const MAX_RECENT: usize = 1024;
/// How long a repeat counts as the same event (kube's and client-go's six minutes).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What makes two events the same one repeated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    name: String,
    uid: String,
    warning: bool,
    reason: String,
    action: String,
}

/// A remembered event: its object name, how often it happened, when last.
#[derive(Debug, Clone)]
struct Recent {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Publishes events as `controller`, remembering at most [`MAX_RECENT`].
pub struct EventRecorder {
    client: kube::Client,
    controller: String,
    recent: parking_lot::Mutex<HashMap<Key, Recent>>,
}

impl EventRecorder {
    /// A recorder reporting as `controller`.
    pub fn new(client: kube::Client, controller: &str) -> Self {
        EventRecorder {
            client,
            controller: controller.to_owned(),
            recent: parking_lot::Mutex::default(),
        }
    }

    /// How many events are remembered now.
    pub fn remembered(&self) -> usize {
        self.recent.lock().len()
    }

    /// Records `event` on `regarding`: a new Event, or the series of the same one seen within
    /// six minutes bumped.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key {
            namespace: regarding.namespace.clone().unwrap_or_default(),
            name: regarding.name.clone().unwrap_or_default(),
            uid: regarding.uid.clone().unwrap_or_default(),
            warning: matches!(event.type_, EventType::Warning),
            reason: event.reason.clone(),
            action: event.action.clone(),
        };
        let namespace = if key.namespace.is_empty() {
            "default".to_owned()
        } else {
            key.namespace.clone()
        };
        let api = Api::<K8sEvent>::namespaced(self.client.clone(), &namespace);
        let repeat = self
            .recent
            .lock()
            .get(&key)
            .filter(|r| r.last + SERIES_WINDOW > now)
            .cloned();
        let recent = match repeat {
            Some(recent) => {
                let count = recent.count + 1;
                let series = serde_json::json!({"series": EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                }});
                api.patch(
                    &recent.name,
                    &PatchParams::default(),
                    &Patch::Merge(&series),
                )
                .await?;
                Recent {
                    name: recent.name,
                    count,
                    last: now,
                }
            }
            None => {
                let object = self.new_event(event, regarding, &namespace, now);
                let name = object.metadata.name.clone().unwrap_or_default();
                api.create(&PostParams::default(), &object).await?;
                Recent {
                    name,
                    count: 1,
                    last: now,
                }
            }
        };
        self.remember(key, recent, now);
        Ok(())
    }

    /// Keeps `recent`, dropping expired events and then the oldest to stay within the bound.
    fn remember(&self, key: Key, recent: Recent, now: Timestamp) {
        let mut remembered = self.recent.lock();
        if !remembered.contains_key(&key) && remembered.len() >= MAX_RECENT {
            remembered.retain(|_, r| r.last + SERIES_WINDOW > now);
            if remembered.len() >= MAX_RECENT
                && let Some(oldest) = remembered
                    .iter()
                    .min_by_key(|(_, r)| r.last)
                    .map(|(k, _)| k.clone())
            {
                remembered.remove(&oldest);
            }
        }
        remembered.insert(key, recent);
    }

    fn new_event(
        &self,
        event: &Event,
        regarding: &ObjectReference,
        namespace: &str,
        now: Timestamp,
    ) -> K8sEvent {
        K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.controller.clone()),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        }
    }
}
