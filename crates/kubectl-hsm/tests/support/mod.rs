//! Running the real `kubectl-hsm` binary against a manager: [`Plugin::new`] takes the
//! manager's URL and a bearer token (a wiremock server here; the real manager on the API
//! emulator in the end-to-end tests), and gives commands with their own home directory (so
//! the token cache is private to the test) and no kubeconfig unless one is given.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The plugin pointed at one manager.
pub struct Plugin {
    /// The test's home directory (the cache is `home/.kube/hsm-cache`).
    pub home: tempfile::TempDir,
    /// The manager's URL.
    pub server: String,
    token_file: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
}

impl Plugin {
    /// The plugin talking to `server` with `token` (sent as it is).
    pub fn new(server: &str, token: &str) -> Plugin {
        let home = tempfile::tempdir().unwrap();
        let token_file = home.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        Plugin {
            home,
            server: server.to_owned(),
            token_file: Some(token_file),
            kubeconfig: None,
        }
    }

    /// The plugin talking to `server`, getting its tokens through the cluster `kubeconfig`
    /// names (TokenRequest, exchange, cache).
    pub fn with_kubeconfig(server: &str, kubeconfig: &Path) -> Plugin {
        Plugin {
            home: tempfile::tempdir().unwrap(),
            server: server.to_owned(),
            token_file: None,
            kubeconfig: Some(kubeconfig.to_owned()),
        }
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.home.path().join(".kube").join("hsm-cache")
    }

    /// `kubectl-hsm --server URL [--token-file F] ARGS…` with a clean environment.
    pub fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = self.bare(args);
        cmd.arg("--server").arg(&self.server);
        if let Some(file) = &self.token_file {
            cmd.arg("--token-file").arg(file);
        }
        cmd
    }

    /// `kubectl-hsm ARGS…` with the test's home and kubeconfig, and nothing from the
    /// caller's environment that would change where it connects.
    pub fn bare(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("kubectl-hsm").unwrap();
        cmd.env("HOME", self.home.path())
            .env_remove("HSM_CACHE_DIR")
            .env_remove("HSM_SERVER")
            .env_remove("HSM_TOKEN_FILE")
            .env_remove("HSM_OPERATOR_NAMESPACE")
            .env_remove("KUBECTL_HSM_LOG")
            .env(
                "KUBECONFIG",
                self.kubeconfig
                    .clone()
                    .unwrap_or_else(|| self.home.path().join("no-kubeconfig")),
            )
            .timeout(std::time::Duration::from_secs(60))
            .args(args);
        cmd
    }
}

/// The output of a finished command: status code, stdout, stderr.
pub struct Ran {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `cmd` (stdin: `input`).
pub fn run(mut cmd: assert_cmd::Command, input: &str) -> Ran {
    let out = cmd.write_stdin(input.as_bytes().to_vec()).output().unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Ran {
    /// Asserts the exit code, showing the output when it differs.
    pub fn code(self, code: i32) -> Ran {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts a failure is reported as one line.
    pub fn one_line_error(self) -> Ran {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr: {}", self.stderr);
        assert!(
            lines[0].starts_with("kubectl-hsm: error: "),
            "{}",
            self.stderr
        );
        self
    }

    /// Asserts `text` appears nowhere in the output.
    pub fn never_shows(self, text: &str) -> Ran {
        assert!(
            !self.stdout.contains(text) && !self.stderr.contains(text),
            "{text:?} shown:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}
