//! The `billstack` binary, black box: offline commands, `policy check/test/export`, the store
//! lock, and `serve` answering the decision on port 0.

mod common;

use billstack_keystore::storage::*;
use common::api::forward_auth;
use common::{CREATED_KEY_FIELDS, Server, agent, cmd, create_user, json, run};

/// A route the default policy allows every key of team_a's project.
const CUSTOMERS: &str = "/api/billstack/teams/team_a/projects/proj_a/customers";

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    common::team_with_project()
}

#[test]
fn teams_projects_users_and_keys_from_the_command_line() {
    let (_dir, data) = setup();
    let team = json(&data, &["team", "create", "--name", "Other"]);
    assert!(team["id"].as_str().expect("id").starts_with("team_"));
    assert_eq!(team["name"], "Other");
    let project = json(
        &data,
        &[
            "--data-dir",
            data.to_str().expect("utf8"),
            "project",
            "create",
            "--team",
            "team_a",
            "--name",
            "API",
        ],
    );
    assert_eq!(project["teamId"], "team_a");
    assert!(project["id"].as_str().expect("id").starts_with("proj_"));

    let out = create_user(
        &data,
        "Owner@Example.com",
        "a long enough password",
        "team_a",
        "owner",
    );
    let user: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(user["email"], "owner@example.com");
    assert!(user["id"].as_str().expect("id").starts_with("user_"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("password"));

    let created = json(
        &data,
        &[
            "key",
            "create",
            "--team",
            "team_a",
            "--name",
            "ci",
            "--project",
            "proj_a",
            "--scope",
            "customers:read",
            "--scope",
            "products:write",
            "--expires-at",
            "2099-01-01T00:00:00Z",
        ],
    );
    let raw = created["rawKey"].as_str().expect("rawKey").to_string();
    assert_eq!(billstack_keystore::apikey::check_format(&raw), Ok(()));
    let key = &created["key"];
    assert_eq!(key["prefix"], &raw[..7]);
    assert_eq!(key["projectId"], "proj_a");
    assert_eq!(
        key["scopes"],
        serde_json::json!(["customers:read", "products:write"])
    );
    assert_eq!(key["expiresAt"], "2099-01-01T00:00:00Z");
    let fields: Vec<&String> = key.as_object().expect("object").keys().collect();
    assert_eq!(fields, CREATED_KEY_FIELDS);
    assert_eq!(key["createdBy"], serde_json::json!({"cli": true}));

    let listed = json(&data, &["key", "list", "--team", "team_a"]);
    let keys = listed["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["id"], key["id"]);
    assert!(keys[0].get("lastUsedAt").is_some());
    let text = listed.to_string();
    assert!(
        !text.contains(&raw[7..]),
        "the list never shows the raw key"
    );
    assert!(!text.contains("hash"), "nor its hash");

    let key_id = key["id"].as_str().expect("id");
    let revoked = json(&data, &["key", "revoke", "--team", "team_a", key_id]);
    assert_eq!(revoked["id"], key_id);
    assert!(
        json(&data, &["key", "list", "--team", "team_a"])["keys"]
            .as_array()
            .expect("keys")
            .is_empty()
    );
}

#[test]
fn bad_input_fails_clearly_and_changes_nothing() {
    let (_dir, data) = setup();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "key",
                "create",
                "--team",
                "team_a",
                "--name",
                "x",
                "--scope",
                "invoices:read",
            ],
            "invoices:read",
        ),
        (
            &[
                "key",
                "create",
                "--team",
                "team_a",
                "--name",
                "x",
                "--expires-at",
                "tomorrow",
            ],
            "RFC 3339",
        ),
        (
            &[
                "key",
                "create",
                "--team",
                "team_a",
                "--name",
                "x",
                "--expires-at",
                "2001-01-01T00:00:00Z",
            ],
            "future",
        ),
        (
            &["key", "create", "--team", "team_a", "--name", " "],
            "name",
        ),
        (
            &[
                "key",
                "create",
                "--team",
                "team_a",
                "--name",
                "x",
                "--project",
                "proj_nope",
            ],
            "proj_nope",
        ),
        (
            &["key", "create", "--team", "team_nope", "--name", "x"],
            "team_nope",
        ),
        (
            &["key", "revoke", "--team", "team_a", "key_nope"],
            "key_nope",
        ),
        (
            &["team", "create", "--name", "Dup", "--id", "team_a"],
            "already exists",
        ),
        (&["team", "create", "--name", "Bad", "--id", "../etc"], "id"),
    ];
    for (args, needle) in cases {
        let mut c = cmd(&data);
        c.args(*args);
        let out = run(c, "");
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr {stderr:?} should mention {needle:?}"
        );
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed to stdout on failure"
        );
    }
    let mut c = cmd(&data);
    c.args([
        "user",
        "create",
        "--email",
        "a@b.co",
        "--team",
        "team_a",
        "--password-stdin",
    ]);
    let out = run(c, "");
    assert!(!out.status.success(), "an empty password is refused");
    assert!(
        json(&data, &["key", "list", "--team", "team_a"])["keys"]
            .as_array()
            .expect("keys")
            .is_empty()
    );
}

