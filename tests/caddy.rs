//! `examples/caddy/Caddyfile` in front of the real binary, with a real Caddy (Debian's
//! package): the allow, the identity headers at the upstream, forged identity headers dropped,
//! and every refusal as the door itself gives it. Ignored by plain `cargo test`; `.ci/run`
//! installs Caddy and runs it.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::front_proxy::{RefusalWorld, free_port};
use common::{agent, echo_upstream};
use serde_json::Value;

/// Caddy from `CADDY` or `PATH`.
fn caddy_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CADDY") {
        return path.into();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("caddy"))
        .find(|p| p.is_file())
        .expect("caddy is not installed (.ci/run installs Debian's caddy package)")
}

struct Caddy(Child);

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Caddy with the example Caddyfile, its three addresses rewritten; waits (with a
/// deadline) until it accepts connections. Caddy's own state goes under `dir`.
fn start_caddy(dir: &Path, billstack: &str, upstream: &str) -> (Caddy, String) {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/caddy/Caddyfile"
    ))
    .expect("the example Caddyfile");
    for (from, what) in [
        ("forward_auth 127.0.0.1:8080", "BillStack's address"),
        ("reverse_proxy 127.0.0.1:9000", "the upstream's address"),
        ("http://127.0.0.1:8000", "Caddy's address"),
    ] {
        assert!(
            example.contains(from),
            "the example no longer names {what} as {from}"
        );
    }
    let port = free_port();
    let rewritten = example
        .replace(
            "forward_auth 127.0.0.1:8080",
            &format!("forward_auth {billstack}"),
        )
        .replace(
            "reverse_proxy 127.0.0.1:9000",
            &format!("reverse_proxy {upstream}"),
        )
        .replace("http://127.0.0.1:8000", &format!("http://127.0.0.1:{port}"));
    let home = dir.join("caddy");
    std::fs::create_dir_all(&home).expect("caddy dir");
    let config = home.join("Caddyfile");
    std::fs::write(&config, rewritten).expect("write Caddyfile");
    let log = home.join("caddy.log");
    let child = Command::new(caddy_binary())
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&config)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start caddy");
    let mut caddy = Caddy(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = caddy.0.try_wait().expect("try_wait") {
            panic!(
                "caddy exited with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "caddy did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    (caddy, format!("http://127.0.0.1:{port}"))
}

#[test]
#[ignore = "needs caddy: .ci/run installs Debian's caddy and runs this"]
fn caddy_forward_auth_allows_refuses_and_passes_the_identity_upstream() {
    let world = RefusalWorld::new();
    let (raw, key_id) = world.project_key.clone();
    let billstack = world.server.base.trim_start_matches("http://").to_string();
    let upstream = echo_upstream(16);
    let (caddy, front) = start_caddy(
        world.dir.path(),
        &billstack,
        upstream.trim_start_matches("http://"),
    );

    // Allowed: the upstream answers and sees who the key is, not the key; a client's forged
    // identity headers are gone.
    let path = "/api/billstack/teams/team_a/projects/proj_a/customers?limit=5";
    let mut res = agent()
        .get(&format!("{front}{path}"))
        .header("Authorization", &format!("Bearer {raw}"))
        .header("X-BillStack-Team-Id", "team_forged")
        .header("X-BillStack-Scopes", "everything:write")
        .call()
        .expect("allowed");
    assert_eq!(res.status(), 200);
    let echoed: Value = res.body_mut().read_json().expect("echo");
    let headers = &echoed["headers"];
    assert_eq!(echoed["requestLine"], format!("GET {path} HTTP/1.1"));
    assert_eq!(headers["x-billstack-key-id"], key_id.as_str());
    assert_eq!(headers["x-billstack-team-id"], "team_a", "{headers}");
    assert_eq!(headers["x-billstack-project-id"], "proj_a");
    assert_eq!(headers["x-billstack-scopes"], "customers:read");
    assert!(headers.get("authorization").is_none(), "{headers}");

    world.check_refusals(&front);
    // BillStack unreachable: Caddy's 502, never the upstream.
    let down = world.stop_and_ask(&front);
    assert_eq!(down.status, 502, "{down:?}");
    drop(caddy);
}
