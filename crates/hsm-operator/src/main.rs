//! `hsm-operator --mode=manager`: the manager, with the Go manager's flags.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = hsm_operator::cli::Cli::parse();
    hsm_operator::telemetry::init_tracing(&cli.log_level);
    hsm_operator::run::run(cli).await
}