#[test]
fn offline_commands_refuse_a_store_held_by_another_process() {
    if common::on_postgres() {
        eprintln!(
            "sled only: sled's lock on its data directory (PostgreSQL takes any number of writers)"
        );
        return;
    }
    let (_dir, data) = setup();
    let held = billstack_keystore::Store::open(&data).expect("hold the store");
    let mut c = cmd(&data);
    c.args(["team", "create", "--name", "Sneaky", "--id", "team_sneaky"]);
    let out = run(c, "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another billstack process"),
        "{stderr}"
    );
    drop(held);
    let store = billstack_keystore::Store::open(&data).expect("reopen");
    assert!(
        store.get_team("team_sneaky").expect("get").is_none(),
        "nothing changed"
    );
}

/// Runs `billstack policy test PLUGIN CASES...`; returns whether it succeeded, stdout, stderr.
fn policy_test(dir: &std::path::Path, plugin: &str, cases: &[&str]) -> (bool, String, String) {
    let mut c = cmd(&dir.join("data"));
    c.args(["policy", "test", plugin]).args(cases);
    let out = run(c, "");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `policy diff`: the same plugin twice differs nowhere; the read-only example against the
/// default differs exactly on the writes (every route of the default table is probed when no
/// cases are given), and with a cases file only its cases are compared.
#[test]
fn policy_diff_prints_every_request_decided_differently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let diff = |args: &[&str]| -> String {
        let mut c = cmd(&dir.path().join("data"));
        c.args(["policy", "diff"]).args(args);
        let out = run(c, "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let same = diff(&["default", "default"]);
    let last = same.lines().last().expect("a summary");
    assert!(last.ends_with(" same, 0 different"), "{same}");
    assert_eq!(same.lines().count(), 1, "{same}");

    let read_only = billstack_test_artifacts::EXAMPLE_READ_ONLY;
    let out = diff(&["default", read_only]);
    let lines: Vec<&str> = out.lines().collect();
    let (summary, changes) = lines.split_last().expect("a summary");
    assert!(!changes.is_empty());
    for line in changes {
        assert!(!line.starts_with("GET "), "reads are unchanged: {line}");
        assert!(line.contains("-> read_only"), "{line}");
    }
    assert!(
        changes
            .iter()
            .any(|l| l.starts_with("POST /customers, full-access key: allow -> read_only")),
        "{out}"
    );
    let different = changes.len();
    assert!(
        summary.ends_with(&format!(", {different} different")),
        "{out}"
    );

    // Only the cases given: one write and one read.
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nmethod = \"GET\"\npath = \"/customers\"\nexpect = \"allow\"\n\n\
         [[case]]\nmethod = \"DELETE\"\npath = \"/customers/cus_1\"\nscopes = [\"customers:write\"]\nexpect = \"allow\"\n",
    )
    .expect("write cases");
    let out = diff(&["default", read_only, cases.to_str().expect("utf-8")]);
    assert_eq!(
        out,
        "DELETE /customers/cus_1, key with customers:write: allow -> read_only: this team's keys are read-only; DELETE is not allowed\n1 same, 1 different\n"
    );

    // A plugin that does not load is an error naming it.
    let mut c = cmd(&dir.path().join("data"));
    c.args(["policy", "diff", "default"]).arg(&cases);
    let out = run(c, "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cases.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn policy_test_runs_the_cases_file_against_the_default_plugin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy-tests/default-scopes.toml"
    );
    let (ok, stdout, stderr) = policy_test(dir.path(), "default", &[cases]);
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().last(),
        Some("70 passed, 0 failed"),
        "{stdout}"
    );

    let failing = dir.path().join("failing.toml");
    let failing_path = failing.to_str().expect("utf8");
    std::fs::write(
        &failing,
        "[[case]]\nmethod = \"POST\"\npath = \"/customers\"\nscopes = [\"customers:read\"]\nexpect = \"allow\"\n\n\
         [[case]]\nmethod = \"GET\"\npath = \"/customers\"\nexpect = \"allow\"\n",
    )
    .expect("write");
    let (ok, stdout, _) = policy_test(dir.path(), "default", &[failing_path]);
    assert!(!ok);
    assert!(stdout.contains("FAIL  POST /customers: expected allow, got insufficient_scope (requires customers:write)"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("1 passed, 1 failed"));

    // Several files run as one table; a failure in any of them fails the run.
    let (ok, stdout, _) = policy_test(dir.path(), "default", &[cases, failing_path]);
    assert!(!ok);
    assert_eq!(
        stdout.lines().last(),
        Some("71 passed, 1 failed"),
        "{stdout}"
    );

    std::fs::write(&failing, "[[case]]\nmethod = \"GET\"\nexpect = \"allow\"\n").expect("write");
    let (ok, _, stderr) = policy_test(dir.path(), "default", &[cases, failing_path]);
    assert!(!ok);
    assert!(
        stderr.contains("path"),
        "a malformed cases file names the problem"
    );
}

#[test]
fn policy_test_shows_the_author_why_a_plugin_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nmethod = \"GET\"\npath = \"/customers\"\nexpect = \"allow\"\n",
    )
    .expect("write");
    let (ok, stdout, _) = policy_test(
        dir.path(),
        billstack_test_artifacts::PANIC,
        &[cases.to_str().expect("utf8")],
    );
    assert!(!ok);
    assert!(
        stdout.contains("expected allow, got policy_error: trap: the plugin trapped"),
        "{stdout}"
    );
}

