//! The kubelet device plugin (v1beta1): one plugin per device type, resource
//! `hsm.j5t.io/<type>`, socket `hsm.j5t.io_<type>.sock` in the device-plugins directory. It
//! registers with the kubelet, streams the device list on every change (not on a timer),
//! and answers `Allocate` with the device node (`rw`) and the `HSM_DEVICE_<ID>` /
//! `HSM_SERIAL_<ID>` variables, so agent pods need no privileges. When the kubelet restarts
//! (it deletes the plugin sockets and recreates its own), the plugin serves again and
//! re-registers.

use crate::core::{PluginDevice, env_suffix};
use api::device_plugin_server::{DevicePlugin, DevicePluginServer};
use api::registration_client::RegistrationClient;
use hsm_proto::deviceplugin::v1beta1 as api;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// The Go operator's kubelet registration sockets, tried in order.
pub const KUBELET_SOCKETS: [&str; 3] = [
    "/var/lib/kubelet/plugins_registry/kubelet.sock",
    "/var/lib/kubelet/plugins/kubelet.sock",
    api::KUBELET_SOCKET,
];

/// Where and how plugins run.
#[derive(Clone, Debug)]
pub struct PluginConfig {
    /// The device-plugins directory (plugin sockets are created here).
    pub dir: PathBuf,
    /// Kubelet registration sockets; the first that exists is used.
    pub kubelet_sockets: Vec<PathBuf>,
    /// How often the sockets are checked for a kubelet restart.
    pub poll: Duration,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            dir: PathBuf::from(api::DEVICE_PLUGIN_PATH),
            kubelet_sockets: KUBELET_SOCKETS.iter().map(PathBuf::from).collect(),
            poll: Duration::from_secs(1),
        }
    }
}

/// The socket file name of a resource: `hsm.j5t.io/picohsm` → `hsm.j5t.io_picohsm.sock`.
pub fn socket_name(resource: &str) -> String {
    format!("{}.sock", resource.replace('/', "_"))
}

/// The `DevicePlugin` service of one resource.
#[derive(Clone)]
pub struct PluginService {
    devices: watch::Receiver<Vec<PluginDevice>>,
}

impl PluginService {
    /// Serves the lists `devices` carries.
    pub fn new(devices: watch::Receiver<Vec<PluginDevice>>) -> Self {
        PluginService { devices }
    }
}

/// The response of `ListAndWatch` for a device list.
pub fn list_response(devices: &[PluginDevice]) -> api::ListAndWatchResponse {
    api::ListAndWatchResponse {
        devices: devices
            .iter()
            .map(|d| api::Device {
                id: d.id.clone(),
                health: if d.healthy {
                    api::HEALTHY
                } else {
                    api::UNHEALTHY
                }
                .to_owned(),
                topology: None,
            })
            .collect(),
    }
}

/// What one container gets for its device IDs; an unknown or unhealthy ID is an error.
pub fn allocate(
    devices: &[PluginDevice],
    ids: &[String],
) -> Result<api::ContainerAllocateResponse, Status> {
    let mut response = api::ContainerAllocateResponse::default();
    for id in ids {
        let device = devices
            .iter()
            .find(|d| &d.id == id)
            .ok_or_else(|| Status::not_found(format!("no device {id:?}")))?;
        if !device.healthy {
            return Err(Status::failed_precondition(format!(
                "device {id:?} is not present"
            )));
        }
        response.devices.push(api::DeviceSpec {
            container_path: device.dev_node.clone(),
            host_path: device.dev_node.clone(),
            permissions: device.permissions.clone(),
        });
        let suffix = env_suffix(id);
        response
            .envs
            .insert(format!("HSM_DEVICE_{suffix}"), device.dev_node.clone());
        response
            .envs
            .insert(format!("HSM_SERIAL_{suffix}"), device.serial.clone());
    }
    Ok(response)
}

