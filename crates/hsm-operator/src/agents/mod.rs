//! The agents as the manager sees them: one port trait for "one device's agent"
//! ([`AgentApi`]), implemented by the gRPC client ([`grpc`]) over an mTLS channel or over the
//! agent service in the same process, and the pool that follows every device's index
//! ([`pool`]), and where each agent is ([`endpoints`]).

pub mod endpoints;
pub mod follow;
pub mod grpc;
pub mod pool;

use async_trait::async_trait;
use futures::stream::BoxStream;
use hsm_proto::v1::{ChangeEvent, HsmInfo, IndexEntry, SecretMetadata};
use std::collections::BTreeMap;

pub use pool::{AgentPool, DeviceChange, DeviceHealth, DeviceSnapshot};

/// A secret's values, key by key.
pub type SecretValues = BTreeMap<String, Vec<u8>>;

/// What an agent answered or why it could not.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent answered with a gRPC status. Its message comes from the agent, which never
    /// puts values or PINs in one.
    #[error("agent answered {code:?}: {message}")]
    Status {
        /// The gRPC code.
        code: tonic::Code,
        /// The agent's message.
        message: String,
    },
    /// No connection to the agent could be made.
    #[error("cannot connect to the agent at {endpoint}")]
    Connect {
        /// Where.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The agent's TLS material could not be used.
    #[error("agent TLS: {0}")]
    Tls(String),
    /// The change stream ended.
    #[error("the agent's change stream ended")]
    StreamEnded,
}

impl AgentError {
    /// The secret does not exist on the device.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            AgentError::Status {
                code: tonic::Code::NotFound,
                ..
            }
        )
    }

    /// A short category for metrics and status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            AgentError::Status { code, .. } => match code {
                tonic::Code::NotFound => "not_found",
                tonic::Code::InvalidArgument => "invalid_argument",
                tonic::Code::Unavailable => "unavailable",
                tonic::Code::DeadlineExceeded => "timeout",
                _ => "agent_error",
            },
            AgentError::Connect { .. } => "connect",
            AgentError::Tls(_) => "tls",
            AgentError::StreamEnded => "stream_ended",
        }
    }
}

impl From<tonic::Status> for AgentError {
    fn from(status: tonic::Status) -> Self {
        AgentError::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// An agent's index: every secret it holds, without values.
#[derive(Debug, Clone, Default)]
pub struct IndexSnapshot {
    /// The device's serial number (its id among devices).
    pub serial: String,
    /// The agent's store version the snapshot was taken at.
    pub version: u64,
    /// The entries, by name.
    pub entries: BTreeMap<String, IndexEntry>,
}

/// One device's agent. Everything the manager does with a device goes through this, so the
/// controllers are tested against in-process agents as well as real ones over mTLS.
#[async_trait]
pub trait AgentApi: Send + Sync + 'static {
    /// The index snapshot (no token calls on the agent).
    async fn index(&self) -> Result<IndexSnapshot, AgentError>;
    /// The changes after `since`, as the agent streams them.
    async fn changes(
        &self,
        since: u64,
    ) -> Result<BoxStream<'static, Result<ChangeEvent, AgentError>>, AgentError>;
    /// A secret's values.
    async fn read(&self, name: &str) -> Result<SecretValues, AgentError>;
    /// A secret's metadata record.
    async fn metadata(&self, name: &str) -> Result<SecretMetadata, AgentError>;
    /// Writes a secret (all keys) with its metadata.
    async fn write(
        &self,
        name: &str,
        values: SecretValues,
        metadata: SecretMetadata,
    ) -> Result<(), AgentError>;
    /// Deletes a secret, or one key of it.
    async fn delete(&self, name: &str, key: Option<&str>) -> Result<(), AgentError>;
    /// The token's identity.
    async fn info(&self) -> Result<HsmInfo, AgentError>;
    /// The agent's own health: `Ok(true)` when it holds a working token session.
    async fn healthy(&self) -> Result<bool, AgentError>;
    /// Changes the token's user PIN. Agents that cannot (an implementation without a
    /// token) answer `Unimplemented`.
    async fn change_pin(
        &self,
        old_pin: &secrecy::SecretString,
        new_pin: &secrecy::SecretString,
    ) -> Result<(), AgentError> {
        let _ = (old_pin, new_pin);
        Err(AgentError::Status {
            code: tonic::Code::Unimplemented,
            message: "this agent cannot change a PIN".into(),
        })
    }
}
