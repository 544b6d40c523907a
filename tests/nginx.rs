//! `examples/nginx/nginx.conf` in front of the real binary, with a real nginx: allow, 401 and
//! 403 through `auth_request`, the identity headers at the upstream, and forged identity
//! headers dropped. Needs nginx (with the auth_request module, as Debian's has), so it is
//! ignored by plain `cargo test`; `.ci/run` installs nginx and runs it.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::front_proxy::{RefusalWorld, free_port};
use common::{Server, agent, echo_upstream, json};
use serde_json::Value;

/// nginx from `NGINX`, `PATH`, or Debian's place for it (not on a non-root `PATH`).
fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NGINX") {
        return path.into();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
        .expect("nginx is not installed (.ci/run installs Debian's nginx package)")
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts nginx with the example configuration, its three addresses rewritten; waits (with a
/// deadline) until it accepts connections.
fn start_nginx(dir: &Path, billstack: &str, upstream: &str) -> (Nginx, String) {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/nginx/nginx.conf"
    ))
    .expect("the example configuration");
    let port = free_port();
    let rewritten = example
        .replace("127.0.0.1:8080", billstack)
        .replace("127.0.0.1:9000", upstream)
        .replace("listen 127.0.0.1:8000", &format!("listen 127.0.0.1:{port}"));
    for (from, what) in [
        ("127.0.0.1:8080", "BillStack's address"),
        ("127.0.0.1:9000", "the upstream's address"),
        ("listen 127.0.0.1:8000", "nginx's listen address"),
    ] {
        assert!(
            example.contains(from),
            "the example no longer names {what} as {from}"
        );
    }
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).expect("logs dir");
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, rewritten).expect("write conf");
    let pid = prefix.join("nginx.pid");
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(prefix.join("logs/error.log"))
        .arg("-g")
        .arg(format!(
            "daemon off; master_process off; pid {};",
            pid.display()
        ))
        .stdin(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut nginx = Nginx(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = nginx.0.try_wait().expect("try_wait") {
            let log = std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
            panic!("nginx exited with {status}: {log}");
        }
        assert!(Instant::now() < deadline, "nginx did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    (nginx, format!("http://127.0.0.1:{port}"))
}

#[test]
#[ignore = "needs nginx: .ci/run installs Debian's nginx and runs this"]
fn nginx_auth_request_allows_refuses_and_passes_the_identity_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Scripts make the directory; only `serve` creates a missing one.
    std::fs::create_dir(&data).expect("mkdir data");
    json(
        &data,
        &["team", "create", "--name", "Acme", "--id", "team_a"],
    );
    for project in ["proj_a", "proj_b"] {
        json(
            &data,
            &[
                "project", "create", "--team", "team_a", "--name", project, "--id", project,
            ],
        );
    }
    let created = json(
        &data,
        &[
            "key",
            "create",
            "--team",
            "team_a",
            "--name",
            "nginx",
            "--project",
            "proj_a",
            "--scope",
            "customers:read",
        ],
    );
    let raw = created["rawKey"].as_str().expect("raw").to_string();
    let key_id = created["key"]["id"].as_str().expect("id").to_string();

    let server = Server::start(&data, &[("BILLSTACK_TRUSTED_PROXIES", "127.0.0.1")]);
    let billstack = server.base.trim_start_matches("http://").to_string();
    let upstream = echo_upstream(64);
    let (_nginx, front) = start_nginx(
        dir.path(),
        &billstack,
        upstream.trim_start_matches("http://"),
    );
    let http = agent();
    let path = "/api/billstack/teams/team_a/projects/proj_a/customers?limit=5";
    let auth = format!("Bearer {raw}");

    // Allowed: the upstream answers, and sees who the key is, not the key; a client's forged
    // identity headers are replaced.
    let mut res = http
        .get(&format!("{front}{path}"))
        .header("Authorization", &auth)
        .header("X-BillStack-Team-Id", "team_forged")
        .header("X-BillStack-Scopes", "everything:write")
        .call()
        .expect("allowed");
    assert_eq!(res.status(), 200);
    let echoed: Value = res.body_mut().read_json().expect("echo");
    let headers = &echoed["headers"];
    assert_eq!(echoed["requestLine"], format!("GET {path} HTTP/1.1"));
    assert_eq!(headers["x-billstack-key-id"], key_id.as_str());
    assert_eq!(headers["x-billstack-team-id"], "team_a");
    assert_eq!(headers["x-billstack-project-id"], "proj_a");
    assert_eq!(headers["x-billstack-scopes"], "customers:read");
    assert!(headers.get("authorization").is_none(), "{headers}");

    // 401 without a key and with a bad one, with BillStack's challenge.
    let res = http.get(&format!("{front}{path}")).call().expect("no key");
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Bearer realm=\"billstack\"")
    );
    let res = http
        .get(&format!("{front}{path}"))
        .header("Authorization", &format!("Bearer bs_{}", "0".repeat(48)))
        .call()
        .expect("bad key");
    assert_eq!(res.status(), 401);

    // 403: a scope the key lacks (naming it), and a project the key may not use.
    let res = http
        .post(&format!(
            "{front}/api/billstack/teams/team_a/projects/proj_a/customers"
        ))
        .header("Authorization", &auth)
        .send_empty()
        .expect("missing scope");
    assert_eq!(res.status(), 403);
    let challenge = res.headers()["www-authenticate"].to_str().expect("ascii");
    assert!(
        challenge.contains("insufficient_scope") && challenge.contains("customers:write"),
        "{challenge}"
    );
    let res = http
        .get(&format!(
            "{front}/api/billstack/teams/team_a/projects/proj_b/customers"
        ))
        .header("Authorization", &auth)
        .call()
        .expect("other project");
    assert_eq!(res.status(), 403);
}

/// Every refusal reaches the client through nginx with BillStack's own status, JSON body and
/// headers: 400, 401, 403, 404, 429 and 503, not nginx's 500; and a BillStack that cannot be
/// reached is a 503, never an allow.
#[test]
#[ignore = "needs nginx: .ci/run installs Debian's nginx and runs this"]
fn nginx_passes_every_refusal_through_as_billstack_gave_it() {
    let world = RefusalWorld::new();
    let billstack = world.server.base.trim_start_matches("http://").to_string();
    let upstream = echo_upstream(16);
    let (nginx, front) = start_nginx(
        world.dir.path(),
        &billstack,
        upstream.trim_start_matches("http://"),
    );
    world.check_refusals(&front);
    // BillStack unreachable: 503, never the upstream.
    let down = world.stop_and_ask(&front);
    assert_eq!(down.status, 503, "{down:?}");
    assert_eq!(down.body["error"]["code"], "auth_unavailable");
    drop(nginx);
}
