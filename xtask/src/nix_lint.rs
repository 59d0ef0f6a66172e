//! Lints of the Nix files, which cannot be evaluated here (no Nix store can be filled):
//! `nixpkgs-fmt --check`, `deadnix --fail`, and `nix-instantiate --parse` of each file.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `flake.nix` and every `.nix` file under `nix/`.
pub fn files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = vec![root.join("flake.nix")];
    let dir = root.join("nix");
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "nix") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Runs the three lints over the Nix files.
pub fn run(root: &Path) -> Result<()> {
    let files = files(root)?;
    crate::run(root, "nixpkgs-fmt", &with(&["--check"], &files))?;
    crate::run(root, "deadnix", &with(&["--fail"], &files))?;
    for file in &files {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(file)
            .output()
            .context("cannot run nix-instantiate (Debian package nix-bin)")?;
        if !out.status.success() {
            bail!(
                "nix-instantiate --parse {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let lock = root.join("flake.lock");
    let text = std::fs::read_to_string(&lock)
        .with_context(|| format!("cannot read {}", lock.display()))?;
    let pinned = check_lock(&text)?;
    eprintln!(
        "Nix files lint clean: {} files; flake.lock pins {}",
        files.len(),
        pinned.join(", ")
    );
    Ok(())
}

/// Every input of flake.lock is locked to a full revision with a NAR hash; returns
/// `name@rev` for each.
pub fn check_lock(text: &str) -> Result<Vec<String>> {
    let lock: serde_json::Value = serde_json::from_str(text).context("flake.lock is not JSON")?;
    let root = lock["root"].as_str().context("flake.lock has no root")?;
    let inputs = lock["nodes"][root]["inputs"]
        .as_object()
        .context("flake.lock's root has no inputs")?;
    let mut pinned = Vec::new();
    for (name, node) in inputs {
        let node = node.as_str().context("follows are not used here")?;
        let locked = &lock["nodes"][node]["locked"];
        let rev = locked["rev"].as_str().unwrap_or_default();
        let nar = locked["narHash"].as_str().unwrap_or_default();
        if rev.len() != 40 || !rev.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("flake.lock: input {name} is not locked to a full revision");
        }
        if !nar.starts_with("sha256-") || locked["lastModified"].as_u64().is_none() {
            bail!("flake.lock: input {name} lacks its narHash or lastModified");
        }
        pinned.push(format!("{name}@{}", &rev[..12]));
    }
    Ok(pinned)
}

fn with<'a>(flags: &[&'a str], files: &'a [PathBuf]) -> Vec<&'a str> {
    flags
        .iter()
        .copied()
        .chain(files.iter().filter_map(|f| f.to_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_lock_pins_every_input() {
        let text = include_str!("../../flake.lock");
        let pinned = check_lock(text).unwrap();
        assert_eq!(pinned.len(), 2, "{pinned:?}");
    }

    #[test]
    fn an_unlocked_input_is_refused() {
        let text = r#"{"root":"root","nodes":{"root":{"inputs":{"x":"x"}},
            "x":{"locked":{"rev":"main","narHash":"sha256-a","lastModified":1}}}}"#;
        assert!(check_lock(text).is_err());
    }
}
