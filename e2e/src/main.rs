//! `e2e`: runs the scenarios on the backend `E2E_BACKEND` names (see the crate docs);
//! `cargo xtask e2e` builds what it needs and runs it.

use anyhow::{Context, Result, bail};
use e2e::cluster::{Cluster, OPERATOR_NAMESPACE};
use e2e::emulated::{self, Binaries, Emulated};
use e2e::scenarios::{APPS_NAMESPACE, Run, SCENARIOS};
use e2e::{Backend, Runtime, progress, workspace_root};
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> Result<()> {
    // `e2e NAME`: the scenarios up to NAME only (each builds on those before it).
    let until: Option<String> = std::env::args().nth(1);
    if let Some(name) = &until
        && !SCENARIOS.iter().any(|s| s.name == name)
    {
        bail!(
            "no scenario {name}; the scenarios are: {}",
            SCENARIOS
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let root = workspace_root();
    let backend = Backend::from_env()?;
    progress(&format!("e2e on the {backend:?} backend"));
    let mut binaries = emulated::BINARIES.to_vec();
    binaries.push("kubectl-hsm");
    let built = delivery::cargo::build(&root, delivery::cargo::Profile::TestSuite, &binaries)
        .context("building the workspace's binaries")?;
    let binaries = Binaries(built);
    match backend {
        Backend::Emulated => {
            let runtime = Runtime::from_env(delivery::podman::available)?;
            progress(&format!("the node runs pods as {runtime:?} (E2E_RUNTIME)"));
            // From here on Ctrl-C and SIGTERM stop the run and remove what it made.
            let mut interrupted = Interrupted::new()?;
            let started = Instant::now();
            let emulated = tokio::select! {
                emulated = Emulated::start(&root, &binaries, runtime) => emulated?,
                signal = interrupted.recv() => return interrupted_by(signal),
            };
            progress(&format!(
                "the cluster is up ({:.1} s)",
                started.elapsed().as_secs_f64()
            ));
            let mut scenarios = tokio::spawn(run_scenarios(emulated.run(&binaries)?, until));
            let outcome = tokio::select! {
                outcome = &mut scenarios => outcome.context("the scenarios' task")?,
                signal = interrupted.recv() => {
                    scenarios.abort();
                    emulated.stop().await;
                    return interrupted_by(signal);
                }
            };
            // A scenario whose child process (kubectl, curl) Ctrl-C ended may fail just
            // before the run hears of the signal itself.
            if outcome.is_err()
                && let Ok(signal) =
                    tokio::time::timeout(Duration::from_millis(500), interrupted.recv()).await
            {
                emulated.stop().await;
                return interrupted_by(signal);
            }
            if outcome.is_err() {
                for namespace in [OPERATOR_NAMESPACE, APPS_NAMESPACE] {
                    eprintln!("{}", emulated.describe(namespace).await);
                }
            }
            emulated.stop().await;
            outcome
        }
        Backend::Cluster => {
            let kubeconfig = std::env::var_os("KUBECONFIG")
                .context("E2E_BACKEND=cluster runs on the cluster KUBECONFIG names; it is unset")?;
            let cluster = Cluster::from_kubeconfig(kubeconfig.into(), None).await?;
            let dir = tempfile::Builder::new().prefix("hsm-e2e-").tempdir()?;
            let mut run = Run {
                cluster,
                token: None,
                kubectl_hsm: binaries.get("kubectl-hsm")?.to_owned(),
                dir: dir.path().to_owned(),
                installed: Vec::new(),
                pods_share_the_host_network: false,
                password: String::new(),
                node: None,
                card: None,
            };
            scenarios(&mut run, until.as_deref()).await
        }
        Backend::Kind => {
            if !e2e::kind::available() {
                bail!("E2E_BACKEND=kind needs the kind and docker programs on PATH");
            }
            bail!(
                "E2E_BACKEND=kind: create the cluster with the commands of e2e::kind::plan, then run \
                 E2E_BACKEND=cluster with its KUBECONFIG (see README)"
            )
        }
    }
}

async fn run_scenarios(mut run: Run, until: Option<String>) -> Result<()> {
    scenarios(&mut run, until.as_deref()).await
}

/// Ctrl-C (SIGINT) and SIGTERM, once their handlers replace the default (dying at once).
struct Interrupted {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupted {
    fn new() -> Result<Interrupted> {
        Ok(Interrupted {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next one: its name and number.
    async fn recv(&mut self) -> (&'static str, i32) {
        tokio::select! {
            _ = self.int.recv() => ("SIGINT", 2),
            _ = self.term.recv() => ("SIGTERM", 15),
        }
    }
}

/// Ends the process as a signal's default would (exit status 128 + its number), the run's
/// containers, network and images being removed already.
fn interrupted_by((name, number): (&str, i32)) -> Result<()> {
    progress(&format!(
        "e2e: stopped by {name}; what the run made is removed"
    ));
    std::process::exit(128 + number)
}

async fn scenarios(run: &mut Run, until: Option<&str>) -> Result<()> {
    let started = Instant::now();
    let mut passed = 0;
    for scenario in SCENARIOS {
        progress(&format!("scenario {}: {}", scenario.name, scenario.proves));
        let begun = Instant::now();
        match run.scenario(scenario.name).await {
            Ok(()) => {
                passed += 1;
                progress(&format!(
                    "scenario {}: PASS ({:.1} s)",
                    scenario.name,
                    begun.elapsed().as_secs_f64()
                ));
                if until == Some(scenario.name) {
                    break;
                }
            }
            Err(error) => {
                progress(&format!("scenario {}: FAIL: {error:#}", scenario.name));
                return Err(error.context(format!("scenario {}", scenario.name)));
            }
        }
    }
    progress(&format!(
        "e2e: {passed} scenarios passed in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
