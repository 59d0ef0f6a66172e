//! Assembles an image's root directory from the host: a binary, Debian's files, their
//! shared-library closure, users, and empty directories. Nothing else: no shell, no package
//! manager, no package database.

use crate::components::{
    CCID_INFO_PLIST, CCID_INFO_PLIST_ETC, Component, HostFile, TEST_LAYER, TEST_SOFTHSM2_CONF,
    TEST_TOKEN_DIR,
};
use crate::{Error, Result, closure, plist};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Where a component's binary goes in its image.
pub fn binary_path(component: &Component) -> String {
    format!("/usr/bin/{}", component.binary)
}

/// `/etc/passwd` of every image: root, and the non-root user 65532, with no login shell.
pub const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                          nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
/// `/etc/group` of every image.
pub const GROUP: &str = "root:x:0:\nnonroot:x:65532:\n";

/// Fills `root` (an empty or missing directory) with `component`'s image: its binary (from
/// `binary`, stripped of debug information), its files and all their libraries.
pub fn assemble(root: &Path, component: &Component, binary: &Path) -> Result<()> {
    let mut copier = Copier::new(root)?;
    copier.merged_usr_links()?;
    let dest = binary_path(component);
    copier.install_stripped(binary, Path::new(&dest))?;
    copier.closure_of(binary)?;
    copier.host_files(component.files)?;
    if component.ccid_info_plist {
        copier.ccid_info_plist()?;
    }
    for dir in component.dirs {
        create_dir(&root.join(dir.trim_start_matches('/')))?;
    }
    write(&root.join("etc/passwd"), PASSWD)?;
    write(&root.join("etc/group"), GROUP)?;
    Ok(())
}

/// Fills `root` with a layer of extra host files and their closures (a test-only layer over
/// an image), skipping nothing: files the image below already has are copied again, which
/// changes nothing.
pub fn layer(root: &Path, files: &[HostFile]) -> Result<()> {
    let mut copier = Copier::new(root)?;
    copier.merged_usr_links()?;
    copier.host_files(files)
}

/// The agent's test-only layer: [`TEST_LAYER`]'s files, [`TEST_SOFTHSM2_CONF`] keeping tokens
/// in [`TEST_TOKEN_DIR`] (the token volume's mount point), and that directory.
pub fn test_layer(root: &Path) -> Result<()> {
    layer(root, TEST_LAYER)?;
    create_dir(&root.join(TEST_TOKEN_DIR.trim_start_matches('/')))?;
    write(
        &root.join(TEST_SOFTHSM2_CONF.trim_start_matches('/')),
        &format!(
            "directories.tokendir = {TEST_TOKEN_DIR}\nobjectstore.backend = file\nlog.level = ERROR\n"
        ),
    )
}

/// Copies host paths into a root directory at the same paths, following symbolic links.
struct Copier {
    root: PathBuf,
    done: BTreeSet<PathBuf>,
}

impl Copier {
    fn new(root: &Path) -> Result<Self> {
        create_dir(root)?;
        Ok(Copier {
            root: root.to_owned(),
            done: BTreeSet::new(),
        })
    }

    /// Debian 12 has merged /usr: /lib, /lib64, /bin and /sbin are links into /usr, and the
    /// loader path compiled into every program is /lib64/…; the image keeps the same links.
    fn merged_usr_links(&mut self) -> Result<()> {
        for top in ["bin", "lib", "lib64", "sbin"] {
            let host = Path::new("/").join(top);
            if let Ok(target) = fs::read_link(&host) {
                self.link(&host, &target)?;
                create_dir(
                    &self
                        .root
                        .join(target.to_string_lossy().trim_start_matches('/')),
                )?;
            }
        }
        Ok(())
    }

    fn host_files(&mut self, files: &[HostFile]) -> Result<()> {
        for file in files {
            let path = PathBuf::from(file.resolved());
            if fs::symlink_metadata(&path).is_err() {
                return Err(Error::MissingFile {
                    path,
                    package: file.package,
                });
            }
            self.copy(&path)?;
            if file.elf {
                self.closure_of(&path)?;
            }
        }
        Ok(())
    }

    fn closure_of(&mut self, binary: &Path) -> Result<()> {
        for library in closure::libraries(binary)? {
            self.copy(&library)?;
        }
        Ok(())
    }

