//! `cargo xtask demo`: the product doing its job on this machine. A SoftHSM2 token stands in
//! for a USB Pico HSM; the project's API emulator stands in for the cluster's API server; the
//! pod runner plays kubelet for one node. The manager then does everything itself: it runs
//! discovery as a DaemonSet, aggregates the report into the HSMPool, runs an agent for the
//! device, and keeps a Kubernetes Secret equal to what the HSM holds.

mod processes;

use anyhow::{Context, Result, bail};
use processes::Service;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const TOKEN_LABEL: &str = "hsm-demo";
const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const OPERATOR_NS: &str = "hsm-system";
const OPERATOR_NAME: &str = "hsm-demo";
const APPS_NS: &str = "demo";
const DEVICE: &str = "pico-hsm";
const SECRET: &str = "demo-database";
const NODE: &str = "demo-node";
/// The serial of the Pico HSM in the fixture sysfs tree discovery reads.
const SERIAL: &str = "DC6A33145E23A42A";
/// What the demo builds and runs.
const BINARIES: [&str; 7] = [
    "hsmctl",
    "kubectl-hsm",
    "api-emulator",
    "hsm-operator",
    "hsm-agent",
    "hsm-discovery",
    "pod-runner",
];

/// Where the demo keeps its files, all under `.dev/`.
struct Dirs {
    dev: PathBuf,
    softhsm: PathBuf,
    logs: PathBuf,
}

impl Dirs {
    fn new(root: &Path) -> Result<Dirs> {
        let dev = root.join(".dev");
        let dirs = Dirs {
            softhsm: dev.join("softhsm"),
            logs: dev.join("logs"),
            dev,
        };
        std::fs::create_dir_all(dirs.softhsm.join("tokens"))?;
        Ok(dirs)
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dev.join("kubeconfig")
    }

    fn softhsm_conf(&self) -> PathBuf {
        self.softhsm.join("softhsm2.conf")
    }
}

