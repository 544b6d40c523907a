//! Shared set-up for the black-box tests: run the real `billstack` binary with a temporary
//! data directory, and start `billstack serve` on port 0.

#![allow(dead_code)]

pub mod api;
pub mod front_proxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_billstack")
}

/// Whether the black-box tests run on PostgreSQL (`BILLSTACK_TEST_BACKEND=postgres`, as
/// `.ci/run` does for a second pass) instead of sled: every command and server of a data
/// directory then uses a database of its own on a cluster of this test process.
pub fn on_postgres() -> bool {
    std::env::var("BILLSTACK_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// The storage setting for `data_dir` on this pass: a database named after the directory on
/// PostgreSQL, nothing on sled.
pub fn storage_for(data_dir: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let cluster = billstack_pg_cluster::PgCluster::for_this_process()
        .expect("BILLSTACK_TEST_BACKEND=postgres needs PostgreSQL installed");
    Some(cluster.database_for(&data_dir.to_string_lossy()))
}

/// A `billstack` command against `data_dir`, isolated from the caller's environment and from
/// any `billstack.toml` in the working directory.
pub fn cmd(data_dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BILLSTACK_DATA_DIR", data_dir)
        .env("BILLSTACK_LOG", "warn")
        // The 10 ms plugin deadline is wall clock, and a loaded 2-core machine can deschedule a
        // healthy `policy check`/`policy test` call for longer; deadlines have their own tests
        // (tests/decisions.rs). A test may still remove or override this.
        .env("BILLSTACK_PLUGIN_DEADLINE_MS", "1000")
        .current_dir(data_dir.parent().unwrap_or(data_dir));
    if let Some(url) = storage_for(data_dir) {
        // Likewise the replica lease (1 s) is wall clock: on the PostgreSQL pass, which tests
        // the API's behaviour, a descheduled poll must not turn into a 503. The lease has its
        // own tests (tests/replicas.rs, tests/postgres.rs), at the default.
        c.env("BILLSTACK_STORAGE", url)
            .env("BILLSTACK_REPLICA_LEASE_MS", "10000");
    }
    c
}

/// Runs a command with `stdin` piped in; returns its output.
pub fn run(mut c: Command, stdin: &str) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let args: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let data_dir = c
        .get_envs()
        .find(|(k, _)| *k == "BILLSTACK_DATA_DIR")
        .and_then(|(_, v)| v.map(PathBuf::from));
    let mut child = c.spawn().expect("spawn billstack");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    // Only `key create` and `key rotate` may print a raw key, and only on stdout.
    let issues_a_key = matches!(
        args.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ["key", "create" | "rotate", ..]
    );
    if !issues_a_key {
        secrets::assert_none(
            &format!("stdout of billstack {args:?}"),
            &String::from_utf8_lossy(&out.stdout),
        );
    }
    secrets::assert_none(
        &format!("stderr of billstack {args:?}"),
        &String::from_utf8_lossy(&out.stderr),
    );
    if let Some(dir) = data_dir {
        secrets::assert_none_in_dir(&dir);
    }
    out
}

/// A new data directory (made, as a script would: only `serve` creates a missing one) holding
/// each `(team, project)`, both created with those ids as names and ids.
pub fn teams_with_projects(pairs: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir data");
    let mut teams = Vec::new();
    for (team, project) in pairs {
        if !teams.contains(team) {
            json(&data, &["team", "create", "--name", team, "--id", team]);
            teams.push(*team);
        }
        json(
            &data,
            &[
                "project", "create", "--team", team, "--name", project, "--id", project,
            ],
        );
    }
    (dir, data)
}

/// Runs `billstack ARGS…` and parses its stdout as JSON, failing the test on a non-zero exit.
pub fn json(data_dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut c = cmd(data_dir);
    c.args(args);
    let out = run(c, "");
    assert!(
        out.status.success(),
        "billstack {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout of {args:?} is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `billstack user create` with the password on stdin, failing the test unless it succeeds;
/// returns the output (the new user as JSON on stdout).
pub fn create_user(data_dir: &Path, email: &str, password: &str, team: &str, role: &str) -> Output {
    let mut c = cmd(data_dir);
    c.args([
        "user",
        "create",
        "--email",
        email,
        "--team",
        team,
        "--role",
        role,
        "--password-stdin",
    ]);
    let out = run(c, &format!("{password}\n"));
    assert!(
        out.status.success(),
        "user create {email}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The fields of a key as create answers it (DESIGN's `CreatedKey.key`), in order.
pub const CREATED_KEY_FIELDS: [&str; 9] = [
    "id",
    "name",
    "prefix",
    "projectId",
    "scopes",
    "expiresAt",
    "createdAt",
    "status",
    "createdBy",
];

/// A running `billstack serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub stderr: mpsc::Receiver<String>,
    pub data_dir: PathBuf,
    /// Every line the server printed, for the secrets check when it is dropped.
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server on 127.0.0.1:0 and waits (with a deadline) for its listening line.
    pub fn start(data_dir: &Path, envs: &[(&str, &str)]) -> Server {
        let mut c = cmd(data_dir);
        // `cmd` sets a generous plugin deadline (a test may still override it). Debug level, so
        // that the secrets check at drop reads everything the server can log.
        c.args(["serve", "--listen", "127.0.0.1:0"])
            .env("BILLSTACK_LOG", "debug")
            .envs(envs.iter().copied());
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                kept.lock().expect("log").push(line.clone());
                // A test that stopped reading still has its lines checked.
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = listening_url(&line) {
                        if on_postgres() {
                            assert!(
                                !data_dir.join("db").exists(),
                                "the server made a sled store on the PostgreSQL pass"
                            );
                        }
                        return Server {
                            child,
                            base: url,
                            stderr: rx,
                            data_dir: data_dir.into(),
                            log,
                        };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("server did not start; stderr:\n{}", seen.join("\n"));
                }
            }
        }
    }

    /// Every line the server has printed on stderr so far, start-up included.
    #[allow(dead_code)]
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits (with a deadline) for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    /// Stops the server, then checks its whole log and its data directory for secrets (see
    /// [`secrets`]), unless the test is already failing.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            return;
        }
        // The reader thread ends at EOF, which the kill above brings; wait for it briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.log) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let log = self.log.lock().expect("log").join("\n");
        secrets::assert_none("the server log", &log);
        secrets::assert_none_in_dir(&self.data_dir);
    }
}

