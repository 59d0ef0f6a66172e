//! `cargo xtask`: the developer entry points of the workspace.
//!
//! * `demo`  — installs what is missing and runs the operator on this machine: a SoftHSM2
//!   token as the HSM, the API emulator as the cluster, a pod runner as the node; the
//!   HSMDevice's agent starts, an HSMSecret's Secret appears and follows a change on the HSM.
//! * `test`  — installs what the tests need, then runs formatting, lints and the whole suite.
//! * `bench store` — the store benchmark on SoftHSM2 and on the virtual Pico HSM.
//! * `bench sync` — the manager syncing HSMSecrets from two agents (latency, reads, memory).
//! * `crdgen` — regenerates `deploy/crds` from the CRD types.
//! * `images` — builds the scratch images from the release binaries, loads them into Podman
//!   and runs each one's `--help`.
//! * `deps`  — only installs what is missing.
//! * `prune-cache` — deletes superseded test and binary executables from the build cache.

mod demo;
mod deps;
mod images;
mod nix_lint;
mod podman_conf;
mod prune;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Developer entry points of hsm-secrets-operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the operator on this machine: a SoftHSM2 token as the HSM, the API emulator as
    /// the cluster, a pod runner as the node; a Secret appears and follows the HSM.
    Demo {
        /// Keep everything running until Ctrl-C (kubectl and curl can be used against it).
        #[arg(long)]
        keep: bool,
    },
    /// Install what the tests need and run formatting, lints and every test.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for cargo-nextest (a filter, `-p crate`, …); with any, only what
        /// they select runs instead of the whole workspace.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        nextest_args: Vec<String>,
    },
    /// Run a benchmark and print its numbers.
    Bench {
        /// Which benchmark.
        #[arg(value_enum)]
        which: Bench,
    },
    /// Run a coverage-guided fuzz target for a bounded time (needs a nightly toolchain;
    /// installs cargo-fuzz if missing).
    Fuzz {
        /// Which target.
        #[arg(value_enum)]
        which: Fuzz,
        /// How long to run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Regenerate deploy/crds from the CRD types.
    Crdgen,
    /// Build the scratch images (operator, agent, discovery) from the workspace's release
    /// binaries and Debian's files, load them into Podman and smoke-test them.
    Images {
        /// Use the test suite's debug binaries instead of a release build (faster).
        #[arg(long)]
        debug: bool,
    },
    /// Install the Debian packages and cargo tools the project needs, if missing.
    Deps,
    /// Delete test and binary executables a newer build superseded more than `--hours` ago
    /// from the build cache (`CARGO_TARGET_DIR`, else `target/`); CI runs it first.
    PruneCache {
        /// How old a superseded executable must be to go.
        #[arg(long, default_value_t = 12)]
        hours: u64,
    },
    /// Run the end-to-end scenarios (`E2E_BACKEND`: emulated by default, or cluster on the
    /// cluster KUBECONFIG names); with a scenario's name, only the scenarios up to it.
    E2e {
        /// The last scenario to run.
        until: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Fuzz {
    /// The agent's request decoding, validation and store round trip.
    Agent,
    /// The virtual Pico HSM's command APDUs, from a blank, initialised or logged-in card.
    Pico,
    /// Discovery's sysfs-attribute and uevent parsers (each target runs for `--seconds`).
    Discovery,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Bench {
    /// hsm-store on SoftHSM2 beside a raw cryptoki floor, and on the virtual Pico HSM.
    Store,
    /// The agent's gRPC over mTLS beside the store in-process.
    Agent,
    /// The manager syncing 1 000 HSMSecrets from two SoftHSM2 agents, then 10 000.
    Sync,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.command {
        Cmd::Demo { keep } => demo::run(&root, keep),
        Cmd::Test {
            no_lint,
            nextest_args,
        } => test(&root, no_lint, &nextest_args),
        Cmd::Bench { which } => bench(&root, which),
        Cmd::Fuzz { which, seconds } => fuzz(&root, which, seconds),
        Cmd::Crdgen => crdgen(&root),
        Cmd::Images { debug } => images::run(&root, debug),
        Cmd::Deps => deps::ensure(),
        Cmd::E2e { until } => e2e(&root, until.as_deref()),
        Cmd::PruneCache { hours } => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            prune::run(&target, std::time::Duration::from_secs(hours * 3600))
        }
    }
}

/// The workspace this `cargo xtask` runs in. Cargo gives the run its package's directory at
/// run time; the compile-time value is only a fallback, because cargo reuses a build made in
/// another clone of the same sources (its hashes are relative to the workspace), and that
/// clone's path would be baked in.
fn workspace_root() -> Result<PathBuf> {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    Ok(manifest
        .parent()
        .context("xtask lives inside the workspace")?
        .to_path_buf())
}

/// Runs a command in the workspace root, failing on a non-zero exit.
pub(crate) fn run(root: &Path, program: &str, args: &[&str]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let mut command = Command::new(program);
    // Under `cargo xtask` (cargo run), this process has the variables cargo sets for a run;
    // builds started from here must not see them (see the function's doc).
    delivery::cargo::clear_inherited_cargo_variables(&mut command);
    let status = command
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot start {program}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test(root: &Path, no_lint: bool, nextest_args: &[String]) -> Result<()> {
    deps::ensure()?;
    if !no_lint {
        run(root, "cargo", &["fmt", "--all", "--check"])?;
        run(
            root,
            "cargo",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ],
        )?;
        nix_lint::run(root)?;
    }
    // nextest runs every test in its own process: SoftHSM2 and pcscd fixtures stay private.
    let mut args = vec!["nextest", "run", "--all-features", "--no-fail-fast"];
    if nextest_args.is_empty() {
        args.push("--workspace");
    }
    args.extend(nextest_args.iter().map(String::as_str));
    run(root, "cargo", &args)?;
    if nextest_args.is_empty() {
        run(
            root,
            "cargo",
            &["test", "--workspace", "--doc", "--all-features"],
        )?;
        // The scenarios share one installed cluster, so they run in one process, after
        // everything else.
        e2e(root, None)?;
    }
    Ok(())
}

/// The end-to-end scenarios (the `e2e` crate's binary).
fn e2e(root: &Path, until: Option<&str>) -> Result<()> {
    deps::ensure()?;
    let mut args = vec!["run", "--quiet", "--all-features", "-p", "e2e", "--"];
    args.extend(until);
    run(root, "cargo", &args)
}

fn bench(root: &Path, which: Bench) -> Result<()> {
    deps::ensure()?;
    match which {
        // SoftHSM2 (throughput beside a raw cryptoki floor), then the virtual Pico HSM
        // (APDUs and PKCS#11 calls per operation).
        Bench::Store => ["store_bench", "store_bench_pico"]
            .iter()
            .try_for_each(|example| {
                run(
                    root,
                    "cargo",
                    &[
                        "run",
                        "--release",
                        "--quiet",
                        "-p",
                        "hsm-store",
                        "--features",
                        "test-support",
                        "--example",
                        example,
                    ],
                )
            }),
        Bench::Sync => {
            run(
                root,
                "cargo",
                &[
                    "build",
                    "--release",
                    "--quiet",
                    "-p",
                    "hsm-operator",
                    "--bin",
                    "hsm-operator",
                ],
            )?;
            // 1 000 on SoftHSM2; 10 000 on in-memory agents (the manager's side is the same).
            [
                &["--secrets", "1000"][..],
                &["--secrets", "10000", "--memory"][..],
            ]
            .iter()
            .try_for_each(|args| {
                let mut command = vec![
                    "run",
                    "--release",
                    "--quiet",
                    "-p",
                    "hsm-operator",
                    "--features",
                    "test-support",
                    "--example",
                    "sync_bench",
                    "--",
                ];
                command.extend_from_slice(args);
                run(root, "cargo", &command)
            })
        }
        Bench::Agent => run(
            root,
            "cargo",
            &[
                "run",
                "--release",
                "--quiet",
                "-p",
                "hsm-agent",
                "--example",
                "agent_bench",
            ],
        ),
    }
}

fn fuzz(root: &Path, which: Fuzz, seconds: u64) -> Result<()> {
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_fuzz {
        run(root, "cargo", &["install", "--locked", "cargo-fuzz"])?;
    }
    let (dir, targets): (&str, &[&str]) = match which {
        Fuzz::Agent => ("crates/hsm-agent", &["requests"]),
        Fuzz::Pico => ("crates/virtual-pico", &["apdus"]),
        Fuzz::Discovery => ("crates/hsm-discovery", &["sysfs_attributes", "uevents"]),
    };
    let time = format!("-max_total_time={seconds}");
    targets.iter().try_for_each(|target| {
        run(
            &root.join(dir),
            "cargo",
            &["+nightly", "fuzz", "run", target, "--", &time],
        )
    })
}

fn crdgen(root: &Path) -> Result<()> {
    run(
        root,
        "cargo",
        &[
            "run",
            "--quiet",
            "-p",
            "hsm-api",
            "--bin",
            "crdgen",
            "--",
            "--out",
            "deploy/crds",
        ],
    )
}