type ListStream =
    Pin<Box<dyn futures::Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for PluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(api::DevicePluginOptions::default()))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(
        &self,
        _: Request<api::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut devices = self.devices.clone();
        devices.mark_changed();
        let stream = futures::stream::unfold(devices, |mut devices| async move {
            devices.changed().await.ok()?;
            let response = list_response(&devices.borrow_and_update());
            Some((Ok(response), devices))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        // Not advertised; answer with the kubelet's own choice.
        let container_responses = request
            .into_inner()
            .container_requests
            .into_iter()
            .map(|r| api::ContainerPreferredAllocationResponse {
                device_i_ds: r.must_include_device_i_ds,
            })
            .collect();
        Ok(Response::new(api::PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let devices = self.devices.borrow().clone();
        let container_responses = request
            .into_inner()
            .container_requests
            .iter()
            .map(|r| allocate(&devices, &r.devices_ids))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(api::AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

/// Why registering failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// No kubelet socket exists.
    #[error("no kubelet registration socket among {0:?}")]
    NoKubelet(Vec<PathBuf>),
    /// The kubelet could not be reached.
    #[error("cannot reach the kubelet at {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The kubelet refused.
    #[error("the kubelet refused the registration")]
    Refused(#[source] Status),
}

/// A gRPC channel over a Unix socket.
pub async fn unix_channel(
    path: &Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.to_owned();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// Registers `resource` (socket `endpoint` in the device-plugins directory) with the first
/// existing kubelet socket; returns that socket.
pub async fn register(
    config: &PluginConfig,
    resource: &str,
    endpoint: &str,
) -> Result<PathBuf, RegisterError> {
    let kubelet = config
        .kubelet_sockets
        .iter()
        .find(|p| p.exists())
        .ok_or_else(|| RegisterError::NoKubelet(config.kubelet_sockets.clone()))?;
    let channel = unix_channel(kubelet)
        .await
        .map_err(|source| RegisterError::Connect {
            path: kubelet.clone(),
            source,
        })?;
    RegistrationClient::new(channel)
        .register(api::RegisterRequest {
            version: api::VERSION.to_owned(),
            endpoint: endpoint.to_owned(),
            resource_name: resource.to_owned(),
            options: Some(api::DevicePluginOptions::default()),
        })
        .await
        .map_err(RegisterError::Refused)?;
    Ok(kubelet.clone())
}

/// The inode of a file, to notice it being replaced.
fn inode(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// Runs the plugin of `resource` until the task is dropped: serve, register, and start over
/// whenever the kubelet restarts (its socket replaced, or ours removed).
pub async fn run(
    resource: String,
    devices: watch::Receiver<Vec<PluginDevice>>,
    config: PluginConfig,
) {
    let endpoint = socket_name(&resource);
    let socket = config.dir.join(&endpoint);
    loop {
        let _ = std::fs::remove_file(&socket);
        let listener = match tokio::net::UnixListener::bind(&socket) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, socket = %socket.display(), "cannot serve the device plugin");
                tokio::time::sleep(config.poll).await;
                continue;
            }
        };
        let ours = inode(&socket);
        let server = tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(PluginService::new(devices.clone())))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener));
        let registered = async {
            let kubelet = register_until_done(&config, &resource, &endpoint).await;
            tracing::info!(%resource, kubelet = %kubelet.display(), "device plugin registered");
            let kubelet_inode = inode(&kubelet);
            loop {
                tokio::time::sleep(config.poll).await;
                if inode(&socket) != ours || inode(&kubelet) != kubelet_inode {
                    tracing::info!(%resource, "the kubelet restarted; registering again");
                    return;
                }
            }
        };
        // Dropping the server stops it; the kubelet's old connections went with the kubelet.
        tokio::select! {
            result = server => {
                if let Err(error) = result {
                    tracing::warn!(error = %crate::error_chain(&error), %resource, "device plugin server failed");
                }
                tokio::time::sleep(config.poll).await;
            }
            () = registered => {}
        }
    }
}

async fn register_until_done(config: &PluginConfig, resource: &str, endpoint: &str) -> PathBuf {
    // From the poll interval up to 30 s: a node without a kubelet socket is not spammed.
    let mut wait = config.poll;
    loop {
        match register(config, resource, endpoint).await {
            Ok(kubelet) => return kubelet,
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(&error), %resource, "device plugin not registered yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30).max(config.poll));
            }
        }
    }
}
