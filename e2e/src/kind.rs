//! The `kind` backend: the commands that make a kind cluster for the run, load the images
//! into it, install `deploy/` and remove the cluster afterwards. Neither `kind` nor a Docker
//! engine exists on the machines this project is built on, so the plan is unit-tested here and
//! run where they exist.

use std::fmt;
use std::path::Path;

/// One command of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl Step {
    fn new(program: &str, args: &[&str]) -> Step {
        Step {
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// The step as a [`std::process::Command`].
    pub fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.args(&self.args);
        command
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.program, self.args.join(" "))
    }
}

/// What a kind run does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Creates the cluster and writes its kubeconfig.
    pub create: Vec<Step>,
    /// Loads the images and installs the manifests.
    pub install: Vec<Step>,
    /// Deletes the cluster (run even when the scenarios fail).
    pub delete: Vec<Step>,
}

/// The plan for cluster `name`, its kubeconfig written to `kubeconfig`, loading `images`
/// (as `cargo xtask images` tags them) and applying the kustomization `overlay`.
pub fn plan(name: &str, kubeconfig: &Path, images: &[&str], overlay: &Path) -> Plan {
    let kubeconfig = kubeconfig.to_string_lossy();
    let overlay = overlay.to_string_lossy();
    let create = vec![Step::new(
        "kind",
        &[
            "create",
            "cluster",
            "--name",
            name,
            "--kubeconfig",
            &kubeconfig,
            "--wait",
            "180s",
        ],
    )];
    let mut install: Vec<Step> = images
        .iter()
        .map(|image| Step::new("kind", &["load", "docker-image", image, "--name", name]))
        .collect();
    install.push(Step::new(
        "kubectl",
        &[
            "--kubeconfig",
            &kubeconfig,
            "apply",
            "--server-side",
            "-k",
            &overlay,
        ],
    ));
    let delete = vec![Step::new("kind", &["delete", "cluster", "--name", name])];
    Plan {
        create,
        install,
        delete,
    }
}

/// Whether this machine can run the kind backend (both programs on `PATH`).
pub fn available() -> bool {
    ["kind", "docker"].iter().all(|program| {
        std::process::Command::new(program)
            .arg("version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_creates_loads_every_image_installs_and_deletes_the_same_cluster() {
        let plan = plan(
            "hsm-e2e",
            Path::new("/tmp/kc"),
            &["localhost/hsm-operator:dev", "localhost/hsm-agent:dev"],
            Path::new("deploy/overlays/e2e"),
        );
        let shown: Vec<String> = plan
            .create
            .iter()
            .chain(&plan.install)
            .chain(&plan.delete)
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "kind create cluster --name hsm-e2e --kubeconfig /tmp/kc --wait 180s",
                "kind load docker-image localhost/hsm-operator:dev --name hsm-e2e",
                "kind load docker-image localhost/hsm-agent:dev --name hsm-e2e",
                "kubectl --kubeconfig /tmp/kc apply --server-side -k deploy/overlays/e2e",
                "kind delete cluster --name hsm-e2e",
            ]
        );
    }

    #[test]
    fn a_step_becomes_the_command_it_shows() {
        let step = Step::new("kind", &["delete", "cluster", "--name", "x"]);
        let command = step.command();
        assert_eq!(command.get_program(), "kind");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(args, ["delete", "cluster", "--name", "x"]);
    }
}
