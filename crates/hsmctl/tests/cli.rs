//! hsmctl as a user runs it: the real binary against real SoftHSM2, each test with its own
//! token directory (the test process never opens the token itself, so no two processes log in
//! to it at once).

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4711";
const SO_PIN: &str = "87654321";

struct Token {
    dir: tempfile::TempDir,
}

impl Token {
    /// A fresh token directory with one token, "cli", made by `hsmctl init-token`.
    fn new() -> Token {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 is not installed: install the Debian package softhsm2"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("pin"), format!("{PIN}\n")).unwrap();
        std::fs::write(dir.path().join("so-pin"), SO_PIN).unwrap();
        let token = Token { dir };
        token
            .cmd(&["init-token", "--label", "cli", "--so-pin-file"])
            .arg(token.path("so-pin"))
            .assert()
            .success()
            .stdout(predicate::str::contains("cli"));
        token
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// hsmctl with this token's configuration and PIN file.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("hsmctl").unwrap();
        cmd.env("SOFTHSM2_CONF", self.path("softhsm2.conf"))
            .env_remove("HSM_PIN")
            .env_remove("PKCS11_LIBRARY")
            .args(["--module", MODULE, "--token-label", "cli", "--pin-file"])
            .arg(self.path("pin"))
            .args(args);
        cmd
    }
}

fn json(output: &[u8]) -> serde_json::Value {
    serde_json::from_slice(output).unwrap()
}

#[test]
fn put_list_get_delete() {
    let token = Token::new();
    std::fs::write(token.path("cert.pem"), "-----BEGIN CERT-----\nabc\n").unwrap();
    token
        .cmd(&[
            "put",
            "db",
            "username=admin",
            "password=s3cr3t",
            "--description",
            "primary",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("wrote db (2 keys"));
    token
        .cmd(&["put", "tls"])
        .arg(format!("tls.crt=@{}", token.path("cert.pem").display()))
        .assert()
        .success();
    token
        .cmd(&["put", "blob", "--from-stdin", "bin"])
        .write_stdin(vec![0u8, 159, 146, 150, 10])
        .assert()
        .success();

    let out = token
        .cmd(&["list"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.contains("db") && text.contains("password,username"),
        "{text}"
    );
    let list = json(
        &token
            .cmd(&["list", "-o", "json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["blob", "db", "tls"]);

    let db = json(
        &token
            .cmd(&["get", "db", "-o", "json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(db["data"]["password"], "s3cr3t");
    assert_eq!(db["metadata"]["description"], "primary");
    assert_eq!(db["metadata"]["labels"]["sync.version"], "1");
    assert!(db["checksum"].as_str().unwrap().starts_with("sha256:"));
    let yaml = token
        .cmd(&["get", "db", "-o", "yaml"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8(yaml).unwrap().contains("username: admin"));
    token
        .cmd(&["get", "db"])
        .assert()
        .success()
        .stdout(predicate::str::contains("password  s3cr3t"));
    let blob = json(
        &token
            .cmd(&["get", "blob", "-o", "json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(blob["binaryData"]["bin"], "AJ+Slgo=");
    token
        .cmd(&["get", "blob", "--key", "bin"])
        .assert()
        .success()
        .stdout(predicate::eq(vec![0u8, 159, 146, 150, 10].as_slice()));
    token
        .cmd(&["get", "tls", "--key", "tls.crt"])
        .assert()
        .success()
        .stdout("-----BEGIN CERT-----\nabc\n");

    // A second put bumps the sync version and keeps the description.
    token
        .cmd(&["put", "db", "username=admin", "password=rotated"])
        .assert()
        .success();
    let db = json(
        &token
            .cmd(&["get", "db", "-o", "json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(db["metadata"]["labels"]["sync.version"], "2");
    assert_eq!(db["metadata"]["description"], "primary");

    token
        .cmd(&["delete", "db", "--key", "username"])
        .assert()
        .success();
    let db = json(
        &token
            .cmd(&["get", "db", "-o", "json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(db["data"].as_object().unwrap().len(), 1);
    token
        .cmd(&["delete", "db"])
        .assert()
        .success()
        .stdout("deleted db\n");
    token
        .cmd(&["get", "db"])
        .assert()
        .code(7)
        .stderr("hsmctl: error: secret \"db\" not found\n");
    let info = json(
        &token
            .cmd(&["info", "-o", "json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(info["label"], "cli");
    assert_eq!(info["secrets"], 2);
}

/// One line on stderr, the given exit code, and nothing that was typed as a secret.
fn fails(mut cmd: impl std::borrow::BorrowMut<Command>, code: i32, mentions: &str, never: &[&str]) {
    let out = cmd.borrow_mut().assert().code(code).get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("hsmctl: error: "), "{stderr}");
    assert!(stderr.contains(mentions), "{stderr}");
    for n in never {
        assert!(!stderr.contains(n), "leaked {n}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains(n));
    }
}

#[test]
fn each_failure_has_its_line_and_exit_code() {
    let token = Token::new();
    // Wrong PIN: 5.
    std::fs::write(token.path("wrong"), "999999").unwrap();
    fails(
        token
            .cmd(&["list"])
            .arg("--pin-file")
            .arg(token.path("wrong")),
        5,
        "rejected the PIN",
        &["999999"],
    );
    fails(
        token
            .cmd(&["list"])
            .env("HSM_PIN", "31337")
            .arg("--pin-file")
            .arg(token.path("wrong")),
        5,
        "PIN",
        &["999999", "31337"],
    );
    // Missing module: 3.
    fails(
        token.cmd(&["list", "--module", "/nonexistent/p11.so"]),
        3,
        "cannot load",
        &[PIN],
    );
    // Missing token: 4.
    fails(
        token.cmd(&["list", "--token-label", "absent"]),
        4,
        "no token matches",
        &[PIN],
    );
    // Invalid name: 6.
    fails(
        token.cmd(&["put", "bad name", "k=topsecret"]),
        6,
        "invalid secret name",
        &["topsecret"],
    );
    fails(
        token.cmd(&["put", "ok", "k/x=topsecret"]),
        6,
        "invalid key",
        &["topsecret"],
    );
    // A value typed without its key: 6, and the argument is not echoed.
    fails(
        token.cmd(&["put", "ok", "hunter2"]),
        6,
        "argument 1",
        &["hunter2"],
    );
    // Not found: 7.
    fails(token.cmd(&["get", "missing"]), 7, "not found", &[]);
    fails(token.cmd(&["delete", "missing"]), 7, "not found", &[]);
    // No PIN at all: 5.
    let mut no_pin = Command::cargo_bin("hsmctl").unwrap();
    no_pin
        .env("SOFTHSM2_CONF", token.path("softhsm2.conf"))
        .env_remove("HSM_PIN")
        .args(["--module", MODULE, "list"]);
    fails(&mut no_pin, 5, "no PIN", &[]);
    // Usage: 2.
    token.cmd(&["frobnicate"]).assert().code(2);
}
