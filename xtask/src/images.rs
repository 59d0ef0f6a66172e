//! `cargo xtask images`: the scratch images, assembled from the workspace's release binaries
//! and Debian's files, loaded into Podman, and smoke-tested.

use anyhow::{Context, Result};
use delivery::cargo::{self, Profile};
use delivery::components::{self, Component};
use delivery::{podman, rootfs};
use std::path::Path;

/// The tag `cargo xtask images` gives the images.
pub const TAG: &str = "dev";

/// Builds every image whose binary the workspace has, and runs each one's `--help`.
pub fn run(root: &Path, debug: bool) -> Result<()> {
    crate::deps::ensure()?;
    let targets = cargo::binary_targets(root)?;
    let (present, missing): (Vec<Component>, Vec<Component>) = components::ALL
        .into_iter()
        .partition(|c| targets.contains(c.binary));
    for component in &missing {
        eprintln!(
            "skipping the {} image: the workspace has no `{}` binary yet",
            component.image, component.binary
        );
    }
    let names: Vec<&str> = present.iter().map(|c| c.binary).collect();
    let profile = if debug {
        Profile::TestSuite
    } else {
        Profile::Release
    };
    eprintln!("building {} ({profile:?})", names.join(", "));
    let binaries = cargo::build(root, profile, &names)?;
    let work = root.join("target/images");
    for component in &present {
        let binary = binaries
            .get(component.binary)
            .with_context(|| format!("cargo did not report where {} is", component.binary))?;
        let image = build_one(&work, component, binary)?;
        let help = std::process::Command::new("podman")
            .args([
                "run",
                "--rm",
                "--read-only",
                "--cap-drop=ALL",
                &image,
                "--help",
            ])
            .output()
            .context("cannot run podman")?;
        anyhow::ensure!(
            help.status.success(),
            "{image} --help failed: {}",
            String::from_utf8_lossy(&help.stderr)
        );
        let files = podman::file_list(&image, &[])?;
        eprintln!("{image}: {} entries, --help answers", files.len());
    }
    Ok(())
}

/// Assembles and loads one image; returns its name.
fn build_one(work: &Path, component: &Component, binary: &Path) -> Result<String> {
    let context = work.join(component.image);
    if context.exists() {
        std::fs::remove_dir_all(&context)
            .with_context(|| format!("cannot clear {}", context.display()))?;
    }
    rootfs::assemble(&context.join("rootfs"), component, binary)?;
    let image = format!("localhost/{}:{TAG}", component.image);
    podman::build(&context, &podman::containerfile(component, &[]), &image)?;
    eprintln!("built {image}");
    Ok(image)
}
