//! `hsm-operator --mode=manager`: the manager, with the Go manager's flags.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = hsm_operator::cli::Cli::parse();
    hsm_operator::telemetry::init_tracing(&cli.log_level);
    // Freed memory back to the system after each burst of reconciles: see `memory`.
    tokio::spawn(hsm_operator::memory::release_free_memory_periodically());
    hsm_operator::run::run(cli).await
}
