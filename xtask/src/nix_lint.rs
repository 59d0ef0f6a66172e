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
    eprintln!("Nix files lint clean: {} files", files.len());
    Ok(())
}

fn with<'a>(flags: &[&'a str], files: &'a [PathBuf]) -> Vec<&'a str> {
    flags
        .iter()
        .copied()
        .chain(files.iter().filter_map(|f| f.to_str()))
        .collect()
}
