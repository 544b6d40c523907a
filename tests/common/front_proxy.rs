//! Shared by the tests of the proxy examples (`examples/nginx`, `examples/caddy`): a world
//! with a key for every kind of refusal, and the check that a proxy hands each refusal to the
//! client as `/auth/verify` itself gives it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Server, agent, json};

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The program `name`: from the environment variable `var`, else `PATH`, else `extra` (Debian
/// keeps nginx in /usr/sbin, which a non-root `PATH` lacks).
pub fn find_program(name: &str, var: &str, extra: &[&str], package: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed (.ci/run installs Debian's {package} package)")
        })
}

/// An example configuration under `examples/` with each `(from, to, what)` replaced; fails if
/// the example no longer names `what` as `from`.
pub fn rewrite_example(path: &str, replacements: &[(&str, &str, &str)]) -> String {
    let full = format!("{}/../examples/{path}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(&full).expect("the example configuration");
    for (from, to, what) in replacements {
        assert!(
            text.contains(from),
            "examples/{path} no longer names {what} as {from}"
        );
        text = text.replace(from, to);
    }
    text
}

/// A proxy process, killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Waits (with a deadline) until the process accepts connections on `port`; if it exits
    /// first, fails with what it wrote to `log`.
    pub fn wait_listening(mut self, port: u16, log: &Path) -> Running {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("the proxy exited with {status}: {log}");
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self
    }
}

/// Runs nginx (in the foreground, one process) with the configuration `conf` under `prefix`
/// and waits until it listens on `port`.
#[allow(dead_code)]
pub fn run_nginx(prefix: &Path, conf: &str, port: u16) -> Running {
    std::fs::create_dir_all(prefix.join("logs")).expect("logs dir");
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write conf");
    let log = prefix.join("logs/error.log");
    let child = std::process::Command::new(find_program("nginx", "NGINX", &["/usr/sbin"], "nginx"))
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(&log)
        .arg("-g")
        .arg(format!(
            "daemon off; master_process off; pid {};",
            prefix.join("nginx.pid").display()
        ))
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start nginx");
    Running(child).wait_listening(port, &log)
}

/// One answer: status, JSON body, and the headers a client acts on.
#[derive(Debug, PartialEq)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The body, as JSON (a string when it is not JSON).
    pub body: Value,
    /// `WWW-Authenticate`.
    pub challenge: Option<String>,
    /// Whether `Retry-After` was sent.
    pub retry_after: bool,
    /// `RateLimit-Limit`.
    pub rate_limit: Option<String>,
}

fn answer(mut res: ureq::http::Response<ureq::Body>) -> Answer {
    assert!(
        res.headers().get_all("www-authenticate").iter().count() <= 1,
        "one challenge, not two: {:?}",
        res.headers()
    );
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_string())
    };
    let (challenge, retry_after, rate_limit) = (
        header("www-authenticate"),
        header("retry-after").is_some(),
        header("ratelimit-limit"),
    );
    let text = res.body_mut().read_to_string().expect("body");
    Answer {
        status: res.status().as_u16(),
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        challenge,
        retry_after,
        rate_limit,
    }
}

/// Team A (projects proj_a and proj_a2) with a key limited to proj_a and `customers:read`, a
/// read-only key and a key allowed one request a day; team B, whose policy traps on every call
/// (503 `policy_error`), with a key; the server running, trusting loopback proxies.
pub struct ProxyWorld {
    /// Holds the data directory and the proxies' files.
    dir: tempfile::TempDir,
    /// `billstack serve`, trusting loopback proxies.
    server: Server,
    /// A key of team A limited to project proj_a and `customers:read`: (raw key, id).
    project_key: (String, String),
    reader: String,
    metered: String,
    broken: String,
}

const A: &str = "/api/billstack/teams/team_a/projects/proj_a";
const B: &str = "/api/billstack/teams/team_b/projects/proj_b";

impl ProxyWorld {
    /// Builds it.
    fn new() -> ProxyWorld {
        let (dir, data) = super::teams_with_projects(&[
            ("team_a", "proj_a"),
            ("team_a", "proj_a2"),
            ("team_b", "proj_b"),
        ]);
        super::create_user(
            &data,
            "owner@b.test",
            "owner-password-b1",
            "team_b",
            "owner",
        );
        // (raw key, id) of a new key of `team` with the extra `key create` options.
        let key = |team: &str, extra: &[&str]| {
            let mut args = vec!["key", "create", "--team", team, "--name", "k"];
            args.extend_from_slice(extra);
            let created = json(&data, &args);
            let field = |v: &Value| v.as_str().expect("string").to_string();
            (field(&created["rawKey"]), field(&created["key"]["id"]))
        };
        let (reader, _) = key("team_a", &["--scope", "customers:read"]);
        let (metered, _) = key("team_a", &["--rate-limit", "1/86400"]);
        let (broken, _) = key("team_b", &[]);
        let project_key = key(
            "team_a",
            &["--project", "proj_a", "--scope", "customers:read"],
        );
        let server = Server::start(&data, &[("BILLSTACK_TRUSTED_PROXIES", "127.0.0.0/8")]);
        let cookie = super::sign_in(&server.base, "owner@b.test", "owner-password-b1");
        let res = agent()
            .put(&server.url("/api/billstack/teams/team_b/policy"))
            .header("Cookie", &cookie)
            .header("Origin", &server.base)
            .header("Content-Type", "application/wasm")
            .send(&billstack_test_artifacts::read(billstack_test_artifacts::PANIC)[..])
            .expect("upload");
        assert_eq!(res.status(), 200, "team B's trapping policy");
        ProxyWorld {
            dir,
            server,
            project_key,
            reader,
            metered,
            broken,
        }
    }