/// The demo; with `keep`, it runs until Ctrl-C.
pub fn run(root: &Path, keep: bool) -> Result<()> {
    crate::deps::ensure()?;
    let dirs = Dirs::new(root)?;
    step("Building the operator's programs (the first run takes several minutes)");
    let built = delivery::cargo::build(root, delivery::cargo::Profile::TestSuite, &BINARIES)
        .context("building the demo's programs")?;
    let bin = |name: &str| -> Result<PathBuf> {
        built
            .get(name)
            .cloned()
            .with_context(|| format!("the build made no {name} binary"))
    };

    step("A SoftHSM2 token stands in for a USB Pico HSM");
    let token = Token::prepare(&dirs, &bin("hsmctl")?)?;
    let password = random_hex(12)?;
    token.hsmctl(&[
        "put",
        SECRET,
        "username=app",
        &format!("password={password}"),
        "--description",
        "written by cargo xtask demo",
    ])?;
    say(&format!(
        "wrote secret {SECRET} (keys username, password) to token {TOKEN_LABEL:?} with hsmctl"
    ));

    step("Starting a Kubernetes API server (the project's emulator) and a node");
    let fixture = prepare_node(root, &dirs)?;
    let mut services = Vec::new();
    let _ = std::fs::remove_file(dirs.kubeconfig());
    services.push(Service::start(
        "api-emulator",
        &bin("api-emulator")?,
        &[
            "serve".into(),
            "--kubeconfig".into(),
            path(&dirs.kubeconfig()),
            "--crds".into(),
            path(&root.join("deploy/crds")),
        ],
        &[],
        &dirs.logs,
    )?);
    wait_for("the API server", Duration::from_secs(30), || {
        Ok(dirs.kubeconfig().exists() && kubectl(&dirs, &["get", "namespaces"]).is_ok())
    })?;
    say(&format!(
        "kubeconfig: {} (try: KUBECONFIG={} kubectl get ns)",
        dirs.kubeconfig().display(),
        dirs.kubeconfig().display()
    ));
    apply(&dirs, &cluster_objects(&token.pin()?))?;

    let ports = Ports::pick()?;
    let kubeconfig_env = ("KUBECONFIG", path(&dirs.kubeconfig()));
    services.push(Service::start(
        "hsm-operator",
        &bin("hsm-operator")?,
        &[
            "--mode=manager".into(),
            format!("--namespace={OPERATOR_NS}"),
            format!("--operator-name={OPERATOR_NAME}"),
            "--agent-image=hsm-agent".into(),
            "--discovery-image=hsm-discovery".into(),
            format!("--metrics-bind-address=127.0.0.1:{}", ports.metrics),
            format!("--health-probe-bind-address=127.0.0.1:{}", ports.probes),
            format!("--api-port={}", ports.api),
        ],
        std::slice::from_ref(&kubeconfig_env),
        &dirs.logs,
    )?);
    services.push(Service::start(
        "pod-runner",
        &bin("pod-runner")?,
        &[
            format!("--node-name={NODE}"),
            format!("--image=hsm-agent={}", path(&bin("hsm-agent")?)),
            format!("--image=hsm-discovery={}", path(&bin("hsm-discovery")?)),
            format!("--host-path=/sys={}", path(&fixture.sys)),
            format!("--host-path=/run/udev={}", path(&fixture.udev)),
            format!(
                "--host-path=/var/lib/kubelet/device-plugins={}",
                path(&fixture.device_plugins)
            ),
            format!(
                "--host-path=/var/lib/kubelet/plugins_registry={}",
                path(&fixture.plugins_registry)
            ),
            format!("--pod-env=KUBECONFIG={}", path(&dirs.kubeconfig())),
            format!("--pod-env=SOFTHSM2_CONF={}", path(&dirs.softhsm_conf())),
            format!("--state-dir={}", path(&dirs.dev.join("pods"))),
        ],
        &[kubeconfig_env],
        &dirs.logs,
    )?);
    say(&format!(
        "the manager (hsm-operator --mode=manager) and a pod runner playing kubelet for node \
         {NODE:?}; logs in {}",
        dirs.logs.display()
    ));

    step("Applying an HSMDevice: the manager takes it from here");
    apply(&dirs, &hsm_device())?;
    show_yaml(&hsm_device());
    let agent = format!("hsm-agent-{DEVICE}-{}", SERIAL.to_lowercase());
    let mut check = || -> Result<()> {
        for service in services.iter_mut() {
            service.check()?;
        }
        Ok(())
    };
    wait_for(
        "discovery to report the device (HSMPool phase Ready)",
        Duration::from_secs(120),
        || {
            check()?;
            Ok(jsonpath(
                &dirs,
                OPERATOR_NS,
                &format!("hsmpool/{DEVICE}-pool"),
                "{.status.phase}",
            ) == "Ready")
        },
    )?;
    wait_for(
        &format!("the agent {agent} to be Ready"),
        Duration::from_secs(120),
        || {
            check()?;
            let ready = kubectl(
                &dirs,
                &[
                    "get",
                    "pods",
                    "-n",
                    OPERATOR_NS,
                    "-l",
                    &format!("app={agent}"),
                    "-o",
                    "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
                ],
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("True"))
            .unwrap_or(false);
            Ok(ready)
        },
    )?;
    show(
        &dirs,
        &[
            "get",
            "hsmdevice,hsmpool,daemonset,deployment,pods",
            "-n",
            OPERATOR_NS,
        ],
    )?;

    step("Applying an HSMSecret: its Kubernetes Secret appears");
    apply(&dirs, &hsm_secret())?;
    show_yaml(&hsm_secret());
    wait_for("the Secret", Duration::from_secs(30), || {
        Ok(secret_value(&dirs, "password") == password)
    })?;
    show(
        &dirs,
        &[
            "get",
            "secret",
            SECRET,
            "-n",
            APPS_NS,
            "-o",
            "jsonpath={.data.password}",
        ],
    )?;
    say(&format!(
        "decoded, that is the password written to the token ({} characters)",
        password.len()
    ));

    step("Changing the secret on the HSM, through the manager's REST API");
    let new_password = random_hex(12)?;
    let token = kubectl(
        &dirs,
        &[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.users[0].user.token}",
        ],
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())?;
    let url = format!("http://127.0.0.1:{}/api/v1/hsm/secrets/{SECRET}", ports.api);
    let body = format!(r#"{{"data":{{"username":"app","password":"{new_password}"}}}}"#);
    println!("$ curl -X PUT -H 'Authorization: Bearer $TOKEN' {url} -d '{{\"data\": {{...}}}}'");
    let started = Instant::now();
    let answer = Command::new("curl")
        .args(["-sS", "-X", "PUT", "-H", "Content-Type: application/json"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .args(["--data-binary", &body, "-w", "\n%{http_code}", &url])
        .output()
        .context("cannot run curl")?;
    let answer = String::from_utf8_lossy(&answer.stdout).into_owned();
    say(answer.trim());
    if !answer.trim_end().ends_with("201") && !answer.trim_end().ends_with("200") {
        bail!("the REST API did not accept the write");
    }
    wait_for("the Secret to follow", Duration::from_secs(10), || {
        Ok(secret_value(&dirs, "password") == new_password)
    })?;
    say(&format!(
        "the Secret followed the HSM {} ms after the write was sent",
        started.elapsed().as_millis()
    ));

    step("The kubectl plugin, against the same manager");
    let token_file = dirs.dev.join("api-token");
    write_private(&token_file, &token)?;
    let plugin = bin("kubectl-hsm")?;
    let server = format!("http://127.0.0.1:{}", ports.api);
    let plugin_args = |args: &[&str]| -> Vec<String> {
        let mut all = vec![
            "--server".to_owned(),
            server.clone(),
            "--token-file".to_owned(),
            path(&token_file),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    };
    for args in [&["list"][..], &["get", SECRET]] {
        println!(
            "$ kubectl-hsm --server {server} --token-file .dev/api-token {}",
            args.join(" ")
        );
        let output = Command::new(&plugin)
            .args(plugin_args(args))
            .env("HOME", &dirs.dev)
            .output()
            .context("cannot run kubectl-hsm")?;
        if !output.status.success() {
            bail!(
                "kubectl-hsm {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        println!("{}", String::from_utf8_lossy(&output.stdout).trim_end());
    }

    step("What you can do now");
    println!(
        "  export KUBECONFIG={kubeconfig}\n  \
         kubectl get hsmsecrets -A; kubectl get hsmpools -n {OPERATOR_NS}\n  \
         kubectl get secret {SECRET} -n {APPS_NS} -o yaml\n  \
         curl -H \"Authorization: Bearer $(cat {token})\" {server}/api/v1/hsm/secrets\n  \
         {plugin} --server {server} --token-file {token} create my-secret --from-literal key=value\n  \
         logs: {logs}",
        kubeconfig = dirs.kubeconfig().display(),
        token = token_file.display(),
        plugin = plugin.display(),
        logs = dirs.logs.display()
    );
    if keep {
        println!("\nEverything keeps running until Ctrl-C.");
        loop {
            std::thread::sleep(Duration::from_secs(1));
            check()?;
        }
    }
    println!("\nStopping (run `cargo xtask demo --keep` to keep it running).");
    drop(services);
    Ok(())
}

/// Ports of the manager's listeners, free now.
struct Ports {
    metrics: u16,
    probes: u16,
    api: u16,
}

impl Ports {
    fn pick() -> Result<Ports> {
        let free = || -> Result<(std::net::TcpListener, u16)> {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let port = listener.local_addr()?.port();
            Ok((listener, port))
        };
        // Held together so the three differ, released before the manager binds them.
        let (a, b, c) = (free()?, free()?, free()?);
        Ok(Ports {
            metrics: a.1,
            probes: b.1,
            api: c.1,
        })
    }
}

/// The node's host paths: a sysfs tree showing a Pico HSM, and empty kubelet directories.
struct NodeFixture {
    sys: PathBuf,
    udev: PathBuf,
    device_plugins: PathBuf,
    plugins_registry: PathBuf,
}

fn prepare_node(root: &Path, dirs: &Dirs) -> Result<NodeFixture> {
    let node = dirs.dev.join("node");
    let _ = std::fs::remove_dir_all(&node);
    let fixture = NodeFixture {
        sys: node.join("sys"),
        udev: node.join("run-udev"),
        device_plugins: node.join("device-plugins"),
        plugins_registry: node.join("plugins_registry"),
    };
    copy_tree(
        &root.join("crates/hsm-discovery/tests/fixtures/sysfs"),
        &fixture.sys,
    )?;
    for dir in [
        &fixture.udev,
        &fixture.device_plugins,
        &fixture.plugins_registry,
    ] {
        std::fs::create_dir_all(dir)?;
    }
    Ok(fixture)
}

/// Copies a tree, keeping symlinks (sysfs's links are relative and stay inside it).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The demo's SoftHSM2 token, made once and reused.
struct Token<'a> {
    dirs: &'a Dirs,
    hsmctl: PathBuf,
}

impl<'a> Token<'a> {
    fn prepare(dirs: &'a Dirs, hsmctl: &Path) -> Result<Token<'a>> {
        let tokens = dirs.softhsm.join("tokens");
        std::fs::write(
            dirs.softhsm_conf(),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )?;
        let token = Token {
            dirs,
            hsmctl: hsmctl.to_owned(),
        };
        if std::fs::read_dir(&tokens)?.next().is_none() {
            write_private(&dirs.softhsm.join("pin"), &random_hex(4)?)?;
            write_private(&dirs.softhsm.join("so-pin"), &random_hex(8)?)?;
            let so_pin = path(&dirs.softhsm.join("so-pin"));
            token.hsmctl(&[
                "init-token",
                "--label",
                TOKEN_LABEL,
                "--so-pin-file",
                &so_pin,
            ])?;
            say(&format!(
                "created token {TOKEN_LABEL:?} in {}",
                tokens.display()
            ));
        } else {
            say(&format!(
                "using token {TOKEN_LABEL:?} in {}",
                tokens.display()
            ));
        }
        Ok(token)
    }

    fn pin(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.dirs.softhsm.join("pin"))?
            .trim()
            .to_owned())
    }

    fn hsmctl(&self, args: &[&str]) -> Result<Output> {
        let output = Command::new(&self.hsmctl)
            .args(["--module", SOFTHSM2_MODULE, "--token-label", TOKEN_LABEL])
            .arg("--pin-file")
            .arg(self.dirs.softhsm.join("pin"))
            .args(args)
            .env("SOFTHSM2_CONF", self.dirs.softhsm_conf())
            .env_remove("HSM_PIN")
            .output()
            .context("cannot run hsmctl")?;
        if !output.status.success() {
            bail!(
                "hsmctl {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(output)
    }
}

/// The namespaces, the PIN Secret, and the ServiceAccount the manager gives discovery and
/// agent pods (the API server refuses pods of a ServiceAccount that does not exist).
fn cluster_objects(pin: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {OPERATOR_NS}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {APPS_NS}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: hsm-secrets-operator-controller-manager\n  namespace: {OPERATOR_NS}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: {DEVICE}-pin\n  namespace: {OPERATOR_NS}\n\
         stringData:\n  pin: \"{pin}\"\n"
    )
}

fn hsm_device() -> String {
    format!(
        "apiVersion: hsm.j5t.io/v1alpha1\nkind: HSMDevice\nmetadata:\n  name: {DEVICE}\n  namespace: {OPERATOR_NS}\n\
         spec:\n  deviceType: PicoHSM\n  discovery:\n    usb:\n      - vendorId: \"2e8a\"\n        productId: \"10fd\"\n\
         \x20 pkcs11:\n    libraryPath: {SOFTHSM2_MODULE}\n    tokenLabel: {TOKEN_LABEL}\n\
         \x20   pinSecret:\n      name: {DEVICE}-pin\n      key: pin\n"
    )
}

fn hsm_secret() -> String {
    format!(
        "apiVersion: hsm.j5t.io/v1alpha1\nkind: HSMSecret\nmetadata:\n  name: {SECRET}\n  namespace: {APPS_NS}\n\
         spec:\n  parentRef:\n    name: {OPERATOR_NAME}\n    namespace: {OPERATOR_NS}\n"
    )
}

fn kubectl(dirs: &Dirs, args: &[&str]) -> Result<Output> {
    let output = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", dirs.kubeconfig())
        .output()
        .context("cannot run kubectl")?;
    if !output.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

fn apply(dirs: &Dirs, yaml: &str) -> Result<()> {
    let mut child = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .env("KUBECONFIG", dirs.kubeconfig())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run kubectl")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(yaml.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    print!("{}", String::from_utf8_lossy(&output.stdout));
    Ok(())
}

/// Runs and prints a kubectl command the reader can repeat.
fn show(dirs: &Dirs, args: &[&str]) -> Result<()> {
    println!("$ kubectl {}", args.join(" "));
    let output = kubectl(dirs, args)?;
    println!("{}", String::from_utf8_lossy(&output.stdout).trim_end());
    Ok(())
}

fn show_yaml(yaml: &str) {
    for line in yaml.lines() {
        println!("    {line}");
    }
}

fn jsonpath(dirs: &Dirs, namespace: &str, object: &str, path: &str) -> String {
    kubectl(
        dirs,
        &[
            "get",
            object,
            "-n",
            namespace,
            "-o",
            &format!("jsonpath={path}"),
        ],
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default()
}

/// One key of the demo's Secret, decoded ("" when absent).
fn secret_value(dirs: &Dirs, key: &str) -> String {
    let encoded = jsonpath(
        dirs,
        APPS_NS,
        &format!("secret/{SECRET}"),
        &format!("{{.data.{key}}}"),
    );
    decode_base64(encoded.trim()).unwrap_or_default()
}

fn decode_base64(text: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = ALPHABET.iter().position(|a| *a == c)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Polls `ready` every 250 ms, printing progress, until it holds or `timeout` passes.
fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let started = Instant::now();
    print!("  waiting for {what} ");
    std::io::stdout().flush()?;
    let mut dots = Instant::now();
    loop {
        if ready()? {
            println!("done ({:.1} s)", started.elapsed().as_secs_f64());
            return Ok(());
        }
        if started.elapsed() > timeout {
            println!("timed out");
            bail!(
                "{what} did not happen within {} s; the logs in .dev/logs and .dev/pods say why",
                timeout.as_secs()
            );
        }
        if dots.elapsed() >= Duration::from_secs(2) {
            print!(".");
            std::io::stdout().flush()?;
            dots = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn step(what: &str) {
    println!("\n== {what}");
}

fn say(what: &str) {
    println!("  {what}");
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
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