#[test]
fn policy_check_and_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let info = json(&data, &["policy", "check", "default"]);
    assert_eq!(info["name"], "billstack-default-scopes");
    assert_eq!(info["scopes"].as_array().expect("scopes").len(), 9);
    assert_eq!(
        info["scopes"][0],
        serde_json::json!({"name": "customers:read", "description": "Read customers"})
    );

    let out_file = dir.path().join("default.wasm");
    json(
        &data,
        &[
            "policy",
            "export",
            "default",
            "--output",
            out_file.to_str().expect("utf8"),
        ],
    );
    assert_eq!(
        std::fs::read(&out_file).expect("read"),
        billstack_host::plugins::DEFAULT_PLUGIN
    );
    let again = json(
        &data,
        &["policy", "check", out_file.to_str().expect("utf8")],
    );
    assert_eq!(again["sha256"], info["sha256"]);

    let mut c = cmd(&data);
    c.args(["policy", "check", billstack_test_artifacts::WRONG_WORLD]);
    let out = run(c, "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not export the billstack:policy world")
    );
}

#[test]
fn serve_bootstraps_and_answers_forward_auth_and_json_verify() {
    if common::on_postgres() {
        eprintln!(
            "sled only: it reads the sled store's files after the server stops (tests/postgres.rs covers bootstrap and restart on PostgreSQL)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            ("BILLSTACK_ADMIN_EMAIL", "ops@example.com"),
            ("BILLSTACK_ADMIN_PASSWORD", "bootstrap-pass-1"),
        ],
    );
    let http = agent();
    let mut res = http.get(&server.url("/healthz")).call().expect("healthz");
    assert_eq!(res.status(), 200);
    assert_eq!(res.body_mut().read_to_string().expect("body"), "ok");
    assert_eq!(
        http.get(&server.url("/readyz"))
            .call()
            .expect("readyz")
            .status(),
        200
    );
    assert_eq!(
        server.stop().code(),
        Some(0),
        "SIGTERM stops the server cleanly"
    );

    // The bootstrap made a team and a project; create keys offline now the store is free.
    let store = billstack_keystore::Store::open(&data).expect("open");
    let teams = store.list_teams().expect("teams");
    assert_eq!(teams.len(), 1);
    let team = teams[0].id.clone();
    let project = store.list_projects(&team).expect("projects")[0].id.clone();
    assert!(
        store
            .verify_password("ops@example.com", "bootstrap-pass-1")
            .expect("verify")
            .is_some()
    );
    drop(store);
    let created = json(
        &data,
        &[
            "key",
            "create",
            "--team",
            &team,
            "--name",
            "ci",
            "--project",
            &project,
            "--scope",
            "customers:read",
        ],
    );
    let raw = created["rawKey"].as_str().expect("raw").to_string();

    let server = Server::start(&data, &[]);
    let base = format!("/api/billstack/teams/{team}/projects/{project}");
    let verify = |auth: Option<&str>, method: &str, uri: &str| {
        let mut req = http
            .get(&server.url("/auth/verify"))
            .header("X-Forwarded-Method", method)
            .header("X-Forwarded-Uri", uri);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.call().expect("verify")
    };
    let bearer = format!("Bearer {raw}");
    let ok = verify(Some(&bearer), "GET", &format!("{base}/customers"));
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["x-billstack-key-id"],
        created["key"]["id"].as_str().expect("id")
    );
    assert_eq!(ok.headers()["x-billstack-team-id"], team.as_str());
    assert_eq!(ok.headers()["x-billstack-project-id"], project.as_str());
    assert_eq!(ok.headers()["x-billstack-scopes"], "customers:read");

    let denied = verify(Some(&bearer), "POST", &format!("{base}/customers"));
    assert_eq!(denied.status(), 403);
    assert_eq!(
        denied.headers()["www-authenticate"],
        "Bearer realm=\"billstack\", error=\"insufficient_scope\", scope=\"customers:write\""
    );
    let none = verify(None, "GET", &format!("{base}/customers"));
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"],
        "Bearer realm=\"billstack\""
    );
    let bad = verify(Some("Bearer bs_nope"), "GET", &format!("{base}/customers"));
    assert_eq!(bad.status(), 401);
    assert_eq!(
        bad.headers()["www-authenticate"],
        "Bearer realm=\"billstack\", error=\"invalid_token\""
    );
    // The X-Original-* convention (nginx auth_request) works too.
    let nginx = http
        .get(&server.url("/auth/verify"))
        .header("X-Original-Method", "GET")
        .header("X-Original-URI", &format!("{base}/customers?limit=10"))
        .header("Authorization", &bearer)
        .call()
        .expect("verify");
    assert_eq!(nginx.status(), 200);

    let mut res = http
        .post(&server.url("/api/billstack/keys/verify"))
        .send_json(serde_json::json!({"key": raw, "method": "DELETE", "path": format!("{base}/customers/c1")}))
        .expect("json verify");
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.body_mut().read_json().expect("json");
    assert_eq!(body["valid"], false);
    assert_eq!(body["code"], "INSUFFICIENT_SCOPE");
    assert_eq!(body["requiredScope"], "customers:write");
    assert_eq!(body["teamId"], team.as_str());
    let mut res = http
        .post(&server.url("/api/billstack/keys/verify"))
        .send_json(serde_json::json!({"key": "bs_x", "method": "GET", "path": format!("{base}/customers")}))
        .expect("json verify");
    let body: serde_json::Value = res.body_mut().read_json().expect("json");
    assert_eq!(
        body,
        serde_json::json!({"valid": false, "code": "INVALID_KEY"})
    );
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn the_config_file_is_read_and_unknown_keys_are_refused_by_name() {
    if common::on_postgres() {
        eprintln!("sled only: it checks where the sled store was made");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("billstack.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\n",
            data.join("from-config")
        ),
    )
    .expect("write");
    std::fs::create_dir_all(data.join("from-config")).expect("mkdir");
    let mut c = cmd(&data);
    c.env_remove("BILLSTACK_DATA_DIR").args([
        "--config",
        config.to_str().expect("utf8"),
        "team",
        "create",
        "--name",
        "Cfg",
        "--id",
        "team_cfg",
    ]);
    let out = run(c, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        data.join("from-config").join("db").exists(),
        "data_dir came from the file"
    );

    std::fs::write(&config, "data_dri = \"/tmp/typo\"\n").expect("write");
    let mut c = cmd(&data);
    c.args([
        "team",
        "create",
        "--name",
        "X",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    let out = run(c, "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("data_dri"),
        "the unknown key is named: {stderr}"
    );

    std::fs::write(&config, "[limits]\nplugin_deadline_ms = 0\n").expect("write");
    let mut c = cmd(&data);
    // The environment would override the file's value.
    c.env_remove("BILLSTACK_PLUGIN_DEADLINE_MS");
    c.args(["--config", config.to_str().expect("utf8"), "serve"]);
    let out = run(c, "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("plugin_deadline_ms"));
}

#[test]
fn keys_rotate_and_carry_a_rate_limit_from_the_command_line() {
    let (_dir, data) = setup();
    let created = json(
        &data,
        &[
            "key",
            "create",
            "--team",
            "team_a",
            "--name",
            "ci",
            "--rate-limit",
            "100/60",
        ],
    );
    assert_eq!(
        created["key"]["rateLimit"],
        serde_json::json!({"limit": 100, "windowSeconds": 60})
    );
    let old_id = created["key"]["id"].as_str().expect("id").to_string();
    let rotated = json(
        &data,
        &[
            "key",
            "rotate",
            "--team",
            "team_a",
            &old_id,
            "--grace-period-seconds",
            "0",
        ],
    );
    let new_raw = rotated["rawKey"].as_str().expect("rawKey");
    assert_ne!(new_raw, created["rawKey"].as_str().expect("rawKey"));
    assert_eq!(rotated["key"]["name"], "ci");
    assert_eq!(rotated["key"]["rateLimit"], created["key"]["rateLimit"]);
    let listed = json(&data, &["key", "list", "--team", "team_a"]);
    let ids: Vec<&str> = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [rotated["key"]["id"].as_str().expect("id")]);

    // Bad budgets and bad rotations fail clearly and change nothing.
    for bad in ["0/60", "100/0", "100/86401", "100", "x/y"] {
        let mut c = cmd(&data);
        c.args([
            "key",
            "create",
            "--team",
            "team_a",
            "--name",
            "x",
            "--rate-limit",
            bad,
        ]);
        let out = run(c, "");
        assert!(!out.status.success(), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("rate-limit"),
            "{bad}"
        );
    }
    let mut c = cmd(&data);
    c.args(["key", "rotate", "--team", "team_a", &old_id]);
    let out = run(c, "");
    assert!(!out.status.success(), "a revoked key cannot be rotated");
    assert_eq!(
        json(&data, &["key", "list", "--team", "team_a"])["keys"]
            .as_array()
            .expect("keys")
            .len(),
        1
    );
}

#[test]
fn version_names_the_wit_world_and_every_help_page_is_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = cmd(dir.path());
    c.arg("--version");
    let out = run(c, "");
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with(&format!("billstack {}", env!("CARGO_PKG_VERSION")))
            && version.contains("billstack:policy/policy@"),
        "{version}"
    );
    for path in [
        &[][..],
        &["serve"],
        &["team"],
        &["team", "create"],
        &["project", "create"],
        &["user", "create"],
        &["key"],
        &["key", "create"],
        &["key", "rotate"],
        &["key", "list"],
        &["key", "revoke"],
        &["policy", "check"],
        &["policy", "test"],
        &["policy", "export"],
        &["openapi"],
    ] {
        let mut c = cmd(dir.path());
        c.args(path).arg("--help");
        let out = run(c, "");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{path:?}");
        assert!(help.contains("Usage: billstack"), "{path:?}: {help}");
    }
    // `billstack openapi` prints the document the server serves.
    let mut c = cmd(dir.path());
    c.arg("openapi");
    let out = run(c, "");
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    assert!(doc["paths"]["/auth/verify"]["get"]["operationId"] == "forwardAuthGet");
}

