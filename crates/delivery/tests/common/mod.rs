//! What the image tests share: building a component's image from the test suite's binaries,
//! and removing what a test made (by its own label) when it ends or was killed before.
#![allow(dead_code)]

use delivery::cargo::{self, Profile};
use delivery::components::Component;
use delivery::podman;
use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The label key of everything a test makes.
pub const TEST_LABEL: &str = "io.hsm-secrets-operator.test";

/// Removes a test's containers and images when dropped (and those a killed earlier run of the
/// same test left, when made).
pub struct Cleanup {
    pub label: String,
    pub dir: tempfile::TempDir,
}

impl Cleanup {
    pub fn new(test: &str) -> Self {
        assert!(
            podman::available(),
            "podman is needed for the image tests: run `cargo xtask deps`"
        );
        let label = format!("{TEST_LABEL}={test}");
        podman::remove_labelled(&label).unwrap();
        Cleanup {
            label,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn labels(&self) -> Vec<(&str, &str)> {
        let (k, v) = self.label.split_once('=').unwrap();
        vec![(k, v)]
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = podman::remove_labelled(&self.label) {
            eprintln!("cleaning up {}: {e}", self.label);
        }
    }
}

/// The test suite's binary of `component`, or None when the workspace has no such binary
/// target yet (said on stderr).
pub fn binary(component: &Component) -> Option<PathBuf> {
    let root = workspace();
    let targets = cargo::binary_targets(&root).unwrap();
    if !targets.contains(component.binary) {
        eprintln!(
            "SKIPPED: the workspace has no `{}` binary yet, so there is no {} image to test",
            component.binary, component.image
        );
        return None;
    }
    let built = cargo::build(&root, Profile::TestSuite, &[component.binary]).unwrap();
    Some(built[component.binary].clone())
}

/// Assembles `component`'s image from `binary` and loads it as `localhost/<image>:<tag>`.
pub fn build_image(cleanup: &Cleanup, component: &Component, binary: &Path, tag: &str) -> String {
    let image = format!("localhost/{}:{tag}", component.image);
    podman::build_component(
        cleanup.dir.path(),
        component,
        binary,
        &image,
        &cleanup.labels(),
    )
    .unwrap();
    image
}
