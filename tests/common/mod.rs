//! Shared set-up for the black-box tests: run the real `billstack` binary with a temporary
//! data directory, and start `billstack serve` on port 0.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_billstack")
}

/// A `billstack` command against `data_dir`, isolated from the caller's environment and from
/// any `billstack.toml` in the working directory.
pub fn cmd(data_dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BILLSTACK_DATA_DIR", data_dir)
        .env("BILLSTACK_LOG", "warn")
        .current_dir(data_dir.parent().unwrap_or(data_dir));
    c
}

/// Runs a command with `stdin` piped in; returns its output.
pub fn run(mut c: Command, stdin: &str) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn billstack");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
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
pub const CREATED_KEY_FIELDS: [&str; 7] = [
    "id",
    "name",
    "prefix",
    "projectId",
    "scopes",
    "expiresAt",
    "createdAt",
];

/// A running `billstack serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub stderr: mpsc::Receiver<String>,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts the server on 127.0.0.1:0 and waits (with a deadline) for its listening line.
    pub fn start(data_dir: &Path, envs: &[(&str, &str)]) -> Server {
        let mut c = cmd(data_dir);
        // The 10 ms plugin deadline is wall clock; on a busy 2-core CI machine a healthy call can
        // be descheduled that long. Deadlines are tested in tests/decisions.rs; here a generous
        // one keeps HTTP tests about HTTP (a test may still override it).
        c.args(["serve", "--listen", "127.0.0.1:0"])
            .env("BILLSTACK_PLUGIN_DEADLINE_MS", "1000")
            .envs(envs.iter().copied());
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("billstack listening on ") {
                        return Server {
                            child,
                            base: url.trim().to_string(),
                            stderr: rx,
                            data_dir: data_dir.into(),
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
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
