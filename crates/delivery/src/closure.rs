//! The shared-library closure of a program or library, from `ldd`.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The libraries `ldd` lists for `binary` (the dynamic loader included), or nothing for a
/// static binary.
pub fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| Error::Spawn {
            program: "ldd".into(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic") {
            return Ok(Vec::new());
        }
        return Err(Error::Command {
            command: format!("ldd {}", binary.display()),
            status: out.status,
            stderr: stderr.trim().to_owned(),
        });
    }
    parse_ldd(&stdout).map_err(|library| Error::MissingLibrary {
        binary: binary.to_owned(),
        library,
    })
}

/// The paths in `ldd`'s output; `Err(name)` for the first library it could not find.
///
/// Lines look like `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)`, the loader's like
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`, and the kernel's vDSO has no file.
pub fn parse_ldd(output: &str) -> Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(name.trim().to_owned());
                }
                rest
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libraries_and_the_loader_and_skips_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f79)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f79)\n\
                   \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f79)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libz.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_missing_library_is_named() {
        let out = "\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        assert_eq!(parse_ldd(out), Err("libfoo.so.1".to_owned()));
    }

    #[test]
    fn a_real_program_has_libc_and_the_loader() {
        let libs = libraries(Path::new("/usr/bin/ls")).unwrap();
        assert!(libs.iter().any(|l| l.ends_with("libc.so.6")), "{libs:?}");
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux"))
        );
    }
}
