//! `hsmctl`: the store's operations straight against a PKCS#11 module, for debugging a
//! device and for local demos. Every failure is one line on stderr and an exit code that
//! says which kind it was (see [`Failure::exit_code`]); no PIN or secret value is ever part of
//! a message.

pub mod cli;
mod output;

use base64::Engine;
use clap::Parser;
use cli::{Cli, Command, Global};
use hsm_store::metadata::{SYNC_TIMESTAMP, SYNC_VERSION};
use hsm_store::{
    MetadataChange, Module, Pkcs11Token, SecretData, SecretMetadata, SecretStore, SecretValue,
    Store, StoreError, TokenSelector,
};
use secrecy::{ExposeSecret, SecretString};
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

/// A failure, classified for the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// From the store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad input the store never saw (a malformed pair, an unreadable file).
    #[error("{0}")]
    Input(String),
    /// No PIN was given where one is needed.
    #[error("no PIN: give --pin-file, --pin or HSM_PIN")]
    NoPin,
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(String),
}

impl Failure {
    /// The process exit code: 3 module, 4 token not found, 5 PIN, 6 invalid input,
    /// 7 not found, 1 anything else (clap uses 2 for usage errors).
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Store(e) => match e {
                StoreError::ModuleLoad { .. } => 3,
                StoreError::TokenNotFound { .. } => 4,
                StoreError::PinIncorrect | StoreError::PinLocked | StoreError::PinInvalid(_) => 5,
                StoreError::InvalidName { .. }
                | StoreError::InvalidKey { .. }
                | StoreError::LabelConflict { .. } => 6,
                StoreError::NotFound(_) | StoreError::KeyNotFound { .. } => 7,
                StoreError::Malformed { .. } | StoreError::Token(_) => 1,
            },
            Failure::Input(_) => 6,
            Failure::NoPin => 5,
            Failure::Output(_) => 1,
        }
    }
}

/// Runs the command line and turns every failure into one line and an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("hsmctl: error: {}", hsm_store::error::chain(&failure));
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    let global = &cli.global;
    let module = Module::load(&global.module)?;
    match cli.command {
        Command::InitToken {
            label,
            so_pin_file,
            so_pin,
        } => {
            let so_pin = read_pin(so_pin_file.as_deref(), so_pin)?;
            let pin = user_pin(global)?;
            let info = module.init_token(&label, &so_pin, &pin)?;
            output::token_info(global.output, &info, None)
        }
        Command::Info => {
            let store = open(&module, global)?;
            let info = store.info()?;
            output::token_info(global.output, &info, Some(store.list("").len()))
        }
        Command::List { prefix } => {
            let store = open(&module, global)?;
            let entries: Vec<_> = store
                .entries()
                .into_iter()
                .filter(|e| e.has_data && e.name.starts_with(&prefix))
                .collect();
            output::list(global.output, &entries)
        }
        Command::Get { name, key } => {
            let store = open(&module, global)?;
            let data = store.read(&name)?;
            match key {
                Some(key) => {
                    let value = data.get(&key).ok_or(StoreError::KeyNotFound {
                        name: name.clone(),
                        key: key.clone(),
                    })?;
                    std::io::stdout()
                        .write_all(value.expose())
                        .map_err(|e| Failure::Output(e.to_string()))
                }
                None => {
                    let metadata = store.metadata(&name).unwrap_or_default();
                    let checksum = store.checksum(&name)?;
                    output::secret(global.output, &name, &data, &checksum, &metadata)
                }
            }
        }
        Command::Put {
            name,
            pairs,
            from_stdin,
            description,
        } => {
            let data = parse_pairs(&pairs, from_stdin.as_deref())?;
            let store = open(&module, global)?;
            let version = store.summary(&name).map(|s| s.sync_version).unwrap_or(0) + 1;
            let mut update = SecretMetadata {
                description: description.unwrap_or_default(),
                source: "hsmctl".into(),
                ..Default::default()
            };
            update
                .labels
                .insert(SYNC_VERSION.into(), version.to_string());
            update.labels.insert(
                SYNC_TIMESTAMP.into(),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            let outcome = store.write(&name, &data, MetadataChange::Merge(update))?;
            output::written(global.output, &name, data.len(), &outcome.checksum)
        }
        Command::Delete { name, key } => {
            let store = open(&module, global)?;
            match &key {
                Some(key) => store.delete_key(&name, key)?,
                None => store.delete(&name)?,
            }
            output::deleted(global.output, &name, key.as_deref())
        }
    }
}

fn selector(global: &Global) -> TokenSelector {
    if let Some(label) = &global.token_label {
        TokenSelector::Label(label.clone())
    } else if let Some(serial) = &global.token_serial {
        TokenSelector::Serial(serial.clone())
    } else if let Some(slot) = global.slot {
        TokenSelector::Slot(slot)
    } else {
        TokenSelector::First
    }
}

fn open(module: &Module, global: &Global) -> Result<Store<Pkcs11Token>, Failure> {
    let pin = user_pin(global)?;
    let token = Pkcs11Token::open(module, &selector(global), &pin)?;
    Ok(Store::open(token)?)
}

fn user_pin(global: &Global) -> Result<SecretString, Failure> {
    read_pin(global.pin_file.as_deref(), global.pin.clone())
}

/// A PIN from a file (trailing newline dropped) or a value; never echoed.
fn read_pin(file: Option<&Path>, value: Option<SecretString>) -> Result<SecretString, Failure> {
    let pin = match (file, value) {
        (Some(path), _) => {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                Failure::Input(format!(
                    "cannot read PIN file {}: {}",
                    path.display(),
                    e.kind()
                ))
            })?);
            SecretString::from(text.trim_end_matches(['\n', '\r']))
        }
        (None, Some(value)) => value,
        (None, None) => return Err(Failure::NoPin),
    };
    if pin.expose_secret().is_empty() {
        return Err(Failure::NoPin);
    }
    Ok(pin)
}

/// `KEY=VALUE` and `KEY=@FILE` pairs, plus one key from stdin.
fn parse_pairs(pairs: &[String], from_stdin: Option<&str>) -> Result<SecretData, Failure> {
    let mut data = SecretData::new();
    for (n, pair) in pairs.iter().enumerate() {
        // The argument itself is never shown: it may be a value typed without its key.
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            Failure::Input(format!(
                "argument {} is not KEY=VALUE or KEY=@FILE (it has no '=')",
                n + 1
            ))
        })?;
        let value = match value.strip_prefix('@') {
            Some(path) => std::fs::read(path).map_err(|e| {
                Failure::Input(format!("cannot read {path} for key {key:?}: {}", e.kind()))
            })?,
            None => value.as_bytes().to_vec(),
        };
        insert(&mut data, key, value)?;
    }
    if let Some(key) = from_stdin {
        let mut value = Vec::new();
        std::io::stdin()
            .read_to_end(&mut value)
            .map_err(|e| Failure::Input(format!("cannot read standard input: {e}")))?;
        insert(&mut data, key, value)?;
    }
    if data.is_empty() {
        return Err(Failure::Input(
            "nothing to write: give KEY=VALUE pairs or --from-stdin KEY".into(),
        ));
    }
    Ok(data)
}

fn insert(data: &mut SecretData, key: &str, value: Vec<u8>) -> Result<(), Failure> {
    if data
        .insert(key.to_owned(), SecretValue::new(value))
        .is_some()
    {
        return Err(Failure::Input(format!("key {key:?} given twice")));
    }
    Ok(())
}

/// Standard base64, for values that are not UTF-8.
pub(crate) fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
