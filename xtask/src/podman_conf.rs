//! Podman's settings on Debian 12: `/etc/containers/containers.conf` needs
//! `[containers] default_ulimits = []` (the default ulimits cannot be set inside the build
//! machines' containers) and `[engine] runtime = "runc"` (crun is not installed). Written
//! when missing; other settings in the file are kept.

use anyhow::{Context, Result};
use std::path::Path;

const PATH: &str = "/etc/containers/containers.conf";

/// The settings, as (section, key, line).
const SETTINGS: &[(&str, &str, &str)] = &[
    ("containers", "default_ulimits", "default_ulimits = []"),
    ("engine", "runtime", "runtime = \"runc\""),
];

/// Writes the two settings into containers.conf if it lacks them.
pub fn ensure() -> Result<()> {
    let path = Path::new(PATH);
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let wanted = with_settings(&current);
    if wanted != current {
        eprintln!("writing Podman's settings into {PATH}");
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))
            .with_context(|| format!("cannot create the directory of {PATH}"))?;
        std::fs::write(path, wanted).with_context(|| format!("cannot write {PATH}"))?;
    }
    Ok(())
}

/// `text` with every setting present: a key already set in its section is left as it is, a
/// missing one is added at the top of its section, a missing section at the end.
pub fn with_settings(text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (section, key, line) in SETTINGS {
        let header = format!("[{section}]");
        let start = lines.iter().position(|l| l.trim() == header);
        let Some(start) = start else {
            if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push(header);
            lines.push((*line).to_owned());
            continue;
        };
        let end = lines[start + 1..]
            .iter()
            .position(|l| l.trim_start().starts_with('['))
            .map_or(lines.len(), |i| start + 1 + i);
        let has_key = lines[start + 1..end].iter().any(|l| {
            l.split_once('=')
                .is_some_and(|(k, _)| k.trim() == *key && !l.trim_start().starts_with('#'))
        });
        if !has_key {
            lines.insert(start + 1, (*line).to_owned());
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gets_both_sections() {
        assert_eq!(
            with_settings(""),
            "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n"
        );
    }

    #[test]
    fn existing_sections_and_settings_are_kept() {
        let text = "[engine]\nruntime = \"crun\"\n\n[containers]\n# default_ulimits = [\"x\"]\nlog_driver = \"k8s-file\"\n";
        let out = with_settings(text);
        assert_eq!(
            out,
            "[engine]\nruntime = \"crun\"\n\n[containers]\ndefault_ulimits = []\n# default_ulimits = [\"x\"]\nlog_driver = \"k8s-file\"\n"
        );
        assert_eq!(with_settings(&out), out);
    }
}
