//! [`AgentApi`] over gRPC: the agent's `hsm.v1.HSMAgent` service through the generated
//! tonic client. In a cluster the transport is a channel with mTLS (TLS 1.3 on the agent's
//! side, the agent verified as `hsm-agent`, the manager presenting its client certificate);
//! in tests and benchmarks it can be the agent's service itself, in the same process
//! ([`GrpcAgent::in_process`]), so both run the same client code and protobuf codec.

use super::{AgentApi, AgentError, IndexSnapshot, SecretValues};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use hsm_api::names::mtls::AGENT_SERVER_NAME;
use hsm_proto::v1::hsm_agent_client::HsmAgentClient;
use hsm_proto::v1::hsm_agent_server::{HsmAgent, HsmAgentServer};
use hsm_proto::v1::*;
use std::time::Duration;
use tonic::codegen::{Body, Bytes, StdError};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Unary calls give up after this long (the Go client's per-call timeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The manager's side of mTLS: the CA agents' certificates chain to, and the manager's own
/// client certificate. PEM, as the Secrets hold them.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA (PEM).
    pub ca: String,
    /// The client certificate chain (PEM).
    pub cert: String,
    /// The client key (PEM). Never logged: `Debug` leaves it out.
    pub key: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

/// One agent reached through the gRPC client, over a channel or in process.
#[derive(Clone)]
pub struct GrpcAgent<T = Channel> {
    client: HsmAgentClient<T>,
}

impl<S: HsmAgent> GrpcAgent<HsmAgentServer<S>> {
    /// The agent service `service`, called in this process.
    pub fn in_process(service: S) -> Self {
        GrpcAgent {
            client: HsmAgentClient::new(HsmAgentServer::new(service)),
        }
    }
}

impl GrpcAgent {
    /// An agent at `url` (`https://host:port`, or `http://` without TLS). The channel
    /// connects lazily and reconnects by itself; calls fail while the agent is unreachable.
    pub fn new(url: &str, tls: Option<&ClientTls>) -> Result<Self, AgentError> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|source| AgentError::Connect {
                endpoint: url.to_owned(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if let Some(tls) = tls {
            let config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&tls.ca))
                .identity(Identity::from_pem(&tls.cert, &tls.key))
                .domain_name(AGENT_SERVER_NAME);
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| AgentError::Tls(e.to_string()))?;
        }
        Ok(GrpcAgent {
            client: HsmAgentClient::new(endpoint.connect_lazy()),
        })
    }
}

impl<T: Clone> GrpcAgent<T> {
    fn client(&self) -> HsmAgentClient<T> {
        self.client.clone()
    }
}

/// A unary request with the call timeout.
fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

#[async_trait]
impl<T> AgentApi for GrpcAgent<T>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::Future: Send,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    async fn index(&self) -> Result<IndexSnapshot, AgentError> {
        let index = self
            .client()
            .get_index(request(GetIndexRequest {}))
            .await?
            .into_inner();
        Ok(IndexSnapshot {
            serial: index.serial_number,
            version: index.version,
            entries: index
                .entries
                .into_iter()
                .map(|e| (e.name.clone(), e))
                .collect(),
        })
    }

    async fn changes(
        &self,
        since: u64,
    ) -> Result<BoxStream<'static, Result<ChangeEvent, AgentError>>, AgentError> {
        let stream = self
            .client()
            .watch_changes(WatchChangesRequest {
                since_version: since,
            })
            .await?
            .into_inner();
        Ok(stream.map(|item| item.map_err(AgentError::from)).boxed())
    }

    async fn read(&self, name: &str) -> Result<SecretValues, AgentError> {
        let response = self
            .client()
            .read_secret(request(ReadSecretRequest { path: name.into() }))
            .await?
            .into_inner();
        Ok(response
            .secret_data
            .map(|d| d.data.into_iter().collect())
            .unwrap_or_default())
    }

    async fn metadata(&self, name: &str) -> Result<SecretMetadata, AgentError> {
        let response = self
            .client()
            .read_metadata(request(ReadMetadataRequest { path: name.into() }))
            .await?
            .into_inner();
        Ok(response.metadata.unwrap_or_default())
    }

    async fn write(
        &self,
        name: &str,
        values: SecretValues,
        metadata: SecretMetadata,
    ) -> Result<(), AgentError> {
        self.client()
            .write_secret(request(WriteSecretRequest {
                path: name.into(),
                secret_data: Some(SecretData {
                    data: values.into_iter().collect(),
                }),
                metadata: Some(metadata),
            }))
            .await?;
        Ok(())
    }

    async fn delete(&self, name: &str, key: Option<&str>) -> Result<(), AgentError> {
        self.client()
            .delete_secret(request(DeleteSecretRequest {
                path: name.into(),
                key: key.unwrap_or_default().into(),
            }))
            .await?;
        Ok(())
    }

    async fn info(&self) -> Result<HsmInfo, AgentError> {
        let response = self
            .client()
            .get_info(request(GetInfoRequest {}))
            .await?
            .into_inner();
        Ok(response.hsm_info.unwrap_or_default())
    }

    async fn change_pin(
        &self,
        old_pin: &secrecy::SecretString,
        new_pin: &secrecy::SecretString,
    ) -> Result<(), AgentError> {
        use secrecy::ExposeSecret;
        self.client()
            .change_pin(request(ChangePinRequest {
                old_pin: old_pin.expose_secret().to_owned(),
                new_pin: new_pin.expose_secret().to_owned(),
            }))
            .await?;
        Ok(())
    }

    async fn healthy(&self) -> Result<bool, AgentError> {
        let mut call = request(IsConnectedRequest {});
        call.set_timeout(Duration::from_secs(5));
        Ok(self
            .client()
            .is_connected(call)
            .await?
            .into_inner()
            .connected)
    }
}
