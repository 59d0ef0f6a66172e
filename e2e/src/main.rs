//! `e2e`: runs the scenarios on the backend `E2E_BACKEND` names (see the crate docs);
//! `cargo xtask e2e` builds what it needs and runs it.

use anyhow::{Context, Result, bail};
use e2e::cluster::{Cluster, OPERATOR_NAMESPACE};
use e2e::emulated::{self, Binaries, Emulated};
use e2e::scenarios::{APPS_NAMESPACE, Run, SCENARIOS};
use e2e::{Backend, progress, workspace_root};
use std::time::Instant;

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
            let emulated = Emulated::start(&root, &binaries).await?;
            let outcome = run_scenarios(&emulated, &binaries, until.as_deref()).await;
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

async fn run_scenarios(
    emulated: &Emulated,
    binaries: &Binaries,
    until: Option<&str>,
) -> Result<()> {
    let mut run = Run {
        cluster: emulated.cluster.clone(),
        token: Some(emulated.token.clone()),
        kubectl_hsm: binaries.get("kubectl-hsm")?.to_owned(),
        dir: emulated.dir().to_owned(),
        installed: Vec::new(),
        pods_share_the_host_network: true,
        password: String::new(),
        node: Some(std::sync::Arc::new(emulated.node(binaries)?)),
    };
    scenarios(&mut run, until).await
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
