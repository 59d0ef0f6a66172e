//! How the suite ships: scratch images and Kubernetes manifests.
//!
//! * [`components`] — the images, as a table: which workspace binary, which files of which
//!   Debian packages, which directories, which user. `cargo xtask images` and the image tests
//!   read the same table, so what the tests run is what `cargo xtask images` loads.
//! * [`rootfs`] — assembles one image's root directory: the binary, the files, their
//!   shared-library closure (`ldd`), `/etc/passwd` and `/etc/group`; no shell, no package
//!   manager.
//! * [`podman`] — turns a root directory into a `FROM scratch` image and runs, lists and
//!   removes images and containers by label.
//! * [`cargo`] — which binary targets the workspace has, and where cargo put them.
//! * [`manifests`] — renders `deploy/` with `kubectl kustomize` (its tests check every object
//!   against the built-in and CRD schemas).

pub mod cargo;
pub mod closure;
pub mod components;
pub mod manifests;
pub mod plist;
pub mod podman;
pub mod rootfs;

use std::path::PathBuf;

/// Why a delivery step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said on stderr (trimmed).
        stderr: String,
    },
    /// A file could not be read, written or copied.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `ldd` said a library cannot be found.
    #[error("{binary} needs {library}, which is not installed")]
    MissingLibrary {
        /// The file ldd looked at.
        binary: PathBuf,
        /// The library it lacks.
        library: String,
    },
    /// A file an image needs is not on this machine.
    #[error("{path} (Debian package {package}) is missing: run `cargo xtask deps`")]
    MissingFile {
        /// The file.
        path: PathBuf,
        /// The package that installs it.
        package: &'static str,
    },
    /// The CCID bundle's Info.plist does not have the shape the patch expects.
    #[error("Info.plist has no <array> under <key>{0}</key>")]
    Plist(&'static str),
    /// Output of a tool could not be parsed.
    #[error("cannot parse the output of {tool}")]
    Parse {
        /// The tool.
        tool: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A rendered manifest is not valid YAML.
    #[error("rendered manifest is not YAML")]
    Yaml(#[source] serde_yaml::Error),
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs a command and returns its stdout, or a [`Error::Command`] with its stderr.
pub(crate) fn output(command: &mut std::process::Command) -> Result<String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command.output().map_err(|source| Error::Spawn {
        program: program.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: describe(command),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A command line, for messages.
pub(crate) fn describe(command: &std::process::Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
