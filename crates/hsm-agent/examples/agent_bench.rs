//! `cargo xtask bench agent`: read, write and list latency through the agent's gRPC service
//! over mTLS, beside the same operations on the device's store in-process, on SoftHSM2.
//! Secrets have 5 keys of 1 KiB. The two paths alternate call by call. Then throughput under
//! load: 16 requests in flight on one channel, against 16 in-process callers. Prints PASS or
//! FAIL against the target (gRPC adds < 1 ms to a read at p50) and exits non-zero on a miss.

use hsm_agent::device::{Device, DeviceConfig};
use hsm_agent::pin::FixedPin;
use hsm_agent::service::AgentService;
use hsm_agent::tls::{TlsFiles, incoming, server_config};
use hsm_proto::v1::hsm_agent_client::HsmAgentClient;
use hsm_proto::v1::hsm_agent_server::HsmAgentServer;
use hsm_proto::v1::{ListSecretsRequest, ReadSecretRequest, SecretData, WriteSecretRequest};
use hsm_store::testing::{SOFTHSM2_MODULE, SoftHsm, TEST_PIN};
use hsm_store::{MetadataChange, SecretStore, SecretValue};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const KEYS: usize = 5;
const VALUE_LEN: usize = 1024;
const SECRETS: usize = 50;
const READS: usize = 1000;
const WRITES: usize = 100;
const LISTS: usize = 1000;
/// Requests in flight in the throughput runs.
const IN_FLIGHT: usize = 16;
/// Requests per throughput run.
const LOAD_REQUESTS: usize = 4000;
/// The target: what gRPC over mTLS may add to a read at p50.
const READ_OVERHEAD_TARGET: Duration = Duration::from_millis(1);

fn value(i: usize, k: usize, round: usize) -> Vec<u8> {
    format!("{i}-{k}-{round}-")
        .bytes()
        .cycle()
        .take(VALUE_LEN)
        .collect()
}

fn certs(dir: &std::path::Path) -> (TlsFiles, String, (String, String)) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "hsm-mtls-ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server, client) = (leaf("hsm-agent"), leaf("hsm-manager"));
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: dir.join("ca.crt"),
    };
    std::fs::write(&files.cert, &server.0).unwrap();
    std::fs::write(&files.key, &server.1).unwrap();
    std::fs::write(&files.client_ca, &ca_pem).unwrap();
    (files, ca_pem, client)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

