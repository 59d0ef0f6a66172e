//! The workspace's binary targets, and building them.

use crate::{Error, Result, output};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cargo that runs this (the one that built it when run from a test or xtask), without
/// the variables of a test or `cargo run` process ([`clear_inherited_cargo_variables`]).
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    clear_inherited_cargo_variables(&mut command);
    command
}

/// Removes from `command`'s environment what cargo and nextest set for the process that
/// spawns it (a test, or xtask under `cargo run`). Build scripts watch some of these (ring's
/// watches `CARGO_MANIFEST_DIR`): a build that saw them would rebuild those crates and all
/// above them, and the next build without them would rebuild them back. Every cargo this
/// project starts from inside cargo clears them, so all its builds share one set of units.
pub fn clear_inherited_cargo_variables(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if is_inherited_cargo_variable(&key) {
            command.env_remove(&*key);
        }
    }
    if std::env::var_os("NEXTEST_LD_LIBRARY_PATH").is_some() {
        // nextest put the target directory's library paths first; cargo adds its own again.
        command.env_remove("LD_LIBRARY_PATH");
    }
}

/// Whether cargo (for a test or `cargo run`) or nextest set `key` for this process.
fn is_inherited_cargo_variable(key: &str) -> bool {
    key.starts_with("NEXTEST")
        || key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_BIN_EXE_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "CARGO_TARGET_TMPDIR"
                | "OUT_DIR"
        )
}

/// The names of every binary target of the workspace at `root`.
pub fn binary_targets(root: &Path) -> Result<BTreeSet<String>> {
    let json = output(
        cargo()
            .args(["metadata", "--no-deps", "--format-version=1"])
            .current_dir(root),
    )?;
    let metadata: serde_json::Value =
        serde_json::from_str(&json).map_err(|source| Error::Parse {
            tool: "cargo metadata",
            source,
        })?;
    Ok(metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect())
}

/// How to build the binaries for images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `cargo build --release --bin …`: what `cargo xtask images` ships.
    Release,
    /// The debug binaries the test suite builds anyway (`cargo test --no-run --workspace
    /// --all-features`, as nextest runs it): nothing is rebuilt under `cargo xtask test`.
    TestSuite,
}

/// Builds `binaries` and returns where each is.
pub fn build(
    root: &Path,
    profile: Profile,
    binaries: &[&str],
) -> Result<BTreeMap<String, PathBuf>> {
    let mut command = cargo();
    command.current_dir(root);
    match profile {
        Profile::Release => {
            command.args(["build", "--release"]);
            for binary in binaries {
                command.args(["--bin", binary]);
            }
        }
        Profile::TestSuite => {
            command.args(["test", "--no-run", "--workspace", "--all-features"]);
        }
    }
    command.arg("--message-format=json-render-diagnostics");
    let messages = streamed(&mut command)?;
    let mut found: BTreeMap<String, PathBuf> = executables(&messages)
        .into_iter()
        .filter(|(name, _)| binaries.contains(&name.as_str()))
        .collect();
    // `cargo test` builds a plain binary only for a package with integration tests.
    let missing: Vec<&str> = binaries
        .iter()
        .copied()
        .filter(|b| !found.contains_key(*b))
        .collect();
    if profile == Profile::TestSuite && !missing.is_empty() {
        let mut command = cargo();
        command.current_dir(root).args(["build", "--all-features"]);
        for binary in missing {
            command.args(["--bin", binary]);
        }
        command.arg("--message-format=json-render-diagnostics");
        found.extend(executables(&streamed(&mut command)?));
    }
    Ok(found)
}

/// Runs a build whose progress and diagnostics go to stderr as they come (a release build
/// takes minutes), and returns its JSON messages.
fn streamed(command: &mut Command) -> Result<String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|source| Error::Spawn { program, source })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: crate::describe(command),
            status: out.status,
            stderr: "(its diagnostics are above)".into(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The binary executables in cargo's JSON messages (test harnesses left out).
pub fn executables(messages: &str) -> BTreeMap<String, PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| m["profile"]["test"] == false)
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|m| {
            Some((
                m["target"]["name"].as_str()?.to_owned(),
                PathBuf::from(m["executable"].as_str()?),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tests_own_variables_do_not_reach_a_nested_build() {
        for key in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "NEXTEST_RUN_ID",
            "CARGO_BIN_EXE_x",
        ] {
            assert!(is_inherited_cargo_variable(key), "{key}");
        }
        for key in ["CARGO_TARGET_DIR", "CARGO_HOME", "PATH", "RUSTFLAGS"] {
            assert!(!is_inherited_cargo_variable(key), "{key}");
        }
    }

    #[test]
    fn executables_are_the_bin_artifacts_that_are_not_test_harnesses() {
        let messages = [
            r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"hsm-agent"},"profile":{"test":false},"executable":"/t/debug/hsm-agent"}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"hsm-agent"},"profile":{"test":true},"executable":"/t/debug/deps/hsm_agent-1"}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"hsm_store"},"profile":{"test":false},"executable":null}"#,
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        assert_eq!(
            executables(&messages),
            BTreeMap::from([("hsm-agent".to_owned(), PathBuf::from("/t/debug/hsm-agent"))])
        );
    }
}
