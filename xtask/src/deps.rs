//! Installs what the project needs on a Debian 12 machine, and only what is missing.

use anyhow::{Context, Result, bail};
use std::process::Command;

/// Debian packages the tests and the demo use: SoftHSM2 (the PKCS#11 token in tests), OpenSC
/// and its tools (the PKCS#11 module of SmartCard-HSM / Pico HSM cards), pcscd with the CCID
/// and vpcd reader drivers (the virtual card), and pcsc-tools for debugging; for the images,
/// Podman with runc and catatonit (the pause process of the pod runner's pods), binutils
/// (`strip`), CA certificates and the PC/SC library; and nix-bin
/// for `nix-instantiate --parse` of the Nix files; curl, with which the demo shows the REST API.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "softhsm2",
    "opensc",
    "pcscd",
    "libccid",
    "libpcsclite1",
    "vsmartcard-vpcd",
    "pcsc-tools",
    "podman",
    "runc",
    "catatonit",
    "binutils",
    "ca-certificates",
    "nix-bin",
    "curl",
];

/// Cargo tools the lints run: the Nix formatter and dead-code finder.
pub const CARGO_TOOLS: &[(&str, &str)] = &[("nixpkgs-fmt", "nixpkgs-fmt"), ("deadnix", "deadnix")];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Installs missing Debian packages (with sudo when not root) and cargo-nextest.
pub fn ensure() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if !missing.is_empty() {
        eprintln!("installing Debian packages: {}", missing.join(" "));
        let apt = |args: &[&str]| -> Result<()> {
            if !apt_get(args)? {
                bail!(
                    "apt-get {} failed; install these packages by hand: {}",
                    args.join(" "),
                    missing.join(" ")
                );
            }
            Ok(())
        };
        apt(&["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        apt(&args)?;
    }
    ensure_kubectl()?;
    crate::podman_conf::ensure()?;
    let nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !nextest {
        eprintln!("installing cargo-nextest");
        crate::run(
            std::path::Path::new("."),
            "cargo",
            &["install", "--locked", "cargo-nextest"],
        )?;
    }
    for (crate_name, program) in CARGO_TOOLS {
        // nixpkgs-fmt --version exits 1 after printing it: being there is what counts.
        let present = Command::new(program).arg("--version").output().is_ok();
        if !present {
            eprintln!("installing {crate_name}");
            crate::run(
                std::path::Path::new("."),
                "cargo",
                &["install", "--locked", crate_name],
            )?;
        }
    }
    Ok(())
}

/// Runs `apt-get` (through sudo when not root), non-interactively; true when it succeeded.
fn apt_get(args: &[&str]) -> Result<bool> {
    let (program, prefix): (&str, &[&str]) = if is_root() {
        ("apt-get", &[])
    } else {
        ("sudo", &["apt-get"])
    };
    let status = Command::new(program)
        .args(prefix)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    Ok(status.success())
}

fn has_kubectl() -> bool {
    Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// kubectl, for the tests that run it against the API emulator. Debian 12 does not package
/// it: installed from whatever apt source offers `kubectl` (the Kubernetes project's
/// repository, as on the build machines), else the caller is told how to get it.
fn ensure_kubectl() -> Result<()> {
    if has_kubectl() {
        return Ok(());
    }
    eprintln!("kubectl is missing; trying apt-get install kubectl");
    // No apt source may offer it: the check below says what to do then.
    let _ = apt_get(&["install", "-y", "-qq", "kubectl"]);
    if !has_kubectl() {
        bail!(
            "kubectl is needed (the API emulator's tests run it) and Debian 12 does not package \
             it: add the Kubernetes apt repository (https://pkgs.k8s.io, see \
             https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/) and run \
             `apt-get install kubectl`, or put a kubectl binary on PATH"
        );
    }
    Ok(())
}