/// The URL of a `billstack listening on URL` line, plain or JSON (`--log-format json`).
pub fn listening_url(line: &str) -> Option<String> {
    if let Some(url) = line.strip_prefix("billstack listening on ") {
        return Some(url.trim().to_string());
    }
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    let message = event["fields"]["message"].as_str()?;
    message
        .starts_with("billstack listening on ")
        .then_some(())?;
    event["fields"]["url"].as_str().map(str::to_owned)
}

/// An HTTP agent that returns 4xx/5xx responses instead of erroring on them.
pub fn agent() -> ureq::Agent {
    agent_with_timeout(Duration::from_secs(30))
}

/// [`agent`] with another overall timeout per request.
pub fn agent_with_timeout(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .middleware(secrets::check_response)
        // No keep-alive. The secrets check reads every body, which would hand each connection
        // back to the pool; but the server may close a connection after refusing a request
        // whose body it did not read (CSRF, say), and a pooled connection reused just then
        // fails with "peer disconnected". Before the check, such bodies went unread and the
        // connections were never reused; this keeps the tests as they were.
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .build()
        .into()
}

/// A minimal upstream on loopback that answers every request with the headers it received, as
/// JSON. Bounded: it serves at most `max` connections, then stops.
pub fn echo_upstream(max: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut headers = serde_json::Map::new();
            let mut content_length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    let k = k.trim().to_ascii_lowercase();
                    if k == "content-length" {
                        content_length = v.trim().parse().unwrap_or(0);
                    }
                    headers.insert(k, serde_json::Value::String(v.trim().to_string()));
                }
            }
            let mut body = vec![0u8; content_length];
            let _ = reader.read_exact(&mut body);
            let reply = serde_json::json!({
                "requestLine": request_line.trim_end(),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            })
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-upstream: echo\r\n\r\n{reply}",
                reply.len()
            );
            // Close gracefully: stop writing, then drain whatever the client still sends (say a
            // chunked body's last chunk) so the kernel does not answer it with a reset that
            // could race the response.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        }
    });
    format!("http://{addr}")
}

/// The `billstack_session=…` pair of a response's `Set-Cookie`, ready for a `Cookie` header.
pub fn session_cookie(res: &ureq::http::Response<ureq::Body>) -> String {
    res.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("cookie")
        .to_string()
}

/// Signs in at `base` (failing the test unless it succeeds); returns the `Cookie` value.
pub fn sign_in(base: &str, email: &str, password: &str) -> String {
    let res = agent()
        .post(&format!("{base}/api/auth/login"))
        .send_json(serde_json::json!({"email": email, "password": password}))
        .expect("login");
    assert_eq!(res.status(), 200, "sign-in of {email}");
    session_cookie(&res)
}

