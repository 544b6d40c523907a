//! `examples/nginx/nginx.conf` in front of the real binary, with a real nginx: the allow with
//! the identity headers at the upstream (forged ones dropped), and every refusal as the door
//! itself gives it. Needs nginx (with the auth_request module, as Debian's has), so it is
//! ignored by plain `cargo test`; `.ci/run` installs nginx and runs it.

mod common;

use std::path::Path;

use common::front_proxy::{ProxyWorld, Running, free_port, rewrite_example, run_nginx};

/// Starts nginx with the example configuration, its three addresses rewritten; waits (with a
/// deadline) until it accepts connections.
fn start_nginx(dir: &Path, billstack: &str, upstream: &str) -> (Running, String) {
    let port = free_port();
    let listen = format!("listen 127.0.0.1:{port}");
    let rewritten = rewrite_example(
        "nginx/nginx.conf",
        &[
            ("127.0.0.1:8080", billstack, "BillStack's address"),
            ("127.0.0.1:9000", upstream, "the upstream's address"),
            ("listen 127.0.0.1:8000", &listen, "nginx's listen address"),
        ],
    );
    (
        run_nginx(&dir.join("nginx"), &rewritten, port),
        format!("http://127.0.0.1:{port}"),
    )
}

/// Through nginx: the allow with the identity at the upstream (forged identity headers
/// replaced, the key not forwarded); every refusal (400, 401, 403, 404, 429, 503) with
/// BillStack's own status, JSON body and headers, not nginx's 500; and a BillStack that cannot
/// be reached is a 503, never an allow.
#[test]
#[ignore = "needs nginx: .ci/run installs Debian's nginx and runs this"]
fn nginx_auth_request_allows_and_passes_every_refusal_through_as_billstack_gave_it() {
    let down = ProxyWorld::check_through(start_nginx);
    // BillStack unreachable: an error, never the upstream.
    assert_eq!(down.status, 503, "{down:?}");
    assert_eq!(down.body["error"]["code"], "auth_unavailable");
}
