//! `hsm-discovery`: see the library's documentation.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = hsm_discovery::cli::DiscoveryArgs::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{},h2=info,hyper=info,tower=info",
        args.log_level
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(hsm_discovery::run::run(args))
}