    /// Copies `path` (a file or a chain of links ending in a file) to the same place.
    fn copy(&mut self, path: &Path) -> Result<()> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        let parent = fs::canonicalize(parent).map_err(io("resolve", parent))?;
        let path = parent.join(path.file_name().unwrap_or_default());
        if !self.done.insert(path.clone()) {
            return Ok(());
        }
        let meta = fs::symlink_metadata(&path).map_err(io("read", &path))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(io("read link", &path))?;
            self.link(&path, &target)?;
            return self.copy(&parent.join(target));
        }
        let dest = self.inside(&path);
        create_dir(dest.parent().unwrap_or(&self.root))?;
        fs::copy(&path, &dest).map_err(io("copy", &path))?;
        Ok(())
    }

    /// Installs a program with its debug information left out (`strip --strip-debug`).
    fn install_stripped(&mut self, from: &Path, to: &Path) -> Result<()> {
        let dest = self.inside(to);
        create_dir(dest.parent().unwrap_or(&self.root))?;
        crate::output(
            std::process::Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&dest)
                .arg(from),
        )?;
        Ok(())
    }

    fn link(&self, at: &Path, target: &Path) -> Result<()> {
        let dest = self.inside(at);
        if fs::symlink_metadata(&dest).is_ok() {
            return Ok(());
        }
        create_dir(dest.parent().unwrap_or(&self.root))?;
        std::os::unix::fs::symlink(target, &dest).map_err(io("link", &dest))
    }

    /// The CCID bundle's Info.plist, with the Pico HSM added, where Debian keeps it and linked
    /// from the bundle as Debian links it.
    fn ccid_info_plist(&mut self) -> Result<()> {
        let source = Path::new(CCID_INFO_PLIST_ETC);
        let text = fs::read_to_string(source).map_err(|_| Error::MissingFile {
            path: source.to_owned(),
            package: "libccid",
        })?;
        let patched = plist::add_reader(&text, plist::PICO_HSM)?;
        write(&self.inside(source), &patched)?;
        self.link(Path::new(CCID_INFO_PLIST), source)
    }

    fn inside(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(io("create", dir))
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    fs::write(path, text).map_err(io("write", path))
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::{AGENT, DISCOVERY, OPERATOR};

    #[test]
    fn the_agent_root_has_its_programs_their_libraries_and_the_patched_plist() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        assemble(&root, &AGENT, Path::new("/usr/bin/true")).unwrap();
        for path in [
            "usr/bin/hsm-agent",
            "usr/sbin/pcscd",
            "usr/bin/sc-hsm-tool",
            "lib64/ld-linux-x86-64.so.2",
            "usr/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Linux/libccid.so",
            "etc/passwd",
            "run/pcscd",
            "var/lock/pcsc",
        ] {
            assert!(root.join(path).exists(), "{path} is missing");
        }
        let plist = fs::read_to_string(root.join("etc/libccid_Info.plist")).unwrap();
        assert!(plist::knows(&plist, plist::PICO_HSM).unwrap());
        assert!(!root.join("bin/sh").exists() && !root.join("usr/bin/sh").exists());
    }

    /// The manager's and discovery's images hold their program, CA certificates and users;
    /// discovery also the CCID Info.plist it reads its allowlist from; neither has the agent's
    /// PC/SC stack. (A stand-in program until their crates land.)
    #[test]
    fn operator_and_discovery_roots_hold_only_what_they_read() {
        for component in [OPERATOR, DISCOVERY] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            assemble(&root, &component, Path::new("/usr/bin/true")).unwrap();
            for path in [
                binary_path(&component).trim_start_matches('/').to_owned(),
                "etc/ssl/certs/ca-certificates.crt".into(),
                "etc/passwd".into(),
                "etc/group".into(),
                "tmp".into(),
            ] {
                assert!(root.join(&path).exists(), "{path} is missing");
            }
            assert_eq!(
                root.join("etc/libccid_Info.plist").exists(),
                component.ccid_info_plist
            );
            for absent in ["usr/sbin/pcscd", "usr/bin/sc-hsm-tool", "run/pcscd"] {
                assert!(
                    !root.join(absent).exists(),
                    "{absent} in {}",
                    component.image
                );
            }
        }
    }
}
