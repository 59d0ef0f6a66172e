//! The run's container images: built in the run from the workspace binaries it has just
//! built (the test suite's debug profile, stripped of debug information as `cargo xtask
//! images` strips its release binaries; no second, release build), exactly as `cargo xtask
//! images` assembles them (`FROM scratch`, the binary and Debian's files), the agent's with
//! the test-only SoftHSM2 layer over it.
//!
//! The manifests keep the image names users install (`localhost/hsm-*:dev`, those of `cargo
//! xtask images`); the node resolves each to the run's own image, tagged for the run
//! ([`RunImages::table`]), as a node whose registry mirror serves the names. So a run never
//! re-tags, and never removes, the images a developer built with `cargo xtask images`.
//!
//! Every image carries [`IMAGE_LABEL`] with the run's id: what a killed run left is removed
//! when the next run with that id starts, and everything when the run ends.

use crate::emulated::{Binaries, IMAGES};
use anyhow::{Context, Result};
use delivery::components::{self, Component};
use delivery::podman;
use pod_runner::ContainerImages;
use std::time::Instant;

/// The label every image of a run carries; its value is the run's id.
pub const IMAGE_LABEL: &str = "io.hsm-secrets-operator.e2e";

/// The images of one run, removed when dropped.
pub struct RunImages {
    label: String,
    table: ContainerImages,
    work: tempfile::TempDir,
}

/// The tag of run `id`'s images.
pub fn tag(id: &str) -> String {
    format!("e2e-{id}")
}

/// The component whose image the manifests name as `image` (`localhost/hsm-agent:dev`).
fn component_of(image: &str) -> Option<Component> {
    let name = image.rsplit('/').next()?.split(':').next()?;
    components::by_name(name)
}

impl RunImages {
    /// Removes what a killed run with `id` left, then builds the images the manifests name
    /// from `binaries`: the agent's with SoftHSM2 over it (the token is the node's device).
    pub fn build(id: &str, binaries: &Binaries) -> Result<RunImages> {
        let label = format!("{IMAGE_LABEL}={id}");
        podman::remove_labelled(&label).context("removing a killed run's images")?;
        let work = tempfile::Builder::new()
            .prefix("hsm-e2e-images-")
            .tempdir()?;
        let tag = tag(id);
        let labels = [(IMAGE_LABEL, id)];
        // From here on, whatever was built goes when `images` is dropped.
        let mut images = RunImages {
            label,
            table: ContainerImages::new(),
            work,
        };
        for (named, binary) in IMAGES {
            let component =
                component_of(named).with_context(|| format!("no component builds {named}"))?;
            let started = Instant::now();
            let mut image = format!("localhost/{}:{tag}", component.image);
            podman::build_component(
                images.work.path(),
                &component,
                binaries.get(binary)?,
                &image,
                &labels,
            )
            .with_context(|| format!("building {image}"))?;
            if component == components::AGENT {
                let base = image;
                image = format!("localhost/{}-softhsm:{tag}", component.image);
                podman::build_test_layer(images.work.path(), &base, &image, &labels)
                    .with_context(|| format!("building {image}"))?;
            }
            crate::progress(&format!(
                "    image {image} for {named} ({:.1} s)",
                started.elapsed().as_secs_f64()
            ));
            images.table.insert(named, image);
        }
        Ok(images)
    }

    /// Each image the manifests name → the run's image that the node runs for it.
    pub fn table(&self) -> &ContainerImages {
        &self.table
    }
}

impl Drop for RunImages {
    fn drop(&mut self) {
        if let Err(e) = podman::remove_labelled(&self.label) {
            eprintln!("removing the run's images ({}): {e}", self.label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_the_manifests_name_is_a_component() {
        for (named, binary) in IMAGES {
            let component = component_of(named).unwrap();
            assert_eq!(component.binary, binary, "{named}");
        }
        assert_eq!(component_of("localhost/nginx:1"), None);
    }
}