    fn via(front: &str, method: &str, path: &str, key: Option<&str>) -> Answer {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{front}{path}"));
        if let Some(k) = key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        answer(agent().run(req.body(()).expect("request")).expect("proxy"))
    }

    fn direct(&self, method: &str, path: &str, key: Option<&str>) -> Answer {
        let mut req = agent()
            .get(&self.server.url("/auth/verify"))
            .header("X-Forwarded-Method", method)
            .header("X-Forwarded-Uri", path);
        if let Some(k) = key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        answer(req.call().expect("door"))
    }

    /// Through the proxy at `front` (whose upstream is an [`super::echo_upstream`]): an allowed
    /// request reaches the upstream with the key's identity, not the key, and a client's forged
    /// identity headers never do; the key is refused on its team's other project.
    fn check_allow(&self, front: &str) {
        let (raw, key_id) = &self.project_key;
        let path = format!("{A}/customers?limit=5");
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
        // A key for all the team's projects: no project header at all, whatever the client
        // sent (Caddy 2.6 would otherwise copy its own unexpanded placeholder).
        let mut res = agent()
            .get(&format!("{front}{path}"))
            .header("Authorization", &format!("Bearer {}", self.reader))
            .header("X-BillStack-Project-Id", "proj_forged")
            .call()
            .expect("allowed");
        assert_eq!(res.status(), 200);
        let echoed: Value = res.body_mut().read_json().expect("echo");
        let headers = &echoed["headers"];
        assert_eq!(headers["x-billstack-team-id"], "team_a", "{headers}");
        assert!(headers.get("x-billstack-project-id").is_none(), "{headers}");
        let other = Self::via(
            front,
            "GET",
            "/api/billstack/teams/team_a/projects/proj_a2/customers",
            Some(raw),
        );
        assert_eq!(other.status, 403, "{other:?}");
        assert_eq!(other.body["error"]["code"], "project_mismatch");
    }

    /// Through the proxy at `front`: 400, 401, 403, 404, 429 and 503 arrive as the door gives
    /// them (status, JSON body, challenge, Retry-After, RateLimit-Limit).
    fn check_refusals(&self, front: &str) {
        // The metered key's one request of the day is allowed; the next is over its budget.
        let first = Self::via(front, "GET", &format!("{A}/customers"), Some(&self.metered));
        assert_eq!(first.status, 200, "{first:?}");
        let bad = format!("bs_{}", "0".repeat(48));
        let cases: Vec<(u16, &str, String, Option<&str>)> = vec![
            (401, "GET", format!("{A}/customers"), None),
            (401, "GET", format!("{A}/customers"), Some(&bad)),
            (403, "POST", format!("{A}/customers"), Some(&self.reader)),
            (403, "GET", format!("{B}/customers"), Some(&self.reader)),
            (404, "GET", format!("{A}/no-such-route"), Some(&self.reader)),
            (
                400,
                "GET",
                format!("{A}/customers/%2e%2e/x"),
                Some(&self.reader),
            ),
            (429, "GET", format!("{A}/customers"), Some(&self.metered)),
            (503, "GET", format!("{B}/customers"), Some(&self.broken)),
        ];
        for (status, method, path, key) in &cases {
            let through = Self::via(front, method, path, *key);
            let own = self.direct(method, path, *key);
            assert_eq!(through.status, *status, "{method} {path}: {through:?}");
            assert_eq!(
                through, own,
                "{method} {path}: the proxy and the door agree"
            );
            assert!(
                through.body["error"]["code"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty()),
                "{method} {path}: {through:?}"
            );
        }
    }

    /// The whole check of a proxy example: builds the world, starts the proxy with `start`
    /// (given a directory of its own, BillStack's address and an echo upstream's), checks the
    /// allow and every refusal through it, then stops BillStack and returns what the proxy
    /// answers for a request that would have been allowed.
    pub fn check_through(start: impl FnOnce(&Path, &str, &str) -> (Running, String)) -> Answer {
        let world = ProxyWorld::new();
        let billstack = world.server.base.trim_start_matches("http://").to_string();
        let upstream = super::echo_upstream(16);
        let (proxy, front) = start(
            world.dir.path(),
            &billstack,
            upstream.trim_start_matches("http://"),
        );
        world.check_allow(&front);
        world.check_refusals(&front);
        let down = world.stop_and_ask(&front);
        drop(proxy);
        down
    }

    /// Stops BillStack and asks the proxy at `front` for an allowed request.
    fn stop_and_ask(self, front: &str) -> Answer {
        let ProxyWorld {
            server,
            reader,
            dir,
            ..
        } = self;
        drop(server);
        let answer = Self::via(front, "GET", &format!("{A}/customers"), Some(&reader));
        drop(dir);
        answer
    }
}
