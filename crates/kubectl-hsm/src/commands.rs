//! One function per command: gather input, call the API, print, classify.

use crate::cli::{AuthCommand, Cli, Command, Global, MirrorCommand, Output, WriteArgs};
use crate::client::{ClientError, Kind};
use crate::input::{self, Source};
use crate::model::{Deleted, SecretData};
use crate::output::{self, SecretDoc, Values, columns, emit};
use crate::{Failure, Session, cache};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let g = &cli.global;
    match cli.command {
        Command::Create(args) => write(g, args, false).await,
        Command::Update(args) => write(g, args, true).await,
        Command::RenameKey {
            secret,
            old_key,
            new_key,
        } => rename_key(g, &secret, &old_key, &new_key).await,
        Command::Get { secret, key } => get(g, &secret, key.as_deref()).await,
        Command::List {
            all_namespaces,
            show_devices,
        } => list(g, all_namespaces, show_devices).await,
        Command::Delete { secret, key, force } => delete(g, &secret, key.as_deref(), force).await,
        Command::RotatePin {
            old_pin,
            new_pin,
            dry_run,
        } => rotate_pin(g, old_pin, new_pin, dry_run).await,
        Command::Health => health(g).await,
        Command::Devices { detailed } => devices(g, detailed).await,
        Command::Mirror(MirrorCommand::Sync { force }) => mirror_sync(g, force).await,
        Command::Auth(AuthCommand::Status) => auth_status(g).await,
        Command::Auth(AuthCommand::Clear) => auth_clear(g),
        Command::Auth(AuthCommand::Config { service_account }) => {
            auth_config(g, service_account, g.namespace.clone())
        }
        Command::Version => version(g),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "kubectl-hsm", &mut script);
            output::write_stdout(&script)
        }
    }
}