struct Row {
    what: &'static str,
    direct: Vec<Duration>,
    grpc: Vec<Duration>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let (files, ca_pem, client_identity) = certs(dir.path());
    let device = Arc::new(Device::new(
        DeviceConfig::new(SOFTHSM2_MODULE, hsm.selector()),
        Box::new(FixedPin(TEST_PIN.into())),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stream = incoming(listener, server_config(&files).unwrap());
    let service = AgentService::new(device.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(HsmAgentServer::new(service))
            .serve_with_incoming(stream)
            .await
            .unwrap();
    });
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca_pem))
                .identity(Identity::from_pem(&client_identity.0, &client_identity.1))
                .domain_name("hsm-agent"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HsmAgentClient::new(channel);

    let direct_data = |i: usize, round: usize| -> hsm_store::SecretData {
        (0..KEYS)
            .map(|k| (format!("key{k}"), SecretValue::new(value(i, k, round))))
            .collect()
    };
    let grpc_write = |i: usize, round: usize| WriteSecretRequest {
        path: format!("g{i}"),
        secret_data: Some(SecretData {
            data: (0..KEYS)
                .map(|k| (format!("key{k}"), value(i, k, round)))
                .collect(),
        }),
        metadata: None,
    };
    // Both paths get their own secrets, written the same way.
    for i in 0..SECRETS {
        let d = device.clone();
        let data = direct_data(i, 0);
        tokio::task::spawn_blocking(move || {
            d.with_store(|s| s.write(&format!("d{i}"), &data, MetadataChange::Keep))
        })
        .await
        .unwrap()
        .unwrap();
        client.write_secret(grpc_write(i, 0)).await.unwrap();
    }

    let mut rows = vec![
        Row {
            what: "read (5 keys x 1 KiB)",
            direct: vec![],
            grpc: vec![],
        },
        Row {
            what: "write (5 keys change)",
            direct: vec![],
            grpc: vec![],
        },
        Row {
            what: "list",
            direct: vec![],
            grpc: vec![],
        },
    ];
    for n in 0..READS {
        let i = n % SECRETS;
        let d = device.clone();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || d.with_store(|s| s.read(&format!("d{i}"))))
            .await
            .unwrap()
            .unwrap();
        rows[0].direct.push(started.elapsed());
        let started = Instant::now();
        client
            .read_secret(ReadSecretRequest {
                path: format!("g{i}"),
            })
            .await
            .unwrap();
        rows[0].grpc.push(started.elapsed());
    }
    for n in 0..WRITES {
        let (i, round) = (n % SECRETS, 1 + n / SECRETS);
        let (d, data) = (device.clone(), direct_data(i, round));
        let started = Instant::now();
        tokio::task::spawn_blocking(move || {
            d.with_store(|s| s.write(&format!("d{i}"), &data, MetadataChange::Keep))
        })
        .await
        .unwrap()
        .unwrap();
        rows[1].direct.push(started.elapsed());
        let started = Instant::now();
        client.write_secret(grpc_write(i, round)).await.unwrap();
        rows[1].grpc.push(started.elapsed());
    }
    for _ in 0..LISTS {
        let d = device.clone();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || d.with_store(|s| Ok(s.list(""))))
            .await
            .unwrap()
            .unwrap();
        rows[2].direct.push(started.elapsed());
        let started = Instant::now();
        client
            .list_secrets(ListSecretsRequest::default())
            .await
            .unwrap();
        rows[2].grpc.push(started.elapsed());
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "hsm-agent on SoftHSM2: gRPC over mTLS (TLS 1.3, loopback) beside the store in-process; \
         {SECRETS} secrets of {KEYS} keys x {VALUE_LEN} B; {READS} reads, {WRITES} writes, {LISTS} lists"
    );
    println!();
    println!(
        "| operation | in-process p50 | gRPC p50 | added at p50 | in-process p99 | gRPC p99 | gRPC ops/s, 1 in flight |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut read_overhead = Duration::ZERO;
    for row in &mut rows {
        let total: Duration = row.grpc.iter().sum();
        let throughput = row.grpc.len() as f64 / total.as_secs_f64();
        let (d50, g50) = (
            percentile(&mut row.direct, 0.5),
            percentile(&mut row.grpc, 0.5),
        );
        let (d99, g99) = (
            percentile(&mut row.direct, 0.99),
            percentile(&mut row.grpc, 0.99),
        );
        if row.what.starts_with("read") {
            read_overhead = g50.saturating_sub(d50);
        }
        println!(
            "| {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.0} |",
            row.what,
            ms(d50),
            ms(g50),
            ms(g50) - ms(d50),
            ms(d99),
            ms(g99),
            throughput
        );
    }

    println!();
    println!(
        "| under load ({IN_FLIGHT} in flight, {LOAD_REQUESTS} requests) | in-process ops/s | gRPC ops/s |"
    );
    println!("|---|---:|---:|");
    for (what, read) in [("read (5 keys x 1 KiB)", true), ("list", false)] {
        let direct = direct_load(&device, read).await;
        let grpc = grpc_load(&client, read).await;
        println!("| {what} | {direct:.0} | {grpc:.0} |");
    }
    println!();
    let pass = read_overhead < READ_OVERHEAD_TARGET;
    println!(
        "{}: gRPC over mTLS adds {:.3} ms to a read at p50 (target < {:.0} ms)",
        if pass { "PASS" } else { "FAIL" },
        ms(read_overhead),
        ms(READ_OVERHEAD_TARGET)
    );
    if !pass {
        std::process::exit(1);
    }
}

/// Reads (or lists) per second with [`IN_FLIGHT`] in-process callers on blocking threads.
async fn direct_load(device: &Arc<Device>, read: bool) -> f64 {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (device, next) = (device.clone(), next.clone());
            tokio::task::spawn_blocking(move || {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n >= LOAD_REQUESTS {
                        return;
                    }
                    let name = format!("d{}", n % SECRETS);
                    if read {
                        device.with_store(|s| s.read(&name)).unwrap();
                    } else {
                        device.with_store(|s| Ok(s.list(""))).unwrap();
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    LOAD_REQUESTS as f64 / started.elapsed().as_secs_f64()
}

/// Reads (or lists) per second with [`IN_FLIGHT`] requests in flight on one gRPC channel.
async fn grpc_load(client: &HsmAgentClient<Channel>, read: bool) -> f64 {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (mut client, next) = (client.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n >= LOAD_REQUESTS {
                        return;
                    }
                    if read {
                        let path = format!("g{}", n % SECRETS);
                        client
                            .read_secret(ReadSecretRequest { path })
                            .await
                            .unwrap();
                    } else {
                        client
                            .list_secrets(ListSecretsRequest::default())
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    LOAD_REQUESTS as f64 / started.elapsed().as_secs_f64()
}
