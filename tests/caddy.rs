//! `examples/caddy/Caddyfile` in front of the real binary, with a real Caddy (Debian's
//! package): the allow, the identity headers at the upstream, forged identity headers dropped,
//! and every refusal as the door itself gives it. Ignored by plain `cargo test`; `.ci/run`
//! installs Caddy and runs it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::front_proxy::{ProxyWorld, Running, find_program, free_port, rewrite_example};

/// Starts Caddy with the example Caddyfile, its three addresses rewritten; waits (with a
/// deadline) until it accepts connections. Caddy's own state goes under `dir`.
fn start_caddy(dir: &Path, billstack: &str, upstream: &str) -> (Running, String) {
    let port = free_port();
    let (auth, proxy, site) = (
        format!("forward_auth {billstack}"),
        format!("reverse_proxy {upstream}"),
        format!("http://127.0.0.1:{port}"),
    );
    let rewritten = rewrite_example(
        "caddy/Caddyfile",
        &[
            ("forward_auth 127.0.0.1:8080", &auth, "BillStack's address"),
            (
                "reverse_proxy 127.0.0.1:9000",
                &proxy,
                "the upstream's address",
            ),
            ("http://127.0.0.1:8000", &site, "Caddy's address"),
        ],
    );
    let home = dir.join("caddy");
    std::fs::create_dir_all(&home).expect("caddy dir");
    let config = home.join("Caddyfile");
    std::fs::write(&config, rewritten).expect("write Caddyfile");
    let log = home.join("caddy.log");
    let child = Command::new(find_program("caddy", "CADDY", &[], "caddy"))
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
    (Running(child).wait_listening(port, &log), site)
}

#[test]
#[ignore = "needs caddy: .ci/run installs Debian's caddy and runs this"]
fn caddy_forward_auth_allows_refuses_and_passes_the_identity_upstream() {
    let down = ProxyWorld::check_through(start_caddy);
    // BillStack unreachable: an error, never the upstream.
    assert_eq!(down.status, 502, "{down:?}");
}
