//! The agent process: pcscd (when the module needs it), the device, the gRPC listener (mTLS
//! unless plaintext is asked for explicitly), the health listener, a task that keeps the
//! token connected and re-scans it on a slow timer, and a graceful stop on SIGTERM.

use crate::cli::AgentArgs;
use crate::device::{Device, DeviceConfig};
use crate::kube_pin::KubernetesPin;
use crate::pcscd::{Pcscd, PcscdConfig};
use crate::pin::{EnvPin, FilePin, FixedPin, PinSource};
use crate::service::AgentService;
use anyhow::{Context, bail};
use hsm_proto::v1::hsm_agent_server::HsmAgentServer;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let tls = args.tls_files()?;
    if tls.is_none() && !args.insecure_plaintext {
        bail!(
            "mTLS is required: give --tls-cert-file, --tls-key-file and --tls-client-ca-file \
             (or --insecure-plaintext to serve without TLS)"
        );
    }
    let tls_config = tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()
        .context("loading the mTLS files")?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating the state directory {}", args.state_dir.display()))?;

    let pcscd = if args.wants_pcscd() {
        let debug = args.log_level.eq_ignore_ascii_case("debug");
        Some(
            Pcscd::start(PcscdConfig::standard(debug))
                .await
                .context("starting pcscd")?,
        )
    } else {
        None
    };

    let device = Arc::new(Device::new(
        DeviceConfig {
            state_dir: Some(args.state_dir.clone()),
            ..DeviceConfig::new(&args.pkcs11_library, args.selector())
        },
        pin_source(&args).await?,
    ));
    let service = AgentService::new(device.clone());
    let (stop_tx, stop) = watch::channel(false);
    let keeper = tokio::spawn(keep_connected(
        service.clone(),
        args.rescan_interval,
        stop.clone(),
    ));

    let address = listen_address(args.bind_address, std::env::var(POD_IP).ok().as_deref())?;
    let health = TcpListener::bind((address, args.health_port))
        .await
        .with_context(|| format!("binding the health port {}", args.health_port))?;
    let grpc = TcpListener::bind((address, args.port))
        .await
        .with_context(|| format!("binding the gRPC port {}", args.port))?;
    tracing::info!(
        device = %args.device_name,
        grpc = %grpc.local_addr()?,
        health = %health.local_addr()?,
        mtls = tls.is_some(),
        "agent listening"
    );

    let health_server = axum::serve(health, crate::health::router(device.clone()))
        .with_graceful_shutdown(stopped(stop.clone()));
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(HsmAgentServer::new(service));
    let grpc_server = async {
        match tls_config {
            Some(config) => {
                server
                    .serve_with_incoming_shutdown(
                        crate::tls::incoming(grpc, config),
                        stopped(stop.clone()),
                    )
                    .await
            }
            None => {
                server
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                        stopped(stop.clone()),
                    )
                    .await
            }
        }
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
    });
    let (health_result, grpc_result) = tokio::join!(health_server, grpc_server);
    keeper.abort();
    if let Some(pcscd) = pcscd {
        pcscd.stop().await;
    }
    health_result.context("health server")?;
    grpc_result.context("gRPC server")?;
    tracing::info!("stopped");
    Ok(())
}

/// The variable the manager's agent pods get from the downward API (`status.podIP`).
const POD_IP: &str = "POD_IP";

/// Where the listeners bind: `--bind-address`, else a non-empty `POD_IP`, else every address.
fn listen_address(flag: Option<IpAddr>, pod_ip: Option<&str>) -> anyhow::Result<IpAddr> {
    match (flag, pod_ip.map(str::trim).filter(|s| !s.is_empty())) {
        (Some(address), _) => Ok(address),
        (None, Some(ip)) => ip
            .parse()
            .with_context(|| format!("{POD_IP}={ip:?} is not an IP address")),
        (None, None) => Ok(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
    }
}

/// The PIN source: `--pin-file`, `--pin`, the `HSM_PIN` variable, or else (the Go agent's
/// default) the Secret that the HSMDevice's `pinSecret` names, through the Kubernetes API
/// (in-cluster, or the kubeconfig), the device looked up in `POD_NAMESPACE`.
async fn pin_source(args: &AgentArgs) -> anyhow::Result<Box<dyn PinSource>> {
    use hsm_api::names::env::{HSM_PIN, POD_NAMESPACE};
    if let Some(file) = &args.pin_file {
        return Ok(Box::new(FilePin(file.clone())));
    }
    if let Some(pin) = &args.pin {
        tracing::warn!("--pin puts the PIN on the command line; prefer --pin-file or HSM_PIN");
        return Ok(Box::new(FixedPin(pin.clone())));
    }
    if std::env::var_os(HSM_PIN).is_some() {
        return Ok(Box::new(EnvPin(HSM_PIN.into())));
    }
    let client = kube::Client::try_default().await.context(
        "no PIN source: give --pin-file or HSM_PIN, or run where the Kubernetes API is \
         reachable so the PIN can come from the HSMDevice's pinSecret",
    )?;
    let namespace =
        std::env::var(POD_NAMESPACE).unwrap_or_else(|_| client.default_namespace().to_owned());
    tracing::info!(
        device = %args.device_name, %namespace,
        "the PIN comes from the HSMDevice's pinSecret"
    );
    Ok(Box::new(KubernetesPin::start(
        client,
        &namespace,
        &args.device_name,
    )))
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Connects the token as soon as it can (and after every loss), and re-scans it for changes
/// made outside the operator every `rescan` interval.
async fn keep_connected(service: AgentService, rescan: Duration, mut stop: watch::Receiver<bool>) {
    let mut last_rescan = Instant::now();
    loop {
        let device = service.device().clone();
        let ready = tokio::task::spawn_blocking(move || device.ensure_connected())
            .await
            .map(|r| r == crate::device::Readiness::Ready)
            .unwrap_or(false);
        if ready && last_rescan.elapsed() >= rescan {
            last_rescan = Instant::now();
            match service.rescan().await {
                Ok(report) if !report.is_empty() => tracing::info!(
                    added = report.added.len(),
                    changed = report.changed.len(),
                    removed = report.removed.len(),
                    "re-scan found changes made outside the operator"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e.message(), "re-scan failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_a_non_empty_pod_ip_then_every_address() {
        let pod: IpAddr = "127.0.0.7".parse().unwrap();
        let flag: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(listen_address(Some(flag), Some("127.0.0.7")).unwrap(), flag);
        assert_eq!(listen_address(None, Some("127.0.0.7")).unwrap(), pod);
        let any = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        assert_eq!(listen_address(None, Some("")).unwrap(), any);
        assert_eq!(listen_address(None, None).unwrap(), any);
        let err = listen_address(None, Some("pod")).unwrap_err();
        assert!(err.to_string().contains("POD_IP=\"pod\""), "{err}");
    }
}
