//! `hsm-operator --mode=manager`: the manager, with the Go manager's flags.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let _cli = hsm_operator::cli::Cli::parse();
    anyhow::bail!("the manager is being assembled")
}
