//! `billstack serve` on PostgreSQL (`storage = "postgres://…"`), black box: the real binary on
//! a throwaway cluster of the test's own. Keys, revocations and accounts live in the database
//! (a restart keeps them); the CLI's changes go through the running server; and when the
//! database stops, writes and lookups of keys not in memory answer 503 `store_unavailable`
//! with `Retry-After`, keys in memory keep deciding only until the replica's lease runs out,
//! and the server recovers by itself when the database returns, with nothing half-written.

mod common;

use std::time::{Duration, Instant};

use billstack_pg_cluster::PgCluster;
use common::api::{forward_auth, login};
use common::{Server, agent, cmd, run};
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("admin@acme.test", "admin-password-1");
const CUSTOMERS: &str = "/api/billstack/teams/{team}/projects/{project}/customers";

fn start(data: &std::path::Path, url: &str) -> Server {
    Server::start(
        data,
        &[
            ("BILLSTACK_STORAGE", url),
            ("BILLSTACK_ADMIN_EMAIL", ADMIN.0),
            ("BILLSTACK_ADMIN_PASSWORD", ADMIN.1),
        ],
    )
}

/// The bootstrap team and project of the signed-in admin.
fn team_and_project(server: &Server) -> (String, String) {
    let admin = login(server, ADMIN);
    common::api::first_team_and_project(|path| admin.send("GET", path, None).1)
}