/// A temporary directory with a data directory holding team `team_a` and its project
/// `proj_a`, made offline through the CLI.
pub fn team_with_project() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Scripts make the directory; only `serve` creates a missing one.
    std::fs::create_dir(&data).expect("mkdir data");
    json(
        &data,
        &["team", "create", "--name", "Acme", "--id", "team_a"],
    );
    json(
        &data,
        &[
            "project", "create", "--team", "team_a", "--name", "Web", "--id", "proj_a",
        ],
    );
    (dir, data)
}

/// The suite-wide secrets check (issue 8): no raw API key in any response but the one that
/// issues it (create, rotate), in any CLI output but `key create`/`key rotate` stdout, in any
/// server log line, or anywhere under a server's data directory; no session token in a log or
/// under the data directory either. Every black-box test gets it through [`agent`], [`run`]
/// and [`Server`]'s drop. A raw key is recognised by its shape (`bs_` and 48 lower-case hex
/// digits), so keys the tests make up are caught too; session tokens are recognised by value,
/// from the `Set-Cookie` headers the agent saw.
pub mod secrets {
    use std::path::Path;
    use std::sync::Mutex;

    /// Session tokens seen in `Set-Cookie` answers.
    static SESSION_TOKENS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// The first key-shaped token in `bytes`, if any.
    pub fn find_key(bytes: &[u8]) -> Option<String> {
        let is_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        bytes.windows(51).find_map(|w| {
            (w.starts_with(b"bs_") && w[3..].iter().all(is_hex))
                .then(|| String::from_utf8_lossy(w).into_owned())
        })
    }

    fn leak_in(bytes: &[u8]) -> Option<String> {
        if let Some(key) = find_key(bytes) {
            return Some(format!("raw key {key}"));
        }
        let tokens = SESSION_TOKENS.lock().expect("tokens").clone();
        tokens
            .into_iter()
            .find(|t| bytes.windows(t.len()).any(|w| w == t.as_bytes()))
            .map(|t| format!("session token {t}"))
    }

    /// Fails the test if `text` (named `what`) holds a raw key or a session token, showing the
    /// first line that does.
    pub fn assert_none(what: &str, text: &str) {
        if let Some(leak) = leak_in(text.as_bytes()) {
            let line = text
                .lines()
                .find(|l| leak_in(l.as_bytes()).is_some())
                .unwrap_or(text);
            panic!("{leak} found in {what}: {line}");
        }
    }

    /// Fails the test if any file under `dir` holds a raw key or a session token.
    pub fn assert_none_in_dir(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                assert_none_in_dir(&path);
            } else if let Some(leak) = std::fs::read(&path).ok().and_then(|b| leak_in(&b)) {
                panic!("{leak} found at rest in {}", path.display());
            }
        }
    }

    /// ureq middleware: notes session tokens, notes keys where they may appear, and fails the
    /// test on a raw key anywhere else in a response (status line aside: headers and body).
    pub fn check_response(
        request: ureq::http::Request<ureq::SendBody>,
        next: ureq::middleware::MiddlewareNext,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let response = next.handle(request)?;
        let (parts, body) = response.into_parts();
        for cookie in parts.headers.get_all("set-cookie") {
            let value = cookie.to_str().unwrap_or_default();
            if let Some(token) = value
                .strip_prefix("billstack_session=")
                .and_then(|v| v.split(';').next())
                .filter(|t| !t.is_empty())
            {
                SESSION_TOKENS
                    .lock()
                    .expect("tokens")
                    .push(token.to_owned());
            }
        }
        for (name, value) in &parts.headers {
            if let Some(key) = find_key(value.as_bytes()) {
                panic!("raw key {key} in the {name} header of {method} {path}");
            }
        }
        let mime = body.mime_type().map(str::to_owned);
        let charset = body.charset().map(str::to_owned);
        let bytes = body.into_with_config().limit(u64::MAX).read_to_vec()?;
        let issues_a_key = method == "POST"
            && parts.status.is_success()
            && (path.ends_with("/api-keys") || path.ends_with("/rotate"));
        if let Some(key) = find_key(&bytes).filter(|_| !issues_a_key) {
            panic!(
                "raw key {key} in the answer to {method} {path}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let mut rebuilt = ureq::Body::builder();
        if let Some(mime) = mime {
            rebuilt = rebuilt.mime_type(mime);
        }
        if let Some(charset) = charset {
            rebuilt = rebuilt.charset(charset);
        }
        Ok(ureq::http::Response::from_parts(parts, rebuilt.data(bytes)))
    }
}
