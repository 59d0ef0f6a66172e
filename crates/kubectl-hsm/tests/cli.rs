//! kubectl-hsm as a user runs it: the real binary, as a process, against a wiremock server
//! speaking the manager's REST API (inventory §4), for each command's happy path and its
//! errors; the exit codes and one-line errors; and that no value or PIN is shown unless
//! asked for.

mod support;

use base64::Engine;
use serde_json::{Value, json};
use std::time::Duration;
use support::{Plugin, run};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "test-token";

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn ok(status: u16, data: Value) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"success": true, "message": "ok", "data": data}))
}

fn failure(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"success": false, "error": {"code": code, "message": message}}))
}

async fn manager() -> (MockServer, Plugin) {
    let server = MockServer::start().await;
    let plugin = Plugin::new(&server.uri(), TOKEN);
    (server, plugin)
}

/// `GET /secrets/NAME` answering `data` (plain values, sent base64).
async fn secret(server: &MockServer, name: &str, data: &[(&str, &str)]) {
    let encoded: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(b64(v))))
        .collect();
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/hsm/secrets/{name}")))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ok(
            200,
            json!({"path": name, "data": encoded, "checksum": "sha256:abcd", "deviceCount": 2}),
        ))
        .mount(server)
        .await;
}

async fn no_secret(server: &MockServer, name: &str) {
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/hsm/secrets/{name}")))
        .respond_with(failure(404, "secret_not_found", "secret not found"))
        .mount(server)
        .await;
}

/// `POST /secrets/NAME` expecting exactly `data`, once.
async fn expect_write(server: &MockServer, name: &str, data: Value) {
    let keys = data.as_object().unwrap().len();
    Mock::given(method("POST"))
        .and(path(format!("/api/v1/hsm/secrets/{name}")))
        .and(body_json(json!({ "data": data })))
        .respond_with(ok(201, json!({"path": name, "keys": keys})))
        .expect(1)
        .mount(server)
        .await;
}

async fn no_write(server: &MockServer) {
    Mock::given(method("POST"))
        .respond_with(ok(201, json!({})))
        .expect(0)
        .mount(server)
        .await;
}

