//! Each image, built as `cargo xtask images` builds it (from the test suite's debug binaries
//! here, to add no release build to the suite): its files as a snapshot, and `--help` under
//! the security context its pods run with.

mod common;

use common::{Cleanup, binary, build_image};
use delivery::components::{AGENT, Component, DISCOVERY, OPERATOR};
use delivery::podman;
use rstest::rstest;
use std::process::Command;

/// Library versions after the soname (`libglib-2.0.so.0.7400.6`) change with every Debian
/// point release; the snapshot keeps the soname.
fn without_library_versions(line: &str) -> String {
    let re = regex::Regex::new(r"(\.so\.\d+)((?:\.\d+)+)").unwrap();
    re.replace_all(line, "$1.*").into_owned()
}

#[rstest]
fn lists_its_files_and_answers_help(#[values(OPERATOR, AGENT, DISCOVERY)] component: Component) {
    let Some(binary) = binary(&component) else {
        return;
    };
    let cleanup = Cleanup::new(&format!("files-{}", component.image));
    let image = build_image(&cleanup, &component, &binary, "files-test");
    let files: Vec<String> = podman::file_list(&image, &cleanup.labels())
        .unwrap()
        .iter()
        .map(|l| without_library_versions(l))
        .collect();
    insta::assert_snapshot!(format!("{}-files", component.image), files.join("\n"));
    for forbidden in ["/bin/sh", "/usr/bin/sh", "/usr/bin/dpkg", "/usr/bin/apt"] {
        assert!(
            !files
                .iter()
                .any(|l| l.split_whitespace().nth(1) == Some(forbidden)),
            "{forbidden} is in the {} image",
            component.image
        );
    }

    let out = Command::new("podman")
        .args(["run", "--rm", "--label", &cleanup.label])
        .args([
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
        ])
        .args([&image, component.mode, "--help"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{image} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Usage"), "{stdout}");
}
