//! `api-emulator serve --kubeconfig PATH [--bind ADDR] [--port N] [--tls] [--authz rbac]
//! [--crds DIR] [--objects PATH]... [--audit-log FILE] [--token-file CSV]
//! [--service-account-dir NS/NAME=DIR]...`: an emulated Kubernetes API on 127.0.0.1 (or the
//! address given) for kubectl, the manager and the local demo.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use api_emulator::{Authorization, Emulator, UserInfo};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(version, about = "An in-memory emulator of the Kubernetes API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Authz {
    /// Every authenticated request is allowed.
    AlwaysAllow,
    /// The stored Roles and bindings decide, as a cluster's RBAC.
    Rbac,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where to write the kubeconfig for this server (admin credentials, and the CA with
    /// --tls).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The address to listen on; the kubeconfig names it. Another address than a loopback
    /// one (where containers on a bridge reach this machine) is also named by the serving
    /// certificate with --tls. Every address ("0.0.0.0") is refused: the certificate could
    /// not name what clients dial.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST), value_parser = bind_address)]
    bind: IpAddr,
    /// Port on the --bind address (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Serve HTTPS with a certificate of a generated cluster CA.
    #[arg(long)]
    tls: bool,
    /// How requests are authorised.
    #[arg(long, value_enum, default_value = "always-allow")]
    authz: Authz,
    /// A directory of CRD YAML files to register at start.
    #[arg(long)]
    crds: Option<PathBuf>,
    /// A YAML file or directory of objects to create at start (after the CRDs); repeatable.
    #[arg(long)]
    objects: Vec<PathBuf>,
    /// Append an audit entry per request to this file (JSON lines).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Static tokens, one `token,user,uid,"group1,group2"` line each (the real server's
    /// --token-auth-file format).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Write a ServiceAccount directory (token, ca.crt, namespace) for NS/NAME into DIR;
    /// repeatable. The ServiceAccount must exist (e.g. from --objects, or `default`).
    #[arg(long, value_name = "NS/NAME=DIR")]
    service_account_dir: Vec<String>,
    /// Watch events kept for resuming watches (older resourceVersions get 410 Gone).
    #[arg(long, default_value_t = 20_000)]
    history_limit: usize,
    /// Milliseconds between watch BOOKMARKs.
    #[arg(long, default_value_t = 1000)]
    bookmark_interval_ms: u64,
    /// The largest request body accepted, in bytes.
    #[arg(long, default_value_t = api_emulator::MAX_BODY_BYTES)]
    max_body_bytes: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until killed; prints the address, writes a kubeconfig.
    Serve(ServeArgs),
}

/// A `--bind` address: one address, not every address.
fn bind_address(text: &str) -> Result<IpAddr, String> {
    let address: IpAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address"))?;
    if address.is_unspecified() {
        return Err(format!(
            "{text} means every address; give the one address clients dial (the kubeconfig and the serving certificate name it)"
        ));
    }
    Ok(address)
}

/// Parses one line of a static token file: `token,user,uid,"g1,g2"`.
fn token_line(line: &str) -> Option<(String, UserInfo)> {
    let (token, rest) = line.split_once(',')?;
    let (user, rest) = rest.split_once(',').unwrap_or((rest, ""));
    let (uid, groups) = rest.split_once(',').unwrap_or((rest, ""));
    let groups = groups.trim().trim_matches('"');
    Some((
        token.trim().to_string(),
        UserInfo {
            username: user.trim().to_string(),
            uid: uid.trim().to_string(),
            groups: groups
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(String::from)
                .chain(std::iter::once("system:authenticated".to_string()))
                .collect(),
        },
    ))
}

fn set_up(emu: &Emulator, args: &ServeArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.crds {
        let n = emu
            .load_crds(dir)
            .with_context(|| format!("loading CRDs from {}", dir.display()))?;
        eprintln!("registered {n} CRDs from {}", dir.display());
    }
    for path in &args.objects {
        let n = emu
            .load_objects(path)
            .with_context(|| format!("creating the objects of {}", path.display()))?;
        eprintln!("created {n} objects from {}", path.display());
    }
    if let Some(path) = &args.token_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (token, user) =
                token_line(line).with_context(|| format!("a line of {}", path.display()))?;
            emu.add_token(&token, user);
        }
    }
    if let Some(path) = &args.audit_log {
        emu.audit_to_file(path)?;
    }
    for spec in &args.service_account_dir {
        let (sa, dir) = spec
            .split_once('=')
            .context("--service-account-dir wants NS/NAME=DIR")?;
        let (ns, name) = sa
            .split_once('/')
            .context("--service-account-dir wants NS/NAME=DIR")?;
        emu.write_service_account_dir(ns, name, dir.as_ref())?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let Command::Serve(args) = Cli::parse().command;
    let emu = Emulator::builder()
        .history_limit(args.history_limit)
        .bookmark_interval(Duration::from_millis(args.bookmark_interval_ms))
        .max_body_bytes(args.max_body_bytes)
        .build();
    set_up(&emu, &args)?;
    // Authorisation starts after the set-up, which creates objects as the emulator itself.
    emu.set_authorization(match args.authz {
        Authz::AlwaysAllow => Authorization::AlwaysAllow,
        Authz::Rbac => Authorization::Rbac,
    });
    let address = SocketAddr::new(args.bind, args.port);
    let server = if args.tls {
        emu.serve_tls_on(address).await
    } else {
        emu.serve_on(address).await
    }
    .context("starting the server")?;
    server
        .write_kubeconfig(&args.kubeconfig)
        .context("writing the kubeconfig")?;
    println!("{}", server.url());
    server.wait().await;
    Ok(())
}
