//! Podman: `FROM scratch` images from a root directory, their file lists, and clean-up by
//! label.

use crate::components::Component;
use crate::rootfs;
use crate::{Result, output};
use std::path::Path;
use std::process::Command;

/// The label every image built here carries, with the component's name as its value.
pub const COMPONENT_LABEL: &str = "io.hsm-secrets-operator.component";

/// The Containerfile of a component's image over `root/` (the directory next to it).
pub fn containerfile(component: &Component, labels: &[(&str, &str)]) -> String {
    let user = component.user;
    let mut text = format!(
        "FROM scratch\nCOPY rootfs/ /\nUSER {user}:{user}\nENTRYPOINT [\"{}\"]\n",
        rootfs::binary_path(component)
    );
    for (key, value) in component.resolved_env() {
        text.push_str(&format!("ENV {key}=\"{value}\"\n"));
    }
    text.push_str(&label_line(
        &[(COMPONENT_LABEL, component.image)]
            .into_iter()
            .chain(labels.iter().copied())
            .collect::<Vec<_>>(),
    ));
    text
}

/// A Containerfile that adds `layer/` to the image `base`.
pub fn layer_containerfile(base: &str, labels: &[(&str, &str)]) -> String {
    format!("FROM {base}\nCOPY layer/ /\n{}", label_line(labels))
}

fn label_line(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("LABEL {}\n", pairs.join(" "))
}

/// Builds `tag` from `context`, whose `Containerfile` is `containerfile`; never pulls.
pub fn build(context: &Path, containerfile: &str, tag: &str) -> Result<()> {
    let file = context.join("Containerfile");
    std::fs::write(&file, containerfile).map_err(|source| crate::Error::Io {
        action: "write",
        path: file.clone(),
        source,
    })?;
    output(
        Command::new("podman")
            .args(["build", "--quiet", "--pull=never", "--file"])
            .arg(&file)
            .args(["--tag", tag])
            .arg(context),
    )?;
    Ok(())
}

/// Assembles `component`'s image from `binary` (its root directory under
/// `work/<component's image>`) and loads it into Podman as `image`, with `labels`.
pub fn build_component(
    work: &Path,
    component: &Component,
    binary: &Path,
    image: &str,
    labels: &[(&str, &str)],
) -> Result<()> {
    let context = work.join(component.image);
    rootfs::assemble(&context.join("rootfs"), component, binary)?;
    build(&context, &containerfile(component, labels), image)
}

/// Loads the agent's test-only layer (SoftHSM2 and the vpcd reader,
/// [`crate::components::TEST_LAYER`]) over the image `base` as `image`, with `labels`
/// (its context under `work/softhsm-layer`).
pub fn build_test_layer(
    work: &Path,
    base: &str,
    image: &str,
    labels: &[(&str, &str)],
) -> Result<()> {
    let context = work.join("softhsm-layer");
    rootfs::test_layer(&context.join("layer"))?;
    build(&context, &layer_containerfile(base, labels), image)
}

/// Every entry of an image's file system, one line each: the mode string, the path, and for
/// a link its target (`lrwxrwxrwx /lib -> usr/lib`), sorted by path.
pub fn file_list(image: &str, labels: &[(&str, &str)]) -> Result<Vec<String>> {
    let mut create = Command::new("podman");
    create.arg("create");
    for (k, v) in labels {
        create.args(["--label", &format!("{k}={v}")]);
    }
    let id = output(create.arg(image))?.trim().to_owned();
    let listing = output(Command::new("sh").arg("-c").arg(format!(
        "podman export {id} | tar --list --verbose --numeric-owner --file -"
    )));
    let removed = output(Command::new("podman").args(["rm", "--force", &id]));
    let listing = listing?;
    removed?;
    Ok(parse_tar_listing(&listing))
}

/// `tar -tv` lines to `mode /path[ -> target]`, sorted by path; the root itself left out.
pub fn parse_tar_listing(listing: &str) -> Vec<String> {
    let mut entries: Vec<(String, String)> = listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let mode = words.next()?;
            // mode, owner, size, date, time, then the name (which may hold " -> target").
            let name = words.skip(4).collect::<Vec<_>>().join(" ");
            let path = format!("/{}", name.trim_start_matches("./").trim_end_matches('/'));
            (path != "/").then(|| (path.clone(), format!("{mode} {path}")))
        })
        .collect();
    entries.sort();
    entries.dedup();
    entries.into_iter().map(|(_, line)| line).collect()
}

/// Removes every container and image that carries `label` (`key=value`): what a killed test
/// left behind, and what a finished test made.
pub fn remove_labelled(label: &str) -> Result<()> {
    let filter = format!("label={label}");
    let containers =
        output(Command::new("podman").args(["ps", "--all", "--quiet", "--filter", &filter]))?;
    let ids: Vec<&str> = containers.split_whitespace().collect();
    if !ids.is_empty() {
        output(Command::new("podman").args(["rm", "--force"]).args(&ids))?;
    }
    let images = output(Command::new("podman").args(["images", "--quiet", "--filter", &filter]))?;
    let mut ids: Vec<&str> = images.split_whitespace().collect();
    ids.sort();
    ids.dedup();
    if !ids.is_empty() {
        output(Command::new("podman").args(["rmi", "--force"]).args(&ids))?;
    }
    Ok(())
}

/// Whether podman can run here (installed and answering).
pub fn available() -> bool {
    Command::new("podman")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::AGENT;

    #[test]
    fn tar_listing_becomes_sorted_absolute_paths_with_link_targets() {
        let listing = "drwxr-xr-x 0/0 0 2026-01-01 00:00 ./\n\
                       lrwxrwxrwx 0/0 0 2026-01-01 00:00 lib -> usr/lib\n\
                       drwxr-xr-x 0/0 0 2026-01-01 00:00 etc/\n\
                       -rw-r--r-- 0/0 9 2026-01-01 00:00 etc/passwd\n";
        assert_eq!(
            parse_tar_listing(listing),
            [
                "drwxr-xr-x /etc",
                "-rw-r--r-- /etc/passwd",
                "lrwxrwxrwx /lib -> usr/lib"
            ]
        );
    }

    #[test]
    fn the_agent_containerfile_is_from_scratch_with_its_entrypoint_and_labels() {
        let text = containerfile(&AGENT, &[("t", "1")]);
        assert!(
            text.starts_with("FROM scratch\nCOPY rootfs/ /\nUSER 0:0\n"),
            "{text}"
        );
        assert!(text.contains("ENTRYPOINT [\"/usr/bin/hsm-agent\"]"));
        assert!(text.contains(&format!("{COMPONENT_LABEL}=\"hsm-agent\" t=\"1\"")));
    }
}
