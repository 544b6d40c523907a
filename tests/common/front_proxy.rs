//! Shared by the tests of the proxy examples (`examples/nginx`, `examples/caddy`): a world
//! with a key for every kind of refusal, and the check that a proxy hands each refusal to the
//! client as `/auth/verify` itself gives it.

use std::net::TcpListener;

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

/// Team A with a read-only key and a key allowed one request a day; team B, whose policy traps
/// on every call (503 `policy_error`), with a key; the server running.
pub struct RefusalWorld {
    /// Holds the data directory and the proxies' files.
    pub dir: tempfile::TempDir,
    /// `billstack serve`, trusting loopback proxies.
    pub server: Server,
    /// A key of team A limited to project proj_a and `customers:read`: (raw key, id).
    pub project_key: (String, String),
    reader: String,
    metered: String,
    broken: String,
}

const A: &str = "/api/billstack/teams/team_a/projects/proj_a";
const B: &str = "/api/billstack/teams/team_b/projects/proj_b";

impl RefusalWorld {
    /// Builds it.
    pub fn new() -> RefusalWorld {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir data");
        for (team, project) in [("team_a", "proj_a"), ("team_b", "proj_b")] {
            json(&data, &["team", "create", "--name", team, "--id", team]);
            json(
                &data,
                &[
                    "project", "create", "--team", team, "--name", project, "--id", project,
                ],
            );
        }
        super::create_user(
            &data,
            "owner@b.test",
            "owner-password-b1",
            "team_b",
            "owner",
        );
        let key = |team: &str, extra: &[&str]| {
            let mut args = vec!["key", "create", "--team", team, "--name", "k"];
            args.extend_from_slice(extra);
            json(&data, &args)["rawKey"]
                .as_str()
                .expect("raw")
                .to_string()
        };
        let reader = key("team_a", &["--scope", "customers:read"]);
        let metered = key("team_a", &["--rate-limit", "1/86400"]);
        let broken = key("team_b", &[]);
        let created = json(
            &data,
            &[
                "key",
                "create",
                "--team",
                "team_a",
                "--name",
                "proxied",
                "--project",
                "proj_a",
                "--scope",
                "customers:read",
            ],
        );
        let project_key = (
            created["rawKey"].as_str().expect("raw").to_string(),
            created["key"]["id"].as_str().expect("id").to_string(),
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
        RefusalWorld {
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

    /// Through the proxy at `front`: 400, 401, 403, 404, 429 and 503 arrive as the door gives
    /// them (status, JSON body, challenge, Retry-After, RateLimit-Limit).
    pub fn check_refusals(&self, front: &str) {
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

    /// Stops BillStack and asks the proxy at `front` for an allowed request.
    pub fn stop_and_ask(self, front: &str) -> Answer {
        let RefusalWorld {
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
