//! The HTTP API as the black-box tests use it: a signed-in dashboard session, and the three
//! front doors. One definition of each, shared by every test file.

use serde_json::{Value, json};

use super::{Server, agent, agent_with_timeout, session_cookie};

/// A signed-in dashboard user of a running server.
pub struct Dashboard<'a> {
    /// The server.
    pub server: &'a Server,
    /// The `Cookie` header value (`billstack_session=…`).
    pub cookie: String,
}

/// Signs in as `(email, password)`, failing the test unless it succeeds as that account.
pub fn login<'a>(server: &'a Server, (email, password): (&str, &str)) -> Dashboard<'a> {
    let mut res = agent()
        .post(&server.url("/api/auth/login"))
        .send_json(json!({"email": email, "password": password}))
        .expect("login");
    assert_eq!(res.status(), 200, "sign-in of {email}");
    let cookie = session_cookie(&res);
    let body: Value = res.body_mut().read_json().expect("json");
    assert_eq!(body["user"]["email"], email);
    Dashboard { server, cookie }
}

/// Status and JSON body (`Null` when there is none) of an answer.
fn answer(res: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut res = res.expect("request");
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

impl Dashboard<'_> {
    /// `GET`, `DELETE`, `POST` (JSON body, or none) or `PATCH` with the session, and this server's
    /// Origin on state changes.
    pub fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let http = agent();
        let url = self.server.url(path);
        let origin = self.server.base.clone();
        answer(match method {
            "GET" => http.get(&url).header("Cookie", &self.cookie).call(),
            "DELETE" => http
                .delete(&url)
                .header("Cookie", &self.cookie)
                .header("Origin", &origin)
                .call(),
            "POST" => {
                let req = http
                    .post(&url)
                    .header("Cookie", &self.cookie)
                    .header("Origin", &origin);
                match body {
                    Some(b) => req.send_json(b),
                    None => req.send_empty(),
                }
            }
            "PATCH" => http
                .patch(&url)
                .header("Cookie", &self.cookie)
                .header("Origin", &origin)
                .send_json(body.unwrap_or(Value::Null)),
            other => panic!("method {other}"),
        })
    }

    /// Creates a key in `team`.
    pub fn create_key(&self, team: &str, body: Value) -> (u16, Value) {
        self.send(
            "POST",
            &format!("/api/billstack/teams/{team}/api-keys"),
            Some(body),
        )
    }

    /// Creates a key named `k` with `scopes` in `team`; returns the raw key.
    pub fn key(&self, team: &str, scopes: &[&str]) -> String {
        let (status, body) = self.create_key(team, json!({"name": "k", "scopes": scopes}));
        assert_eq!(status, 201, "{body}");
        body["rawKey"].as_str().expect("raw").to_string()
    }

    /// Uploads a policy to `team` with `content_type`.
    pub fn upload(&self, team: &str, content_type: &str, bytes: &[u8]) -> (u16, Value) {
        // Validation compiles the component: seconds for a big (JavaScript) plugin on a busy
        // machine, and the server allows it minutes.
        answer(
            agent_with_timeout(std::time::Duration::from_secs(300))
                .put(
                    &self
                        .server
                        .url(&format!("/api/billstack/teams/{team}/policy")),
                )
                .header("Cookie", &self.cookie)
                .header("Origin", &self.server.base)
                .header("Content-Type", content_type)
                .send(bytes),
        )
    }

    /// Sends only the headers of an upload of `len` bytes and returns the status line and body
    /// of the answer: a server that refuses by size must not need the body.
    pub fn announce_upload(&self, team: &str, len: usize) -> (String, String) {
        use std::io::{Read, Write};
        let addr = self.server.base.trim_start_matches("http://").to_string();
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        write!(
            stream,
            "PUT /api/billstack/teams/{team}/policy HTTP/1.1\r\nHost: {addr}\r\nOrigin: {}\r\nCookie: {}\r\n\
             Content-Type: application/wasm\r\nContent-Length: {len}\r\n\r\n",
            self.server.base, self.cookie
        )
        .expect("send headers");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("}}") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&answer).to_string();
        let status = text.lines().next().unwrap_or_default().to_string();
        (status, text)
    }

    /// Resets `team` to the deployment default policy.
    pub fn reset(&self, team: &str) -> (u16, Value) {
        self.send(
            "DELETE",
            &format!("/api/billstack/teams/{team}/policy"),
            None,
        )
    }

    /// `GET …/policy` of `team` (must answer 200).
    pub fn policy(&self, team: &str) -> Value {
        let (status, body) = self.send("GET", &format!("/api/billstack/teams/{team}/policy"), None);
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Forward auth through `http` to the server at `base`: status and JSON body, or the transport
/// error (for tests that load the server until connections fail).
pub fn forward_auth_with(
    http: &ureq::Agent,
    base: &str,
    key: &str,
    method: &str,
    path: &str,
) -> Result<(u16, Value), ureq::Error> {
    let mut res = http
        .get(&format!("{base}/auth/verify"))
        .header("X-Forwarded-Method", method)
        .header("X-Forwarded-Uri", path)
        .header("Authorization", &format!("Bearer {key}"))
        .call()?;
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Forward auth for `key` on `method path`: status and JSON body.
pub fn forward_auth(server: &Server, key: &str, method: &str, path: &str) -> (u16, Value) {
    forward_auth_with(&agent(), &server.base, key, method, path).expect("forward auth")
}

/// JSON verify for `key` on `method path`: its `code` and the whole answer (always a 200).
pub fn json_verify(server: &Server, key: &str, method: &str, path: &str) -> (String, Value) {
    let mut res = agent()
        .post(&server.url("/api/billstack/keys/verify"))
        .send_json(json!({"key": key, "method": method, "path": path}))
        .expect("verify");
    assert_eq!(res.status(), 200);
    let body: Value = res.body_mut().read_json().expect("json");
    (body["code"].as_str().unwrap_or_default().to_string(), body)
}

/// Forward auth, the proxy and JSON verify for one key: each answer's status and headers.
pub fn door_answers(
    server: &Server,
    key: &str,
    method: &str,
    path: &str,
) -> Vec<(u16, ureq::http::HeaderMap, Value)> {
    let http = agent();
    let auth = format!("Bearer {key}");
    let forward = http
        .get(&server.url("/auth/verify"))
        .header("X-Forwarded-Method", method)
        .header("X-Forwarded-Uri", path)
        .header("Authorization", &auth)
        .call()
        .expect("forward auth");
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(server.url(path))
        .header("Authorization", &auth)
        .body(())
        .expect("request");
    let proxied = http.run(request).expect("proxy");
    let verified = http
        .post(&server.url("/api/billstack/keys/verify"))
        .send_json(json!({"key": key, "method": method, "path": path}))
        .expect("verify");
    [forward, proxied, verified]
        .into_iter()
        .map(|mut r| {
            let text = r.body_mut().read_to_string().unwrap_or_default();
            (
                r.status().as_u16(),
                r.headers().clone(),
                serde_json::from_str(&text).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// The three front doors' answers in brief: (forward auth status, proxy status, JSON verify
/// code).
pub fn doors(server: &Server, key: &str, method: &str, path: &str) -> (u16, u16, String) {
    let answers = door_answers(server, key, method, path);
    assert_eq!(answers[2].0, 200, "JSON verify always answers 200");
    (
        answers[0].0,
        answers[1].0,
        answers[2].2["code"].as_str().expect("code").to_string(),
    )
}

/// `/api/billstack/teams/{team}/projects/{project}{rest}`.
pub fn project_path(team: &str, project: &str, rest: &str) -> String {
    format!("/api/billstack/teams/{team}/projects/{project}{rest}")
}

/// The first team of the signed-in account and that team's first project (the bootstrap
/// ones on a fresh deployment), through `get` (a `GET` returning the JSON body).
#[allow(dead_code)]
pub fn first_team_and_project(get: impl Fn(&str) -> Value) -> (String, String) {
    let me = get("/api/auth/me");
    let team = me["teams"][0]["id"].as_str().expect("team").to_string();
    let projects = get(&format!("/api/billstack/teams/{team}/projects"));
    let project = projects["projects"][0]["id"]
        .as_str()
        .expect("project")
        .to_string();
    (team, project)
}
