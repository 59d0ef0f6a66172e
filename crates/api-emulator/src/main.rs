//! `api-emulator serve --kubeconfig PATH [--port N] [--crds DIR]`: an emulated Kubernetes API
//! on 127.0.0.1 for kubectl, the manager and the local demo.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "An in-memory emulator of the Kubernetes API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until killed; prints the address, writes a kubeconfig.
    Serve {
        /// Where to write the kubeconfig for this server.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// A directory of CRD YAML files to register at start.
        #[arg(long)]
        crds: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let Command::Serve {
        kubeconfig,
        port,
        crds,
    } = Cli::parse().command;
    let emu = api_emulator::Emulator::new();
    if let Some(dir) = crds {
        let n = emu
            .load_crds(&dir)
            .with_context(|| format!("loading CRDs from {}", dir.display()))?;
        eprintln!("registered {n} CRDs from {}", dir.display());
    }
    let server = emu.serve(port).await.context("starting the server")?;
    server
        .write_kubeconfig(&kubeconfig)
        .context("writing the kubeconfig")?;
    println!("{}", server.url());
    server.wait().await;
    Ok(())
}