#[test]
fn a_backup_taken_while_serving_restores_every_key_and_every_revocation() {
    if common::on_postgres() {
        eprintln!(
            "sled only: it restores into a sled data directory and opens its files (tests/postgres.rs backs up PostgreSQL and restores into sled)"
        );
        return;
    }
    let (dir, data) = setup();
    create_user(
        &data,
        "ops@acme.test",
        "ops-password-123",
        "team_a",
        "owner",
    );
    let new_key = |name: &str| {
        json(
            &data,
            &["key", "create", "--team", "team_a", "--name", name],
        )["rawKey"]
            .as_str()
            .expect("raw")
            .to_string()
    };
    let kept: Vec<String> = (0..3).map(|i| new_key(&format!("kept {i}"))).collect();
    let revoked = json(
        &data,
        &["key", "create", "--team", "team_a", "--name", "gone"],
    );
    json(
        &data,
        &[
            "key",
            "revoke",
            "--team",
            "team_a",
            revoked["key"]["id"].as_str().expect("id"),
        ],
    );
    let revoked = revoked["rawKey"].as_str().expect("raw").to_string();

    let server = Server::start(&data, &[]);
    assert_eq!(forward_auth(&server, &kept[0], "GET", CUSTOMERS).0, 200);
    // Sign-ins write sessions and audit events while the backup runs; it must still be one
    // consistent state.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, stop) = (server.url("/api/auth/login"), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = agent()
                    .post(&url)
                    .send_json(serde_json::json!({"email": "ops@acme.test", "password": "ops-password-123"}))
                    .expect("login");
                assert_eq!(res.status(), 200);
                n += 1;
            }
            n
        })
    };
    let file = dir.path().join("store.backup");
    let out = json(&data, &["backup", "--output", file.to_str().expect("utf8")]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sign_ins = writer.join().expect("writer");
    assert_eq!(out["online"], true, "{out}");
    assert_eq!(out["backup"]["keys"], 4);
    assert_eq!(
        out["backup"]["bytes"].as_u64(),
        Some(std::fs::metadata(&file).expect("file").len())
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only its owner may read a backup");
    }
    // The file is never overwritten.
    let mut c = cmd(&data);
    c.args(["backup", "--output", file.to_str().expect("utf8")]);
    let again = run(c, "");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(server.stop().code(), Some(0));
    assert!(
        !data.join("control.sock").exists(),
        "the socket goes with the server"
    );
    let after = new_key("after the backup");

    // Restore into a fresh directory and serve it.
    let restored = dir.path().join("restored");
    let mut c = cmd(&restored);
    c.args(["restore", file.to_str().expect("utf8")]);
    let out = run(c, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start(&restored, &[]);
    for key in &kept {
        assert_eq!(
            forward_auth(&server, key, "GET", CUSTOMERS).0,
            200,
            "a kept key"
        );
    }
    assert_eq!(
        forward_auth(&server, &revoked, "GET", CUSTOMERS).0,
        401,
        "the revoked key"
    );
    assert_eq!(
        forward_auth(&server, &after, "GET", CUSTOMERS).0,
        401,
        "a key made after the backup"
    );
    let res = agent()
        .post(&server.url("/api/auth/login"))
        .send_json(serde_json::json!({"email": "ops@acme.test", "password": "ops-password-123"}))
        .expect("login");
    assert_eq!(res.status(), 200, "accounts are restored too");
    assert_eq!(server.stop().code(), Some(0));
    assert!(sign_ins > 0);

    // Restoring over a store, or a damaged file, is refused and changes nothing.
    let mut c = cmd(&restored);
    c.args(["restore", file.to_str().expect("utf8")]);
    let out = run(c, "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a store"));
    let bytes = std::fs::read(&file).expect("read");
    let damaged = dir.path().join("damaged.backup");
    std::fs::write(&damaged, &bytes[..bytes.len() - 10]).expect("write");
    let fresh = dir.path().join("fresh");
    let mut c = cmd(&fresh);
    c.args(["restore", damaged.to_str().expect("utf8")]);
    let out = run(c, "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a usable backup"));
    assert!(!fresh.join("db").exists());

    // With no server running, backup reads the store directly.
    let offline = dir.path().join("offline.backup");
    let out = json(
        &data,
        &["backup", "--output", offline.to_str().expect("utf8")],
    );
    assert_eq!(out["online"], false);
    assert_eq!(out["backup"]["keys"], 5);
}

