//! Test fixtures keep state in temporary directories named `<prefix><pid>-…`, removed when
//! their process exits. A killed test process cannot remove its own, so the next fixture to
//! start sweeps the directories whose process is gone. One sweep for every fixture (the
//! SoftHSM2 token directories, the virtual card's pcscd directories).

use std::path::Path;

/// The process id a directory named `name` belongs to, if it is one of `prefix`'s:
/// `<prefix><pid>-<anything>` or `<prefix><pid>`.
pub fn owner(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let pid = rest.split('-').next()?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is running (or a zombie not yet reaped).
pub fn is_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes every directory of `prefix` in the system's temporary directory whose process is
/// gone. Returns how many it removed. Errors are skipped: a directory that cannot be read or
/// removed now is tried again at the next sweep.
pub fn sweep_dead_process_dirs(prefix: &str) -> usize {
    sweep_in(&std::env::temp_dir(), prefix)
}

/// [`sweep_dead_process_dirs`] in `dir`.
pub fn sweep_in(dir: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| owner(n, prefix)) else {
            continue;
        };
        if !is_alive(pid) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_whose_they_are() {
        assert_eq!(owner("virtual-pico-123-abc", "virtual-pico-"), Some(123));
        assert_eq!(owner("virtual-pico-77", "virtual-pico-"), Some(77));
        assert_eq!(owner("virtual-pico-x1-abc", "virtual-pico-"), None);
        assert_eq!(owner("virtual-pico--abc", "virtual-pico-"), None);
        assert_eq!(owner("other-123", "virtual-pico-"), None);
    }

    #[test]
    fn only_directories_of_dead_processes_are_swept() {
        let tmp = std::env::temp_dir().join(format!("test-dirs-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let prefix = "fixture-";
        let dead_dir = tmp.join(format!("{prefix}{dead}-a"));
        let live_dir = tmp.join(format!("{prefix}{}-b", std::process::id()));
        let foreign = tmp.join(format!("other-{dead}-c"));
        for dir in [&dead_dir, &live_dir, &foreign] {
            std::fs::create_dir_all(dir.join("inside")).unwrap();
        }
        assert_eq!(sweep_in(&tmp, prefix), 1);
        assert!(!dead_dir.exists(), "a dead process's directory stays");
        assert!(live_dir.exists() && foreign.exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