// ---- create / update -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn create_a_new_secret_from_literals() {
    let (server, plugin) = manager().await;
    no_secret(&server, "db").await;
    expect_write(
        &server,
        "db",
        json!({"user": "admin", "password": "s3cr3t=value"}),
    )
    .await;
    let ran = run(
        plugin.cmd(&[
            "create",
            "db",
            "--from-literal",
            "user=admin",
            "--from-literal",
            "password=s3cr3t=value",
        ]),
        "",
    )
    .code(0)
    .never_shows("s3cr3t");
    assert!(
        ran.stdout.contains("Secret db created (2 keys)"),
        "{}",
        ran.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_merges_an_env_file_into_the_existing_secret() {
    let (server, plugin) = manager().await;
    secret(
        &server,
        "db",
        &[("user", "admin"), ("password", "old-pass")],
    )
    .await;
    expect_write(
        &server,
        "db",
        json!({"user": "admin", "password": "new-pass", "host": "db.local"}),
    )
    .await;
    let env = plugin.home.path().join("db.env");
    std::fs::write(&env, "# creds\npassword=\"new-pass\"\nhost=db.local\n").unwrap();
    let ran = run(
        plugin.cmd(&["create", "db", "--from-file", env.to_str().unwrap()]),
        "",
    )
    .code(0)
    .never_shows("new-pass")
    .never_shows("old-pass");
    assert!(
        ran.stdout.contains("Secret db updated (3 keys)"),
        "{}",
        ran.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_replace_from_json_drops_other_keys() {
    let (server, plugin) = manager().await;
    secret(&server, "api", &[("old", "1"), ("key", "a")]).await;
    expect_write(&server, "api", json!({"key": "b", "port": "8443"})).await;
    let file = plugin.home.path().join("api.json");
    std::fs::write(&file, r#"{"key": "b", "port": 8443}"#).unwrap();
    let ran = run(
        plugin.cmd(&[
            "create",
            "api",
            "--from-file",
            file.to_str().unwrap(),
            "--replace",
            "-o",
            "json",
        ]),
        "",
    )
    .code(0);
    let doc: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(doc["operation"], "replaced");
    assert_eq!(doc["changes"]["removed"], json!(["old"]));
    assert_eq!(doc["changes"]["changed"], json!(["key"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_with_diff_shows_keys_and_writes_nothing() {
    let (server, plugin) = manager().await;
    secret(
        &server,
        "db",
        &[("user", "admin"), ("password", "old-pass")],
    )
    .await;
    no_write(&server).await;
    let ran = run(
        plugin.cmd(&[
            "create",
            "db",
            "--from-literal",
            "password=new-pass",
            "--from-literal",
            "host=h",
            "--replace",
            "--diff",
            "--dry-run",
        ]),
        "",
    )
    .code(0)
    .never_shows("new-pass")
    .never_shows("old-pass")
    .never_shows("admin");
    for line in ["+ host", "~ password", "- user", "nothing was written"] {
        assert!(ran.stdout.contains(line), "{line}: {}", ran.stdout);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_input_from_a_pipe() {
    let (server, plugin) = manager().await;
    no_secret(&server, "tok").await;
    expect_write(&server, "tok", json!({"token": "abc def", "user": "me"})).await;
    run(
        plugin.cmd(&["create", "tok", "--interactive"]),
        "token\nabc def\nuser\nme\n\n",
    )
    .code(0)
    .never_shows("abc def");
}

#[tokio::test(flavor = "multi_thread")]
async fn update_needs_an_existing_secret_and_refuses_replace() {
    let (server, plugin) = manager().await;
    no_secret(&server, "db").await;
    no_write(&server).await;
    let ran = run(plugin.cmd(&["update", "db", "--from-literal", "a=b"]), "")
        .code(7)
        .one_line_error();
    assert!(
        ran.stderr.contains("does not exist: use create"),
        "{}",
        ran.stderr
    );
    run(
        plugin.cmd(&["update", "db", "--from-literal", "a=b", "--replace"]),
        "",
    )
    .code(6)
    .one_line_error();
    run(plugin.cmd(&["create", "db"]), "")
        .code(6)
        .one_line_error();
    run(
        plugin.cmd(&["create", "db", "--from-literal", "a=b", "--interactive"]),
        "",
    )
    .code(6)
    .one_line_error();
    let ran = run(
        plugin.cmd(&["create", "db", "--from-literal", "hunter2"]),
        "",
    )
    .code(6)
    .one_line_error()
    .never_shows("hunter2");
    assert!(ran.stderr.contains("not KEY=VALUE"), "{}", ran.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_write_is_a_400_naming_the_field() {
    let (server, plugin) = manager().await;
    no_secret(&server, "db").await;
    Mock::given(method("POST"))
        .respond_with(failure(
            400,
            "parse_error",
            "data: key \"a b\" is not a valid key",
        ))
        .mount(&server)
        .await;
    let ran = run(plugin.cmd(&["create", "db", "--from-literal", "a b=v"]), "")
        .code(6)
        .one_line_error();
    assert!(ran.stderr.contains("parse_error"), "{}", ran.stderr);
}

// ---- rename-key ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn rename_key_rewrites_the_secret() {
    let (server, plugin) = manager().await;
    secret(&server, "db", &[("user", "admin"), ("pass", "x")]).await;
    expect_write(&server, "db", json!({"user": "admin", "password": "x"})).await;
    run(plugin.cmd(&["rename-key", "db", "pass", "password"]), "").code(0);
    run(plugin.cmd(&["rename-key", "db", "user", "pass"]), "")
        .code(6)
        .one_line_error();
    run(plugin.cmd(&["rename-key", "db", "nope", "other"]), "")
        .code(7)
        .one_line_error();
}

// ---- get -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn get_shows_keys_and_values_only_when_asked() {
    let (server, plugin) = manager().await;
    secret(
        &server,
        "db",
        &[("user", "admin"), ("password", "p4ss\nword")],
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets/db/metadata"))
        .respond_with(ok(
            200,
            json!({"path": "db", "metadata": {"description": "primary", "labels": {"sync.version": "3"}}}),
        ))
        .mount(&server)
        .await;
    let text = run(plugin.cmd(&["get", "db"]), "")
        .code(0)
        .never_shows("p4ss")
        .never_shows("admin");
    for line in [
        "db",
        "password",
        "user",
        "sha256:abcd",
        "primary",
        "sync.version=3",
    ] {
        assert!(text.stdout.contains(line), "{line}: {}", text.stdout);
    }
    let raw = run(plugin.cmd(&["get", "db", "--key", "password"]), "").code(0);
    assert_eq!(raw.stdout, "p4ss\nword");
    let json: Value = serde_json::from_str(
        &run(plugin.cmd(&["get", "db", "-o", "json"]), "")
            .code(0)
            .stdout,
    )
    .unwrap();
    assert_eq!(json["data"]["password"], "p4ss\nword");
    assert_eq!(json["deviceCount"], 2);
    let yaml = run(
        plugin.cmd(&["get", "db", "--key", "user", "-o", "yaml"]),
        "",
    )
    .code(0);
    assert!(yaml.stdout.contains("user: admin"), "{}", yaml.stdout);
    run(plugin.cmd(&["get", "db", "--key", "nope"]), "")
        .code(7)
        .one_line_error();
}

#[tokio::test(flavor = "multi_thread")]
async fn get_of_a_missing_secret_is_7() {
    let (server, plugin) = manager().await;
    no_secret(&server, "gone").await;
    let ran = run(plugin.cmd(&["get", "gone"]), "")
        .code(7)
        .one_line_error();
    assert!(ran.stderr.contains("secret_not_found"), "{}", ran.stderr);
}

// ---- list ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn list_sorts_and_shows_devices() {
    let (server, plugin) = manager().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .respond_with(ok(
            200,
            json!({"secrets": ["zeta", "alpha", "alpha"], "count": 3, "prefix": ""}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/status"))
        .respond_with(ok(
            200,
            json!({"devices": {"DC6A": true, "0F11": false}, "totalDevices": 2}),
        ))
        .mount(&server)
        .await;
    let ran = run(plugin.cmd(&["list", "--show-devices", "-A"]), "").code(0);
    let alpha = ran.stdout.find("alpha").unwrap();
    assert!(alpha < ran.stdout.find("zeta").unwrap(), "{}", ran.stdout);
    assert!(ran.stdout.contains("NAMESPACE") && ran.stdout.contains("Total: 2 secrets"));
    assert!(
        ran.stdout.contains("DC6A") && ran.stdout.contains("0F11"),
        "{}",
        ran.stdout
    );
    let yaml = run(plugin.cmd(&["list", "-o", "yaml"]), "").code(0);
    let doc: Value = serde_yaml::from_str(&yaml.stdout).unwrap();
    assert_eq!(doc["secrets"], json!(["alpha", "zeta"]));
    assert_eq!(doc["count"], 2);
}

// ---- delete ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn delete_asks_first() {
    let (server, plugin) = manager().await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/hsm/secrets/db"))
        .respond_with(ok(
            200,
            json!({"path": "db", "devices": 2, "deviceResults": {"A": {"success": true}, "B": {"success": true}}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    run(plugin.cmd(&["delete", "db"]), "n\n")
        .code(1)
        .one_line_error();
    run(plugin.cmd(&["delete", "db"]), "").code(1);
    let ran = run(plugin.cmd(&["delete", "db"]), "y\n").code(0);
    assert!(ran.stdout.contains("from 2 of 2 devices"), "{}", ran.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_a_key_with_force() {
    let (server, plugin) = manager().await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/hsm/secrets/db/password"))
        .respond_with(ok(
            200,
            json!({"path": "db", "key": "password", "devices": 1,
            "deviceResults": {"A": {"success": true}}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let ran = run(
        plugin.cmd(&["delete", "db", "--key", "password", "--force", "-o", "json"]),
        "",
    )
    .code(0);
    let doc: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(doc["key"], "password");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_delete_reports_each_device_and_exits_8() {
    let (server, plugin) = manager().await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/hsm/secrets/db"))
        .respond_with(ResponseTemplate::new(206).set_body_json(json!({
            "success": true,
            "message": "Secret deleted from 1/2 devices",
            "data": {"path": "db", "devices": 2, "deviceResults": {
                "A": {"success": true},
                "B": {"success": false, "error": "agent unavailable"}}}
        })))
        .mount(&server)
        .await;
    let ran = run(plugin.cmd(&["delete", "db", "--force"]), "")
        .code(8)
        .one_line_error();
    assert!(ran.stdout.contains("from 1 of 2 devices"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("B: failed: agent unavailable"),
        "{}",
        ran.stdout
    );
    assert!(ran.stderr.contains("1/2 devices"), "{}", ran.stderr);
}

// ---- rotate-pin ------------------------------------------------------------------------

const OLD_PIN: &str = "648219";
const NEW_PIN: &str = "902417";

#[tokio::test(flavor = "multi_thread")]
async fn rotate_pin_reads_the_pins_from_stdin_and_never_shows_them() {
    let (server, plugin) = manager().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/hsm/change-pin"))
        .and(body_json(json!({"old_pin": OLD_PIN, "new_pin": NEW_PIN})))
        .respond_with(ok(
            200,
            json!({"success_count": 2, "total_count": 2, "message": "PIN changed"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let ran = run(
        plugin.cmd(&["rotate-pin"]),
        &format!("{OLD_PIN}\n{NEW_PIN}\n"),
    )
    .code(0)
    .never_shows(OLD_PIN)
    .never_shows(NEW_PIN)
    .never_shows(&b64(NEW_PIN));
    assert!(
        ran.stdout.contains("PIN changed on 2 of 2 devices"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("--from-file=pin=/dev/stdin"),
        "{}",
        ran.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_pin_failures() {
    let (server, plugin) = manager().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/hsm/change-pin"))
        .and(|r: &Request| r.body.windows(6).any(|w| w == b"111111"))
        .respond_with(failure(400, "invalid_pin_change", "CKR_PIN_INCORRECT"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/hsm/change-pin"))
        .and(|r: &Request| r.body.windows(6).any(|w| w == b"222222"))
        .respond_with(
            ResponseTemplate::new(206).set_body_json(json!({"success": true,
            "message": "PIN changed on 1/2 devices",
            "data": {"success_count": 1, "total_count": 2, "message": "partial",
                     "errors": ["B: device removed"]}})),
        )
        .mount(&server)
        .await;
    run(plugin.cmd(&["rotate-pin"]), &format!("111111\n{NEW_PIN}\n"))
        .code(5)
        .one_line_error()
        .never_shows("111111")
        .never_shows(NEW_PIN);
    run(plugin.cmd(&["rotate-pin"]), &format!("222222\n{NEW_PIN}\n"))
        .code(8)
        .one_line_error()
        .never_shows("222222");
    run(
        plugin.cmd(&["rotate-pin"]),
        &format!("{OLD_PIN}\n{OLD_PIN}\n"),
    )
    .code(6)
    .one_line_error()
    .never_shows(OLD_PIN);
    run(plugin.cmd(&["rotate-pin"]), "")
        .code(6)
        .one_line_error();
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_pin_dry_run_changes_nothing() {
    let (server, plugin) = manager().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/status"))
        .respond_with(ok(
            200,
            json!({"devices": {"A": true, "B": true}, "totalDevices": 2}),
        ))
        .mount(&server)
        .await;
    no_write(&server).await;
    let ran = run(
        plugin.cmd(&["rotate-pin", "--dry-run"]),
        &format!("{OLD_PIN}\n{NEW_PIN}\n"),
    )
    .code(0)
    .never_shows(NEW_PIN);
    assert!(
        ran.stdout.contains("would be changed on 2 devices"),
        "{}",
        ran.stdout
    );
}

// ---- health, devices, mirror ----------------------------------------------------------

async fn devices(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/status"))
        .respond_with(ok(
            200,
            json!({"devices": {"DC6A": true}, "totalDevices": 1}),
        ))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/info"))
        .respond_with(ok(
            200,
            json!({"deviceInfos": {"DC6A": {"Label": "pico", "Manufacturer": "Pol Henarejos",
            "Model": "PicoHSM", "SerialNumber": "DC6A", "FirmwareVersion": "5.0"}}}),
        ))
        .mount(server)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_healthy_and_degraded() {
    let (server, plugin) = manager().await;
    devices(&server).await;
    Mock::given(method("GET"))
        .and(path("/api/v1/health"))
        .respond_with(ok(
            200,
            json!({"status": "healthy", "hsm_connected": true,
            "replication_enabled": false, "active_nodes": 1, "timestamp": "2026-01-01T00:00:00Z"}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let ran = run(plugin.cmd(&["health"]), "").code(0);
    assert!(
        ran.stdout.contains("healthy") && ran.stdout.contains("pico"),
        "{}",
        ran.stdout
    );
    Mock::given(method("GET"))
        .and(path("/api/v1/health"))
        .respond_with(ok(
            200,
            json!({"status": "degraded", "hsm_connected": false,
            "replication_enabled": false, "active_nodes": 0}),
        ))
        .mount(&server)
        .await;
    let ran = run(plugin.cmd(&["health", "-o", "json"]), "")
        .code(4)
        .one_line_error();
    let doc: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(doc["health"]["status"], "degraded");
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_detailed_reads_go_cased_info() {
    let (server, plugin) = manager().await;
    devices(&server).await;
    let ran = run(plugin.cmd(&["devices", "--detailed"]), "").code(0);
    for cell in ["DEVICE", "DC6A", "yes", "pico", "PicoHSM", "5.0"] {
        assert!(ran.stdout.contains(cell), "{cell}: {}", ran.stdout);
    }
    let json: Value = serde_json::from_str(
        &run(plugin.cmd(&["devices", "-o", "json"]), "")
            .code(0)
            .stdout,
    )
    .unwrap();
    assert_eq!(json["totalDevices"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_sync_and_its_absence() {
    let (server, plugin) = manager().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/hsm/mirror/sync"))
        .and(body_json(json!({"force": true})))
        .respond_with(ok(
            200,
            json!({"triggered": true, "reason": "manual_api_force", "force": true,
            "message": "Mirror synchronization triggered successfully"}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/hsm/mirror/sync"))
        .and(body_json(json!({"force": false})))
        .respond_with(failure(503, "mirror_unavailable", "mirror not running"))
        .mount(&server)
        .await;
    let ran = run(
        plugin.cmd(&["mirror", "sync", "--force", "-o", "table"]),
        "",
    )
    .code(0);
    assert!(
        ran.stdout.contains("triggered successfully"),
        "{}",
        ran.stdout
    );
    run(plugin.cmd(&["mirror", "sync"]), "")
        .code(4)
        .one_line_error();
}

// ---- errors ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn refused_tokens_are_5_with_the_hint() {
    let (server, plugin) = manager().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"success": false, "error": {
            "code": "INVALID_TOKEN", "message": "Invalid or expired token",
            "details": {"hint": "token may have expired, try clearing cache with: kubectl hsm auth clear"}}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/status"))
        .respond_with(failure(403, "FORBIDDEN", "may not get hsmsecrets/status"))
        .mount(&server)
        .await;
    let ran = run(plugin.cmd(&["list"]), "")
        .code(5)
        .one_line_error()
        .never_shows(TOKEN);
    assert!(
        ran.stderr.contains("kubectl hsm auth clear"),
        "{}",
        ran.stderr
    );
    run(plugin.cmd(&["devices"]), "").code(5).one_line_error();
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_timeouts_and_garbage() {
    let (server, plugin) = manager().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .respond_with(failure(500, "list_failed", "boom"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/status"))
        .respond_with(ok(200, json!({})).set_delay(Duration::from_secs(2)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/info"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>"))
        .mount(&server)
        .await;
    run(plugin.cmd(&["list"]), "").code(1).one_line_error();
    let ran = run(plugin.cmd(&["devices", "--timeout", "300ms"]), "")
        .code(3)
        .one_line_error();
    assert!(
        ran.stderr.contains("did not answer within"),
        "{}",
        ran.stderr
    );
    let ran = run(
        plugin.cmd(&["devices", "--detailed", "--timeout", "10s"]),
        "",
    );
    // status answers late but within 10 s; info is garbage.
    let ran = ran.code(1).one_line_error();
    assert!(ran.stderr.contains("malformed"), "{}", ran.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_listening_is_3() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let plugin = Plugin::new(&format!("http://127.0.0.1:{port}"), TOKEN);
    let ran = run(plugin.cmd(&["list"]), "").code(3).one_line_error();
    assert!(
        ran.stderr.contains("cannot reach the manager"),
        "{}",
        ran.stderr
    );
    run(Plugin::new("ftp://x", TOKEN).cmd(&["list"]), "")
        .code(6)
        .one_line_error();
}

// ---- version, completion ---------------------------------------------------------------

#[test]
fn version_and_completion() {
    let plugin = Plugin::new("http://127.0.0.1:1", TOKEN);
    let ran = run(plugin.bare(&["version"]), "").code(0);
    assert_eq!(
        ran.stdout,
        format!("kubectl-hsm {}\n", env!("CARGO_PKG_VERSION"))
    );
    let ran = run(plugin.bare(&["version", "-o", "json"]), "").code(0);
    assert!(ran.stdout.contains("\"version\""));
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let ran = run(plugin.bare(&["completion", shell]), "").code(0);
        assert!(ran.stdout.contains("rotate-pin"), "{shell}");
    }
    run(plugin.bare(&["completion", "tcsh"]), "").code(2);
}