/// Runs `billstack ARGS…` against `data`; returns (success, stderr).
fn attempt(data: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut c = cmd(data);
    c.args(args);
    let out = run(c, "");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Only `serve` creates a missing data directory: every other command names the path and
/// changes nothing, reading commands refuse a directory with no store, and a creating command
/// may start one in an empty directory that exists.
#[test]
fn offline_commands_never_make_a_store_where_none_was_meant() {
    if common::on_postgres() {
        eprintln!(
            "sled only: only a sled store lives in, and can be created by mistake in, a directory"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("mistyped");
    let backup = dir.path().join("out.backup");
    let backup_arg = backup.to_str().expect("utf8");
    for args in [
        &["team", "create", "--name", "Acme"][..],
        &["key", "list", "--team", "team_a"],
        &["key", "create", "--team", "team_a", "--name", "k"],
        &["project", "create", "--team", "team_a", "--name", "p"],
        &["backup", "--output", backup_arg],
    ] {
        let (ok, stderr) = attempt(&missing, args);
        assert!(!ok, "{args:?}");
        assert!(
            stderr.contains(&missing.display().to_string()) && stderr.contains("does not exist"),
            "{args:?}: {stderr}"
        );
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
        assert!(!backup.exists(), "{args:?}");
    }

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    for args in [
        &["key", "list", "--team", "team_a"][..],
        &["backup", "--output", backup_arg],
        &["project", "create", "--team", "team_a", "--name", "p"],
    ] {
        let (ok, stderr) = attempt(&empty, args);
        assert!(!ok, "{args:?}");
        assert!(
            stderr.contains("holds no BillStack store"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            std::fs::read_dir(&empty).expect("dir").count(),
            0,
            "{args:?} wrote into the empty directory"
        );
    }
    assert!(!backup.exists());
    let (ok, stderr) = attempt(&empty, &["team", "create", "--name", "Acme"]);
    assert!(
        ok,
        "a creating command starts a store in an empty directory: {stderr}"
    );
    let (ok, stderr) = attempt(&empty, &["backup", "--output", backup_arg]);
    assert!(ok, "{stderr}");

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    for args in [&["team", "create", "--name", "Acme"][..], &["serve"]] {
        let (ok, stderr) = attempt(&file, args);
        assert!(!ok, "{args:?}");
        assert!(
            stderr.contains(&file.display().to_string()) && stderr.contains("is not a directory"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(std::fs::read(&file).expect("read"), b"not a directory");
}

/// Everything that can refuse a start is checked before the store is made: a start that fails
/// leaves no store, no data directory and no spent one-time password behind.
#[test]
fn a_failed_start_changes_nothing_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("addr").to_string();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().expect("utf8");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not a component").expect("write");
    let garbage = garbage.to_str().expect("utf8");
    for (why, args, envs) in [
        (
            "the address is taken",
            vec!["serve", "--listen", taken.as_str()],
            vec![],
        ),
        (
            "the TLS files are missing",
            vec!["serve", "--listen", "127.0.0.1:0"],
            vec![
                ("BILLSTACK_TLS_CERT", missing),
                ("BILLSTACK_TLS_KEY", missing),
            ],
        ),
        (
            "the policy is not a component",
            vec!["serve", "--listen", "127.0.0.1:0"],
            vec![("BILLSTACK_POLICY", garbage)],
        ),
        (
            "the log filter is not one",
            vec!["serve", "--listen", "127.0.0.1:0"],
            vec![("BILLSTACK_LOG", "verbose")],
        ),
    ] {
        let mut c = cmd(&data);
        c.args(&args).envs(envs.iter().copied());
        let out = run(c, "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{why}");
        assert!(stderr.contains("error:"), "{why}: {stderr}");
        assert!(
            !stderr.contains("password"),
            "{why}: no password spent: {stderr}"
        );
        assert!(!data.exists(), "{why}: {} was made", data.display());
    }
}

/// `--listen localhost:PORT` listens on the loopback address `localhost` names.
#[test]
fn serve_listens_on_a_host_name() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = cmd(&dir.path().join("data"));
    c.args(["serve", "--listen", "localhost:0"])
        .env("BILLSTACK_ADMIN_PASSWORD", "bootstrap-pass-1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let url = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = common::listening_url(&line) {
                    break url;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start on localhost:0");
            }
        }
    };
    let status = agent()
        .get(&format!("{url}/healthz"))
        .call()
        .expect("healthz")
        .status();
    let _ = child.kill();
    let _ = child.wait();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(status, 200);
}

/// With `--log-format json`, every line is one JSON object: the bootstrap's, the listening
/// line, and the last one.
#[test]
fn json_logs_are_json_from_the_first_line_to_the_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[("BILLSTACK_LOG_FORMAT", "json")]);
    let lines = std::mem::replace(&mut server.stderr, std::sync::mpsc::channel().1);
    let log = server.log_text();
    assert_eq!(server.stop().code(), Some(0));
    let mut messages = Vec::new();
    for line in log.lines().map(str::to_owned).chain(lines.iter()) {
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        messages.push(
            event["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    for expected in [
        "bootstrap: created team",
        "bootstrap: generated password",
        "billstack listening on",
        "billstack stopped",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "{expected}: {messages:?}"
        );
    }
}

/// DESIGN.md § Accounts: the operator's commands work while a server holds the data
/// directory, through its control socket, and take effect in that server at once.
#[test]
fn operator_commands_go_through_the_running_server() {
    let (_dir, data) = setup();
    let server = Server::start(&data, &[]);
    let team = json(
        &data,
        &["team", "create", "--name", "Live", "--id", "team_live"],
    );
    assert_eq!(team, serde_json::json!({"id": "team_live", "name": "Live"}));
    let project = json(
        &data,
        &[
            "project",
            "create",
            "--team",
            "team_live",
            "--name",
            "Web",
            "--id",
            "proj_live",
        ],
    );
    assert_eq!(project["teamId"], "team_live");
    let user = create_user(
        &data,
        "live@acme.test",
        "live-password-1",
        "team_live",
        "owner",
    );
    assert!(
        user.status.success(),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );
    let created = json(
        &data,
        &[
            "key",
            "create",
            "--team",
            "team_live",
            "--name",
            "online",
            "--project",
            "proj_live",
            "--scope",
            "customers:read",
        ],
    );
    let raw = created["rawKey"].as_str().expect("raw").to_string();
    let id = created["key"]["id"].as_str().expect("id").to_string();
    let path = "/api/billstack/teams/team_live/projects/proj_live/customers";
    assert_eq!(
        forward_auth(&server, &raw, "GET", path).0,
        200,
        "usable at once"
    );
    // The account made through the server signs in to it; the same email again joins the
    // existing account to another team (its password unchanged).
    common::sign_in(&server.base, "live@acme.test", "live-password-1");
    let joined = create_user(
        &data,
        "live@acme.test",
        "ignored-password-1",
        "team_a",
        "member",
    );
    assert!(
        joined.status.success(),
        "{}",
        String::from_utf8_lossy(&joined.stderr)
    );
    let cookie = common::sign_in(&server.base, "live@acme.test", "live-password-1");
    let me: serde_json::Value = agent()
        .get(&server.url("/api/auth/me"))
        .header("Cookie", &cookie)
        .call()
        .expect("me")
        .body_mut()
        .read_json()
        .expect("json");
    assert_eq!(me["teams"].as_array().expect("teams").len(), 2, "{me}");
    let listed = json(&data, &["key", "list", "--team", "team_live"]);
    assert_eq!(listed["keys"][0]["id"], id.as_str());
    let rotated = json(
        &data,
        &[
            "key",
            "rotate",
            "--team",
            "team_live",
            &id,
            "--grace-period-seconds",
            "0",
        ],
    );
    let new_raw = rotated["rawKey"].as_str().expect("raw").to_string();
    assert_eq!(
        forward_auth(&server, &raw, "GET", path).0,
        401,
        "the old key ended"
    );
    let new_id = rotated["key"]["id"].as_str().expect("id").to_string();
    let revoked = json(&data, &["key", "revoke", "--team", "team_live", &new_id]);
    assert_eq!(revoked["id"], new_id.as_str());
    assert_eq!(
        forward_auth(&server, &new_raw, "GET", path).0,
        401,
        "revoked through the server: refused at once"
    );
    // Refusals come back as the command's error, and change nothing.
    for (args, needle) in [
        (&["key", "list", "--team", "team_nope"][..], "team_nope"),
        (
            &[
                "key",
                "create",
                "--team",
                "team_live",
                "--name",
                "x",
                "--scope",
                "nope:never",
            ][..],
            "nope:never",
        ),
        (
            &["team", "create", "--name", "Dup", "--id", "team_live"][..],
            "already exists",
        ),
    ] {
        let mut c = cmd(&data);
        c.args(args);
        let out = run(c, "");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    let listed = json(&data, &["key", "list", "--team", "team_live"]);
    assert_eq!(listed["keys"].as_array().expect("keys").len(), 0);
}
