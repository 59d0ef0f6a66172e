//! The fixture leaves nothing running and nothing behind, even when its test process is
//! killed before it can drop the fixture.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use virtual_pico::fixture::PicoFixture;

const CHILD: &str = "VIRTUAL_PICO_FIXTURE_CHILD";

/// Whether process `pid` is still running (a zombie waiting for its reaper counts as gone).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn a_killed_test_process_takes_its_pcscd_with_it() {
    if std::env::var_os(CHILD).is_some() {
        // The child: start a fixture, say where its pcscd and directory are, and wait to be
        // killed.
        let fixture = PicoFixture::start().unwrap();
        println!("pcscd {} {}", fixture.pcscd_pid(), fixture.dir().display());
        loop {
            std::thread::park();
        }
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_test_process_takes_its_pcscd_with_it",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("pcscd "))
        .expect("the child started a fixture");
    let mut words = line.split(' ').skip(1);
    let pid: u32 = words.next().unwrap().parse().unwrap();
    let dir = words.next().unwrap().to_owned();
    assert!(running(pid));

    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(pid) {
        assert!(Instant::now() < deadline, "pcscd {pid} outlived its test");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its directory goes at the next fixture's start.
    assert!(Path::new(&dir).exists());
    drop(PicoFixture::start().unwrap());
    assert!(!Path::new(&dir).exists(), "{dir} was not swept");
}
