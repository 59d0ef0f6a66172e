//! `cargo xtask prune-cache`: keeps a long-lived build cache from filling the disk.
//!
//! Every change to a crate's dependencies, features or toolchain gives its test and binary
//! executables a new hash, and cargo never deletes the old ones; on a machine whose cache
//! outlives many clones they add up to tens of gigabytes. An executable in `deps/` that a newer
//! one of the same name has superseded, and that nothing has rebuilt for `min_age`, is stale:
//! it is deleted. Libraries are left alone (they are small and shared), as is anything recent.

use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// One executable found in a `deps/` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// File name, `name-<16 hex digits>`.
    pub file: String,
    /// Last modified.
    pub modified: SystemTime,
    /// Size in bytes.
    pub bytes: u64,
}

/// The name an executable's file has without cargo's hash, or `None` for anything else
/// (libraries, dep-info and other files have an extension).
pub fn crate_name(file: &str) -> Option<&str> {
    if file.contains('.') {
        return None;
    }
    let (name, hash) = file.rsplit_once('-')?;
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

/// The artifacts to delete: for each name, every one but the newest that is older than
/// `min_age` at `now`.
pub fn stale(artifacts: &[Artifact], now: SystemTime, min_age: Duration) -> Vec<&Artifact> {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&Artifact>> = Default::default();
    for artifact in artifacts {
        if let Some(name) = crate_name(&artifact.file) {
            by_name.entry(name).or_default().push(artifact);
        }
    }
    let old = |a: &Artifact| {
        now.duration_since(a.modified)
            .is_ok_and(|age| age >= min_age)
    };
    let mut out = Vec::new();
    for mut group in by_name.into_values() {
        group.sort_by_key(|a| std::cmp::Reverse(a.modified));
        out.extend(group.into_iter().skip(1).filter(|a| old(a)));
    }
    out
}

/// Deletes the stale executables of every profile under `target`; prints what it freed.
pub fn run(target: &Path, min_age: Duration) -> Result<()> {
    let now = SystemTime::now();
    let mut freed = 0u64;
    let mut count = 0usize;
    for profile in ["debug", "release"] {
        let deps = target.join(profile).join("deps");
        let Ok(entries) = std::fs::read_dir(&deps) else {
            continue;
        };
        let mut artifacts = Vec::new();
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            artifacts.push(Artifact {
                file: entry.file_name().to_string_lossy().into_owned(),
                modified: meta.modified()?,
                bytes: meta.len(),
            });
        }
        for artifact in stale(&artifacts, now, min_age) {
            let path = deps.join(&artifact.file);
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot delete {}", path.display()))?;
            freed += artifact.bytes;
            count += 1;
        }
    }
    eprintln!(
        "prune-cache: {count} superseded executables deleted from {} ({:.1} GB)",
        target.display(),
        freed as f64 / 1e9
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn artifact(file: &str, hours_ago: u64, now: SystemTime) -> Artifact {
        Artifact {
            file: file.into(),
            modified: now - HOUR * hours_ago as u32,
            bytes: 100,
        }
    }

    #[test]
    fn only_executables_with_cargos_hash_have_a_name() {
        assert_eq!(crate_name("pool-0123456789abcdef"), Some("pool"));
        assert_eq!(
            crate_name("hsm_operator-0123456789abcdef"),
            Some("hsm_operator")
        );
        assert_eq!(crate_name("libkube-0123456789abcdef.rlib"), None);
        assert_eq!(crate_name("pool-0123456789abcdef.d"), None);
        assert_eq!(crate_name("pool-0123"), None);
        assert_eq!(crate_name("pool-0123456789abcdeg"), None);
        assert_eq!(crate_name("pool"), None);
    }

    #[test]
    fn the_newest_of_a_name_stays_and_older_ones_go_once_old_enough() {
        let now = SystemTime::now();
        let artifacts = vec![
            artifact("pool-000000000000000a", 30, now),
            artifact("pool-000000000000000b", 1, now),
            artifact("pool-000000000000000c", 20, now),
            artifact("api-000000000000000a", 2, now),
            artifact("api-000000000000000b", 50, now),
            artifact("lonely-000000000000000a", 99, now),
            artifact("libx-000000000000000a.rlib", 99, now),
        ];
        let mut gone: Vec<&str> = stale(&artifacts, now, 12 * HOUR)
            .into_iter()
            .map(|a| a.file.as_str())
            .collect();
        gone.sort();
        assert_eq!(
            gone,
            [
                "api-000000000000000b",
                "pool-000000000000000a",
                "pool-000000000000000c"
            ]
        );
        let recent = stale(&artifacts, now, 40 * HOUR);
        assert_eq!(recent.len(), 1, "{recent:?}");
        assert_eq!(recent[0].file, "api-000000000000000b");
    }
}
