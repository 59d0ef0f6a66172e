//! The PIN from the Kubernetes Secret that the agent's HSMDevice names in
//! `spec.pkcs11.pinSecret`: the Go agent's default source, kept so that existing HSMDevices
//! work unchanged, with two of its defects fixed.
//!
//! * The selector's `namespace` is honoured (empty means the agent's own namespace); the Go
//!   agent always read the agent's namespace.
//! * The HSMDevice and the Secret are watched, not cached for ten minutes: a rotated PIN, or a
//!   device pointed at another Secret, reaches the agent at once. Since the device never offers
//!   a refused PIN again until its source changes, fixing a wrong PIN in the Secret is all it
//!   takes to bring the agent back.
//!
//! [`PinSource::current`] is called from blocking threads, so the watches run on a background
//! task that keeps the latest answer (the PIN, or why there is none) for it to return.

use crate::pin::{PinError, PinSource};
use futures::StreamExt;
use futures::stream::BoxStream;
use hsm_api::device::HSMDevice;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::watcher;
use parking_lot::RwLock;
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;

/// How long a failed watch waits before it starts again.
const RETRY: Duration = Duration::from_secs(1);

/// The latest answer: the PIN, or why there is none (a message naming objects, never a PIN).
type Latest = Arc<RwLock<Result<SecretString, String>>>;

/// A PIN source following an HSMDevice's `pinSecret`.
pub struct KubernetesPin {
    latest: Latest,
    device: String,
    task: tokio::task::JoinHandle<()>,
}

/// Where the PIN is: a key of a Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    namespace: String,
    name: String,
    key: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "key {} of Secret {}/{}",
            self.key, self.namespace, self.name
        )
    }
}

impl KubernetesPin {
    /// Starts following HSMDevice `device` in `namespace` (the agent's) and the Secret it
    /// names. Needs a tokio runtime.
    pub fn start(client: kube::Client, namespace: &str, device: &str) -> KubernetesPin {
        let latest: Latest = Arc::new(RwLock::new(Err(format!(
            "waiting for HSMDevice {namespace}/{device}"
        ))));
        let task = tokio::spawn(follow(
            client,
            namespace.to_owned(),
            device.to_owned(),
            latest.clone(),
        ));
        KubernetesPin {
            latest,
            device: format!("{namespace}/{device}"),
            task,
        }
    }
}

impl Drop for KubernetesPin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PinSource for KubernetesPin {
    fn current(&self) -> Result<SecretString, PinError> {
        self.latest.read().clone().map_err(PinError::Kubernetes)
    }

    fn describe(&self) -> String {
        format!("the pinSecret of HSMDevice {}", self.device)
    }
}

/// Where `device` says the PIN is, or why it says nowhere.
fn target_of(device: &HSMDevice, agent_namespace: &str) -> Result<Target, String> {
    let name = device.metadata.name.as_deref().unwrap_or_default();
    let selector = device
        .spec
        .pkcs11
        .as_ref()
        .and_then(|p| p.pin_secret.as_ref())
        .ok_or_else(|| {
            format!("HSMDevice {agent_namespace}/{name} has no spec.pkcs11.pinSecret")
        })?;
    Ok(Target {
        namespace: match selector.namespace.as_str() {
            "" => agent_namespace.to_owned(),
            other => other.to_owned(),
        },
        name: selector.name.clone(),
        key: selector.key.clone(),
    })
}

/// The PIN in `secret` at `target`'s key (a trailing newline dropped, as `echo` leaves one).
fn pin_in(secret: Option<Secret>, target: &Target) -> Result<SecretString, String> {
    let secret =
        secret.ok_or_else(|| format!("Secret {}/{} not found", target.namespace, target.name))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&target.key))
        .map(|value| zeroize::Zeroizing::new(value.0.clone()))
        .ok_or_else(|| format!("{target} is missing"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("{target} is not UTF-8"))?;
    match text.trim_end_matches(['\n', '\r']) {
        "" => Err(format!("{target} is empty")),
        pin => Ok(SecretString::from(pin)),
    }
}

/// Keeps `latest` up to date until aborted: follows the HSMDevice, and whichever Secret it
/// names.
async fn follow(client: kube::Client, namespace: String, device: String, latest: Latest) {
    let set = |answer: Result<SecretString, String>| *latest.write() = answer;
    let devices: Api<HSMDevice> = Api::namespaced(client.clone(), &namespace);
    let mut device_events = watcher::watch_object(devices, &device).boxed();
    let mut secret_events: BoxStream<'static, _> = futures::stream::pending().boxed();
    let mut target: Option<Target> = None;
    loop {
        tokio::select! {
            event = device_events.next() => match event {
                Some(Ok(found)) => {
                    let wanted = match &found {
                        Some(d) => target_of(d, &namespace),
                        None => Err(format!("HSMDevice {namespace}/{device} not found")),
                    };
                    match wanted {
                        Ok(wanted) if target.as_ref() == Some(&wanted) => {}
                        Ok(wanted) => {
                            tracing::info!(source = %wanted, "following the PIN");
                            let secrets: Api<Secret> =
                                Api::namespaced(client.clone(), &wanted.namespace);
                            secret_events = watcher::watch_object(secrets, &wanted.name).boxed();
                            set(Err(format!("waiting for {wanted}")));
                            target = Some(wanted);
                        }
                        Err(why) => {
                            secret_events = futures::stream::pending().boxed();
                            target = None;
                            set(Err(why));
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching the HSMDevice failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                None => return,
            },
            event = secret_events.next() => match (event, &target) {
                (Some(Ok(secret)), Some(target)) => set(pin_in(secret, target)),
                (Some(Err(e)), _) => {
                    tracing::warn!(error = %e, "watching the PIN Secret failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                _ => {}
            },
        }
    }
}