/// `Ok(None)` for 404, so a missing secret can be created.
async fn existing(s: &Session, name: &str) -> Result<Option<SecretData>, Failure> {
    match s.api.get(name).await {
        Ok(reply) => Ok(Some(reply.data.data)),
        Err(e) if e.kind() == Kind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn partial_error(what: &str, message: Option<&str>) -> Failure {
    Failure::Partial(match message {
        Some(m) if !m.is_empty() => format!("{what}: only some devices succeeded ({m})"),
        _ => format!("{what}: only some devices succeeded"),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WriteDoc<'a> {
    path: &'a str,
    operation: &'a str,
    keys: usize,
    dry_run: bool,
    changes: &'a input::Changes,
}

async fn write(g: &Global, args: WriteArgs, update: bool) -> Result<(), Failure> {
    if update && args.replace {
        return Err(input::InputError::ReplaceOnUpdate.into());
    }
    let new = match input::source(&args.from_literal, &args.from_file, args.interactive)? {
        Source::Literals(l) => input::from_literals(l)?,
        Source::Files(f) => input::from_files(f)?,
        Source::Interactive => input::interactive()?,
    };
    let s = crate::connect(g).await?;
    let name = &args.secret;
    let before = existing(&s, name).await?;
    if update && before.is_none() {
        return Err(Failure::NoSuchSecret(name.clone()));
    }
    let plan = input::plan(before.as_ref(), new, args.replace);
    let operation = match (plan.exists, args.replace) {
        (false, _) => "created",
        (true, true) => "replaced",
        (true, false) => "updated",
    };
    if (args.diff || args.dry_run) && g.output == Output::Text {
        output::write_stdout(input::diff_text(name, &plan.changes).as_bytes())?;
    }
    let doc = |dry_run| WriteDoc {
        path: name,
        operation,
        keys: plan.data.len(),
        dry_run,
        changes: &plan.changes,
    };
    if args.dry_run {
        return emit(g.output, &doc(true), || {
            format!(
                "Dry run: secret {name} would be {operation} ({} keys); nothing was written.\n",
                plan.data.len()
            )
        });
    }
    if plan.exists && plan.changes.is_empty() {
        return emit(g.output, &doc(false), || {
            format!("Secret {name} is unchanged; nothing written.\n")
        });
    }
    let reply = s.api.write(name, &plan.data).await?;
    emit(g.output, &doc(false), || {
        format!(
            "Secret {name} {operation} ({} keys).\n",
            reply.data.keys.max(plan.data.len())
        )
    })?;
    if reply.partial() {
        return Err(partial_error(
            &format!("write of {name}"),
            reply.message.as_deref(),
        ));
    }
    Ok(())
}

async fn rename_key(g: &Global, name: &str, old: &str, new: &str) -> Result<(), Failure> {
    let s = crate::connect(g).await?;
    let mut data = s.api.get(name).await?.data.data;
    if data.contains_key(new) {
        return Err(Failure::KeyExists {
            secret: name.into(),
            key: new.into(),
        });
    }
    let value = data.remove(old).ok_or_else(|| Failure::KeyNotFound {
        secret: name.into(),
        key: old.into(),
    })?;
    data.insert(new.to_owned(), value);
    let reply = s.api.write(name, &data).await?;
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Renamed<'a> {
        path: &'a str,
        old_key: &'a str,
        new_key: &'a str,
    }
    emit(
        g.output,
        &Renamed {
            path: name,
            old_key: old,
            new_key: new,
        },
        || format!("Key {old} of secret {name} renamed to {new}.\n"),
    )?;
    if reply.partial() {
        return Err(partial_error(
            &format!("rename in {name}"),
            reply.message.as_deref(),
        ));
    }
    Ok(())
}

async fn get(g: &Global, name: &str, key: Option<&str>) -> Result<(), Failure> {
    let s = crate::connect(g).await?;
    let secret = s.api.get(name).await?.data;
    if let Some(key) = key {
        let value = secret.data.get(key).ok_or_else(|| Failure::KeyNotFound {
            secret: name.into(),
            key: key.into(),
        })?;
        return match g.output {
            Output::Text => output::write_stdout(value.expose()),
            _ => emit(
                g.output,
                &Values::of([(&key.to_owned(), value)]),
                String::new,
            ),
        };
    }
    let metadata = match g.output {
        Output::Text => s.api.metadata(name).await.ok().map(|r| r.data.metadata),
        _ => None,
    };
    let doc = SecretDoc {
        path: secret.path.clone(),
        values: Values::default(),
        checksum: secret.checksum.clone(),
        device_count: secret.device_count,
    };
    match g.output {
        Output::Text => output::write_stdout(
            output::secret_text(
                &secret.path,
                &secret.data,
                secret.checksum.as_deref(),
                secret.device_count,
                metadata.as_ref(),
            )
            .as_bytes(),
        ),
        _ => emit(
            g.output,
            &SecretDoc {
                values: Values::of(&secret.data),
                ..doc
            },
            String::new,
        ),
    }
}

async fn list(g: &Global, all_namespaces: bool, show_devices: bool) -> Result<(), Failure> {
    let s = crate::connect(g).await?;
    let mut secrets = s.api.list().await?.data.secrets;
    secrets.sort();
    secrets.dedup();
    let devices = if show_devices {
        Some(s.api.device_status().await?.data)
    } else {
        None
    };
    let namespace = s.namespace.clone().unwrap_or_else(|| "-".into());
    #[derive(Serialize)]
    struct ListDoc<'a> {
        secrets: &'a [String],
        count: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        devices: Option<&'a crate::model::DeviceStatus>,
    }
    let doc = ListDoc {
        secrets: &secrets,
        count: secrets.len(),
        namespace: all_namespaces.then_some(namespace.as_str()),
        devices: devices.as_ref(),
    };
    emit(g.output, &doc, || {
        let mut text = if secrets.is_empty() {
            "No secrets found.\n".to_owned()
        } else if all_namespaces {
            let rows: Vec<Vec<String>> = secrets
                .iter()
                .map(|n| vec![namespace.clone(), n.clone()])
                .collect();
            columns(&["NAMESPACE", "NAME"], &rows)
        } else {
            let rows: Vec<Vec<String>> = secrets.iter().map(|n| vec![n.clone()]).collect();
            columns(&["NAME"], &rows)
        };
        text.push_str(&format!("\nTotal: {} secrets\n", secrets.len()));
        if let Some(d) = &devices {
            text.push_str(&format!("\n{}", device_rows(d, None)));
        }
        text
    })
}

fn device_rows(
    status: &crate::model::DeviceStatus,
    info: Option<&crate::model::DeviceInfos>,
) -> String {
    if status.devices.is_empty() {
        return "No devices.\n".into();
    }
    let rows: Vec<Vec<String>> = status
        .devices
        .iter()
        .map(|(serial, ready)| {
            let mut row = vec![serial.clone(), if *ready { "yes" } else { "no" }.into()];
            if let Some(info) = info {
                let d = info.device_infos.get(serial).cloned().unwrap_or_default();
                row.extend([d.label, d.manufacturer, d.model, d.firmware_version]);
            }
            row
        })
        .collect();
    if info.is_some() {
        columns(
            &[
                "DEVICE",
                "READY",
                "LABEL",
                "MANUFACTURER",
                "MODEL",
                "FIRMWARE",
            ],
            &rows,
        )
    } else {
        columns(&["DEVICE", "READY"], &rows)
    }
}

/// Asks on stderr (on a terminal), reads the answer from stdin (a terminal or a pipe).
fn confirm(question: &str) -> bool {
    if std::io::stdin().is_terminal() {
        eprint!("{question} [y/N]: ");
    }
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

async fn delete(g: &Global, name: &str, key: Option<&str>, force: bool) -> Result<(), Failure> {
    let what = match key {
        Some(key) => format!("key {key} of secret {name}"),
        None => format!("secret {name}"),
    };
    if !force && !confirm(&format!("Delete {what} from every HSM device?")) {
        return Err(Failure::NotConfirmed);
    }
    let s = crate::connect(g).await?;
    let reply = match key {
        Some(key) => s.api.delete_key(name, key).await?,
        None => s.api.delete(name).await?,
    };
    emit(g.output, &reply.data, || deleted_text(&what, &reply.data))?;
    if reply.partial() {
        return Err(partial_error(
            &format!("delete of {what}"),
            reply.message.as_deref(),
        ));
    }
    Ok(())
}

fn deleted_text(what: &str, d: &Deleted) -> String {
    let ok = d.device_results.values().filter(|r| r.success).count();
    let mut text = if d.device_results.is_empty() {
        format!("Deleted {what}.\n")
    } else {
        format!(
            "Deleted {what} from {ok} of {} devices.\n",
            d.device_results.len()
        )
    };
    for (serial, r) in d.device_results.iter().filter(|(_, r)| !r.success) {
        text.push_str(&format!(
            "  {serial}: failed: {}\n",
            r.error.as_deref().unwrap_or("no reason given")
        ));
    }
    for w in &d.warnings {
        text.push_str(&format!("  warning: {w}\n"));
    }
    text
}

/// Old and new PIN: from the flags, else prompts on a terminal (the new one twice), else
/// two lines of stdin.
fn read_pins(
    old: Option<SecretString>,
    new: Option<SecretString>,
) -> Result<(SecretString, SecretString), Failure> {
    let (old, new) = match (old, new) {
        (Some(old), Some(new)) => (old, new),
        (old, new) if std::io::stdin().is_terminal() => {
            let prompt = |text: &str| {
                rpassword::prompt_password(text)
                    .map(SecretString::from)
                    .map_err(|e| Failure::Input(input::InputError::Prompt(e)))
            };
            let old = match old {
                Some(pin) => pin,
                None => prompt("Current PIN: ")?,
            };
            let new = match new {
                Some(pin) => pin,
                None => {
                    let first = prompt("New PIN: ")?;
                    let again = prompt("New PIN again: ")?;
                    if first.expose_secret() != again.expose_secret() {
                        return Err(Failure::Pin("the new PINs do not match"));
                    }
                    first
                }
            };
            (old, new)
        }
        (old, new) => {
            let mut lines = std::io::stdin().lock();
            let mut line = || -> Result<SecretString, Failure> {
                let mut text = zeroize::Zeroizing::new(String::new());
                lines
                    .read_line(&mut text)
                    .map_err(|e| Failure::Input(input::InputError::Prompt(e)))?;
                Ok(SecretString::from(text.trim_end_matches(['\n', '\r'])))
            };
            let old = match old {
                Some(pin) => pin,
                None => line()?,
            };
            let new = match new {
                Some(pin) => pin,
                None => line()?,
            };
            (old, new)
        }
    };
    if old.expose_secret().is_empty() || new.expose_secret().is_empty() {
        return Err(Failure::Pin(
            "an empty PIN: give the current and the new PIN",
        ));
    }
    if old.expose_secret() == new.expose_secret() {
        return Err(Failure::Pin("the new PIN is the same as the current one"));
    }
    Ok((old, new))
}

async fn rotate_pin(
    g: &Global,
    old: Option<SecretString>,
    new: Option<SecretString>,
    dry_run: bool,
) -> Result<(), Failure> {
    let (old, new) = read_pins(old, new)?;
    let s = crate::connect(g).await?;
    if dry_run {
        let status = s.api.device_status().await?.data;
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct DryRun<'a> {
            dry_run: bool,
            devices: &'a BTreeMap<String, bool>,
        }
        return emit(
            g.output,
            &DryRun {
                dry_run: true,
                devices: &status.devices,
            },
            || {
                format!(
                    "Dry run: the PIN would be changed on {} devices ({}); nothing was changed.\n",
                    status.devices.len(),
                    status
                        .devices
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        );
    }
    let reply = match s.api.change_pin(&old, &new).await {
        Ok(reply) => reply,
        // A refused PIN change (400 invalid_pin_change) is a PIN refused.
        Err(ClientError::Api { code, message, .. }) if code == "invalid_pin_change" => {
            return Err(Failure::PinRefused(message));
        }
        Err(e) => return Err(e.into()),
    };
    drop((old, new));
    let namespace = s
        .namespace
        .clone()
        .unwrap_or_else(|| "<operator-namespace>".into());
    emit(g.output, &reply.data, || {
        format!(
            "PIN changed on {} of {} devices.\n\nNow store the new PIN in the PIN Secret the HSMDevice names (e.g. hsm-pin), \
without putting it on a command line:\n  read -rs PIN && printf %s \"$PIN\" | kubectl create secret generic hsm-pin -n {namespace} \
--from-file=pin=/dev/stdin --dry-run=client -o yaml | kubectl apply -f - ; unset PIN\n",
            reply.data.success_count, reply.data.total_count
        )
    })?;
    if reply.partial() {
        return Err(partial_error("PIN change", reply.message.as_deref()));
    }
    Ok(())
}

async fn health(g: &Global) -> Result<(), Failure> {
    let s = crate::connect(g).await?;
    let health = s.api.health().await?.data;
    let status = s.api.device_status().await.map(|r| r.data);
    let info = s.api.device_info().await.map(|r| r.data);
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct HealthDoc<'a> {
        health: &'a crate::model::Health,
        #[serde(skip_serializing_if = "Option::is_none")]
        devices: Option<&'a crate::model::DeviceStatus>,
        #[serde(skip_serializing_if = "Option::is_none")]
        device_infos: Option<&'a crate::model::DeviceInfos>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        errors: Vec<String>,
    }
    let errors: Vec<String> = [status.as_ref().err(), info.as_ref().err()]
        .into_iter()
        .flatten()
        .map(|e| crate::chain(e))
        .collect();
    let doc = HealthDoc {
        health: &health,
        devices: status.as_ref().ok(),
        device_infos: info.as_ref().ok(),
        errors,
    };
    emit(g.output, &doc, || {
        let mut text = format!(
            "Status:        {}\nHSM connected: {}\nReplication:   {}\nDevices:       {}\n",
            health.status, health.hsm_connected, health.replication_enabled, health.active_nodes
        );
        if let Ok(status) = &status {
            text.push('\n');
            text.push_str(&device_rows(status, info.as_ref().ok()));
        }
        for e in &doc.errors {
            text.push_str(&format!("warning: {e}\n"));
        }
        text
    })?;
    if health.status != "healthy" {
        return Err(Failure::Degraded(health.status));
    }
    Ok(())
}

async fn devices(g: &Global, detailed: bool) -> Result<(), Failure> {
    let s = crate::connect(g).await?;
    let status = s.api.device_status().await?.data;
    let info = if detailed {
        Some(s.api.device_info().await?.data)
    } else {
        None
    };
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct DevicesDoc<'a> {
        #[serde(flatten)]
        status: &'a crate::model::DeviceStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        device_infos: Option<&'a BTreeMap<String, crate::model::DeviceInfo>>,
    }
    let doc = DevicesDoc {
        status: &status,
        device_infos: info.as_ref().map(|i| &i.device_infos),
    };
    emit(g.output, &doc, || device_rows(&status, info.as_ref()))
}

async fn mirror_sync(g: &Global, force: bool) -> Result<(), Failure> {
    let s = crate::connect(g).await?;
    let reply = s.api.mirror_sync(force).await?;
    emit(g.output, &reply.data, || {
        let message = if reply.data.message.is_empty() {
            "Mirror synchronisation triggered."
        } else {
            &reply.data.message
        };
        format!("{message} (force: {})\n", reply.data.force)
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenDoc {
    identity: String,
    kind: cache::TokenKind,
    expires_at: String,
    usable: bool,
}

async fn auth_status(g: &Global) -> Result<(), Failure> {
    let cache = cache::Cache::locate()?;
    let config = cache.config();
    let now = chrono::Utc::now();
    let tokens: Vec<TokenDoc> = cache
        .tokens()
        .iter()
        .map(|t| TokenDoc {
            identity: t.identity.clone(),
            kind: t.kind,
            expires_at: t.expires_at.to_rfc3339(),
            usable: t.fresh_at(now),
        })
        .collect();
    let check = match crate::connect(g).await {
        Ok(s) => s.api.info().await.map(|_| ()).map_err(Failure::from),
        Err(e) => Err(e),
    };
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct StatusDoc<'a> {
        cache_dir: String,
        config: &'a cache::AuthConfig,
        tokens: &'a [TokenDoc],
        authenticated: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    }
    let doc = StatusDoc {
        cache_dir: cache.dir().display().to_string(),
        config: &config,
        tokens: &tokens,
        authenticated: check.is_ok(),
        error: check.as_ref().err().map(|e| crate::chain(e)),
    };
    emit(g.output, &doc, || {
        let mut text = format!(
            "Cache:           {}\nService account: {}\nNamespace:       {}\n",
            doc.cache_dir,
            config
                .service_account
                .as_deref()
                .unwrap_or("kubectl-hsm (falling back to default)"),
            config
                .namespace
                .as_deref()
                .unwrap_or("(the kubeconfig context's)"),
        );
        if tokens.is_empty() {
            text.push_str("Cached tokens:   none\n");
        }
        for t in &tokens {
            text.push_str(&format!(
                "Cached token:    {} ({:?}, expires {}{})\n",
                t.identity,
                t.kind,
                t.expires_at,
                if t.usable { "" } else { ", will be renewed" }
            ));
        }
        text.push_str(&format!(
            "Authenticated:   {}\n",
            if doc.authenticated { "yes" } else { "no" }
        ));
        text
    })?;
    check
}

fn auth_clear(g: &Global) -> Result<(), Failure> {
    let cache = cache::Cache::locate()?;
    let removed = cache.clear_tokens()?;
    #[derive(Serialize)]
    struct Cleared {
        removed: usize,
    }
    emit(g.output, &Cleared { removed }, || {
        format!("Removed {removed} cached tokens; the next command authenticates afresh.\n")
    })
}

fn auth_config(
    g: &Global,
    service_account: Option<String>,
    namespace: Option<String>,
) -> Result<(), Failure> {
    let cache = cache::Cache::locate()?;
    let mut config = cache.config();
    let changed = service_account.is_some() || namespace.is_some();
    if let Some(sa) = service_account {
        config.service_account = Some(sa).filter(|s| !s.is_empty());
    }
    if let Some(ns) = namespace {
        config.namespace = Some(ns).filter(|s| !s.is_empty());
    }
    if changed {
        cache.save_config(&config)?;
        // Tokens of the previous account are not this one's.
        cache.clear_tokens()?;
    }
    emit(g.output, &config, || {
        format!(
            "{}Service account: {}\nNamespace:       {}\n",
            if changed { "Saved.\n" } else { "" },
            config
                .service_account
                .as_deref()
                .unwrap_or("kubectl-hsm (falling back to default)"),
            config
                .namespace
                .as_deref()
                .unwrap_or("(the kubeconfig context's)")
        )
    })
}

fn version(g: &Global) -> Result<(), Failure> {
    #[derive(Serialize)]
    struct Version {
        version: &'static str,
    }
    let version = env!("CARGO_PKG_VERSION");
    emit(g.output, &Version { version }, || {
        format!("kubectl-hsm {version}\n")
    })
}
