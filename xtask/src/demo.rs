//! `cargo xtask demo`: the main job, locally. A SoftHSM2 token under `.dev/` stands in for
//! the HSM; `hsmctl` writes a secret to it, lists the token and reads the secret back.

use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

const TOKEN_LABEL: &str = "hsm-demo";
const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Runs `hsmctl` with the demo token's module, label and PIN file.
fn hsmctl(root: &Path, dev: &Path, args: &[&str]) -> Result<Output> {
    let mut command = Command::new("cargo");
    command
        .args(["run", "--quiet", "-p", "hsmctl", "--"])
        .args(["--module", SOFTHSM2_MODULE, "--token-label", TOKEN_LABEL])
        .arg("--pin-file")
        .arg(dev.join("pin"))
        .args(args)
        .env("SOFTHSM2_CONF", dev.join("softhsm2.conf"))
        .env_remove("HSM_PIN")
        .current_dir(root);
    let output = command.output().context("cannot run hsmctl")?;
    if !output.status.success() {
        bail!(
            "hsmctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// The demo.
pub fn run(root: &Path) -> Result<()> {
    crate::deps::ensure()?;
    let dev = root.join(".dev").join("softhsm");
    let tokens = dev.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    std::fs::write(
        dev.join("softhsm2.conf"),
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )?;
    crate::run(root, "cargo", &["build", "--quiet", "-p", "hsmctl"])?;

    let fresh = std::fs::read_dir(&tokens)?.next().is_none();
    if fresh {
        write_private(&dev.join("pin"), &random_hex(4)?)?;
        write_private(&dev.join("so-pin"), &random_hex(8)?)?;
        let so_pin = dev.join("so-pin");
        hsmctl(
            root,
            &dev,
            &[
                "init-token",
                "--label",
                TOKEN_LABEL,
                "--so-pin-file",
                so_pin.to_str().context("path is UTF-8")?,
            ],
        )?;
        println!(
            "created SoftHSM2 token {TOKEN_LABEL:?} in {}",
            tokens.display()
        );
    } else {
        println!(
            "using the SoftHSM2 token {TOKEN_LABEL:?} in {}",
            tokens.display()
        );
    }

    let password = random_hex(12)?;
    let user = "username=app".to_owned();
    let pass = format!("password={password}");
    hsmctl(
        root,
        &dev,
        &[
            "put",
            "demo/database",
            &user,
            &pass,
            "--description",
            "created by cargo xtask demo",
        ],
    )?;
    println!("wrote secret demo/database (keys username, password) to the token");

    let list = hsmctl(root, &dev, &["list"])?;
    println!(
        "\n$ hsmctl list\n{}",
        String::from_utf8_lossy(&list.stdout).trim_end()
    );
    let get = hsmctl(root, &dev, &["get", "demo/database", "--output", "json"])?;
    let shown = String::from_utf8_lossy(&get.stdout);
    println!(
        "\n$ hsmctl get demo/database --output json\n{}",
        shown.trim_end()
    );
    if !shown.contains(&password) {
        bail!("the secret read back is not the one written");
    }
    println!(
        "\nRead back what was written. The token lives in .dev/softhsm (PIN in .dev/softhsm/pin);\n\
         try: SOFTHSM2_CONF=.dev/softhsm/softhsm2.conf cargo run -q -p hsmctl -- \\\n  \
         --token-label {TOKEN_LABEL} --pin-file .dev/softhsm/pin info"
    );
    Ok(())
}