#[test]
fn the_server_keeps_everything_in_postgres_and_survives_its_outage() {
    let Some(cluster) = PgCluster::start() else {
        eprintln!("PostgreSQL is not installed: skipped");
        return;
    };
    let url = cluster.new_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = start(&data, &url);
    let (team, project) = team_and_project(&server);
    let customers = CUSTOMERS
        .replace("{team}", &team)
        .replace("{project}", &project);
    let admin = login(&server, ADMIN);
    let keys = format!("/api/billstack/teams/{team}/api-keys");
    let (status, kept) = admin.send("POST", &keys, Some(json!({"name": "kept"})));
    assert_eq!(status, 201, "{kept}");
    let kept_raw = kept["rawKey"].as_str().expect("raw").to_string();
    let (_, gone) = admin.send("POST", &keys, Some(json!({"name": "gone"})));
    let gone_raw = gone["rawKey"].as_str().expect("raw").to_string();
    let gone_id = gone["key"]["id"].as_str().expect("id").to_string();
    assert_eq!(forward_auth(&server, &gone_raw, "GET", &customers).0, 200);
    assert_eq!(
        admin.send("DELETE", &format!("{keys}/{gone_id}"), None).0,
        204
    );
    assert_eq!(forward_auth(&server, &gone_raw, "GET", &customers).0, 401);

    // The CLI's change goes through the running server, and holds at once.
    let mut c = cmd(&data);
    c.env("BILLSTACK_STORAGE", &url).args([
        "key",
        "create",
        "--team",
        &team,
        "--name",
        "from the cli",
    ]);
    let out = run(c, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).expect("json");
    let cli_raw = created["rawKey"].as_str().expect("raw").to_string();
    assert_eq!(forward_auth(&server, &cli_raw, "GET", &customers).0, 200);

    // A restart reads it all back from the database.
    assert_eq!(server.stop().code(), Some(0));
    let server = start(&data, &url);
    assert_eq!(forward_auth(&server, &kept_raw, "GET", &customers).0, 200);
    assert_eq!(forward_auth(&server, &gone_raw, "GET", &customers).0, 401);
    let admin = login(&server, ADMIN);
    let (_, listed) = admin.send("GET", &keys, None);
    let names: Vec<&str> = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"kept") && names.contains(&"from the cli"));

    // The database stops. A key that is not in memory, and any write, get 503
    // store_unavailable with Retry-After, fast. A key in memory decides until the replica's
    // lease (1 s) runs out, since it can no longer learn of a revocation; then it is refused
    // too.
    let (_, fresh) = admin.send("POST", &keys, Some(json!({"name": "never used"})));
    let fresh_raw = fresh["rawKey"].as_str().expect("raw").to_string();
    cluster.kill();
    let killed = Instant::now();
    loop {
        let (status, body) = forward_auth(&server, &kept_raw, "GET", &customers);
        if status == 503 {
            assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "a cached key was still allowed {:?} after the database stopped",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let res = agent()
        .get(&server.url("/auth/verify"))
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Uri", &customers)
        .header("Authorization", &format!("Bearer {fresh_raw}"))
        .call()
        .expect("forward auth");
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let (status, refused) = admin.send("POST", &keys, Some(json!({"name": "during the outage"})));
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "store_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failing took {:?}",
        started.elapsed()
    );

    // It comes back: the same server serves again, with no restart, and nothing of the
    // refused write exists.
    cluster.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let (status, body) = forward_auth(&server, &fresh_raw, "GET", &customers);
        seen.push(format!("{status} {}", body["error"]["code"]));
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never recovered: {status} {body}\n{:?}",
            &seen[..seen.len().min(20)]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let admin = login(&server, ADMIN);
    let (_, listed) = admin.send("GET", &keys, None);
    assert!(
        !listed.to_string().contains("during the outage"),
        "a refused write left nothing behind"
    );
    let (status, _) = admin.send("POST", &keys, Some(json!({"name": "after"})));
    assert_eq!(status, 201);

    // `billstack backup` reads the database while the server runs, in the one backup format:
    // restored into a sled data directory, the same keys decide the same way.
    let file = dir.path().join("keys.backup");
    let mut c = cmd(&data);
    c.env("BILLSTACK_STORAGE", &url)
        .args(["backup", "--output"])
        .arg(&file);
    let out = run(c, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = dir.path().join("restored");
    let mut c = cmd(&restored);
    c.arg("restore").arg(&file).arg("--data-dir").arg(&restored);
    let out = run(c, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.stop().code(), Some(0));
    let on_sled = Server::start(&restored, &[]);
    assert_eq!(forward_auth(&on_sled, &kept_raw, "GET", &customers).0, 200);
    assert_eq!(forward_auth(&on_sled, &gone_raw, "GET", &customers).0, 401);
    login(&on_sled, ADMIN);
    assert_eq!(on_sled.stop().code(), Some(0));
}

#[test]
fn a_storage_setting_that_is_not_a_database_url_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut c = cmd(&data);
    c.env("BILLSTACK_STORAGE", "mysql://app:secret-pw@db/keys")
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let out = run(c, "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("postgres://"), "{stderr}");
    assert!(
        !stderr.contains("secret-pw"),
        "the password is never printed: {stderr}"
    );
}

/// `billstack migrate --to postgres://…` copies a running sled deployment into an empty
/// database (through the server's control socket), checks every table, and leaves the sled
/// store serving as before; a server on the database then decides every key the same way.
#[test]
fn migrate_copies_a_sled_store_into_postgres_and_checks_every_table() {
    let Some(cluster) = PgCluster::start() else {
        eprintln!("PostgreSQL is not installed: skipped");
        return;
    };
    let url = cluster.new_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("sled");
    let sled = Server::start(
        &data,
        &[
            ("BILLSTACK_ADMIN_EMAIL", ADMIN.0),
            ("BILLSTACK_ADMIN_PASSWORD", ADMIN.1),
        ],
    );
    let (team, project) = team_and_project(&sled);
    let customers = CUSTOMERS
        .replace("{team}", &team)
        .replace("{project}", &project);
    let admin = login(&sled, ADMIN);
    let keys = format!("/api/billstack/teams/{team}/api-keys");
    let (_, kept) = admin.send(
        "POST",
        &keys,
        Some(json!({"name": "kept", "scopes": ["customers:read"]})),
    );
    let kept_raw = kept["rawKey"].as_str().expect("raw").to_string();
    let (_, gone) = admin.send("POST", &keys, Some(json!({"name": "gone"})));
    let gone_raw = gone["rawKey"].as_str().expect("raw").to_string();
    let gone_id = gone["key"]["id"].as_str().expect("id").to_string();
    admin.send("DELETE", &format!("{keys}/{gone_id}"), None);
    assert_eq!(forward_auth(&sled, &kept_raw, "GET", &customers).0, 200);

    let migrate = |target: &str| {
        let mut c = cmd(&data);
        c.args(["migrate", "--to", target]);
        run(c, "")
    };
    let out = migrate(&url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["checksumsMatch"], true, "{report}");
    assert_eq!(report["migrated"]["keys"], 2);
    assert!(
        report["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .any(|t| t["table"] == "keys" && t["expected"] == 2 && t["found"] == 2),
        "{report}"
    );
    // Only into an empty database; and the sled deployment never stopped.
    let again = migrate(&url);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(forward_auth(&sled, &kept_raw, "GET", &customers).0, 200);
    assert_eq!(sled.stop().code(), Some(0));

    let on_postgres = start(&dir.path().join("pg"), &url);
    assert_eq!(
        forward_auth(&on_postgres, &kept_raw, "GET", &customers).0,
        200
    );
    assert_eq!(
        forward_auth(&on_postgres, &gone_raw, "GET", &customers).0,
        401
    );
    assert_eq!(
        forward_auth(&on_postgres, &kept_raw, "POST", &customers).0,
        403,
        "the scopes came across"
    );
    login(&on_postgres, ADMIN);
    assert_eq!(on_postgres.stop().code(), Some(0));
}
