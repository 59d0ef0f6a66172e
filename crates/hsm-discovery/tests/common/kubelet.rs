//! A test double of the kubelet's side of the device plugin API, on a real Unix socket with
//! real gRPC: it serves `Registration` at `<dir>/kubelet.sock` and, for each registration,
//! dials the plugin's socket back and follows its `ListAndWatch` stream, as the kubelet does.

use api::device_plugin_client::DevicePluginClient;
use api::registration_server::{Registration, RegistrationServer};
use hsm_discovery::plugin::unix_channel;
use hsm_proto::deviceplugin::v1beta1 as api;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

/// The kubelet double.
pub struct Kubelet {
    /// Registrations, in order.
    pub registrations: mpsc::UnboundedReceiver<api::RegisterRequest>,
    /// Every `ListAndWatch` update received, with the endpoint it came from.
    pub lists: mpsc::UnboundedReceiver<(String, api::ListAndWatchResponse)>,
    /// The socket.
    pub socket: PathBuf,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

#[derive(Clone)]
struct Double {
    dir: PathBuf,
    registrations: mpsc::UnboundedSender<api::RegisterRequest>,
    lists: mpsc::UnboundedSender<(String, api::ListAndWatchResponse)>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    refuse_first: Arc<Mutex<u32>>,
}

#[tonic::async_trait]
impl Registration for Double {
    async fn register(
        &self,
        request: Request<api::RegisterRequest>,
    ) -> Result<Response<api::Empty>, Status> {
        let request = request.into_inner();
        if request.version != api::VERSION {
            return Err(Status::invalid_argument("unsupported version"));
        }
        {
            let mut refuse = self.refuse_first.lock().unwrap();
            if *refuse > 0 {
                *refuse -= 1;
                return Err(Status::unavailable("not yet"));
            }
        }
        let _ = self.registrations.send(request.clone());
        let (socket, lists) = (self.dir.join(&request.endpoint), self.lists.clone());
        let endpoint = request.endpoint.clone();
        let follow = tokio::spawn(async move {
            let Ok(channel) = unix_channel(&socket).await else {
                return;
            };
            let Ok(stream) = DevicePluginClient::new(channel)
                .list_and_watch(api::Empty {})
                .await
            else {
                return;
            };
            let mut stream = stream.into_inner();
            while let Ok(Some(update)) = stream.message().await {
                let _ = lists.send((endpoint.clone(), update));
            }
        });
        self.tasks.lock().unwrap().push(follow);
        Ok(Response::new(api::Empty {}))
    }
}

impl Kubelet {
    /// Starts serving at `<dir>/kubelet.sock`; refuses the first `refuse` registrations.
    pub fn start(dir: &Path, refuse: u32) -> Kubelet {
        let socket = dir.join("kubelet.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let (reg_tx, registrations) = mpsc::unbounded_channel();
        let (list_tx, lists) = mpsc::unbounded_channel();
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let double = Double {
            dir: dir.to_owned(),
            registrations: reg_tx,
            lists: list_tx,
            tasks: tasks.clone(),
            refuse_first: Arc::new(Mutex::new(refuse)),
        };
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(double))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await;
        });
        tasks.lock().unwrap().push(server);
        Kubelet {
            registrations,
            lists,
            socket,
            tasks,
        }
    }

    /// A client of the plugin at `endpoint`, as the kubelet uses for `Allocate`.
    pub async fn plugin(&self, endpoint: &str) -> DevicePluginClient<tonic::transport::Channel> {
        let dir = self.socket.parent().unwrap();
        DevicePluginClient::new(unix_channel(&dir.join(endpoint)).await.unwrap())
    }

    /// Stops as a restarting kubelet does: its server and streams end, and it removes every
    /// socket in the directory (its own and the plugins').
    pub fn stop(self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        let dir = self.socket.parent().unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sock") {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}
