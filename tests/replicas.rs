//! Three `billstack serve` replicas on one PostgreSQL, behind a real nginx load balancer, black
//! box (issue 19, DESIGN.md § Storage backends and replicas): replicas that start together
//! bootstrap once; at least 1,000 revocations while clients hammer every replica, with no
//! request allowed that started after its DELETE answered; and, under traffic, a replica's
//! database connections cut, a frozen link between a replica and the database, a replica
//! SIGKILLed and PostgreSQL itself restarted. Each failure is bounded by the lease (1 s): a
//! replica that cannot confirm the change feed refuses by itself, a DELETE returns within one
//! lease, and everything recovers with no restart. Needs nginx and PostgreSQL, so it is
//! ignored by plain `cargo test`; `.ci/run` runs it. The figures it prints are the ones in
//! docs/performance.md.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use billstack_pg_cluster::PgCluster;
use common::front_proxy::{Running, free_port, run_nginx};
use common::{Server, agent_with_timeout, session_cookie};
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("admin@acme.test", "admin-password-1");
const LEASE: Duration = Duration::from_millis(1_000);
/// How late after a deadline a probe may observe it on a shared, loaded machine: a request is
/// judged by when it *started*, so this only widens what counts as "at once".
const SLACK: Duration = Duration::from_millis(100);

/// The revocations of the race (at least 1,000, as the issue asks; fewer only when
/// `BILLSTACK_TEST_REVOCATIONS` says so, to try a change quickly).
fn revocations() -> usize {
    std::env::var("BILLSTACK_TEST_REVOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

fn http() -> ureq::Agent {
    agent_with_timeout(Duration::from_secs(20))
}

/// Forward auth on `base` for `key`: the status, or 0 when the request failed in transport.
fn verify(http: &ureq::Agent, base: &str, key: &str, path: &str) -> u16 {
    http.get(&format!("{base}/auth/verify"))
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Uri", path)
        .header("Authorization", &format!("Bearer {key}"))
        .call()
        .map_or(0, |mut r| {
            let _ = r.body_mut().read_to_string();
            r.status().as_u16()
        })
}

/// A signed-in admin talking to `base` (a replica or the load balancer; a session is valid on
/// every replica, since sessions live in the database).
struct Admin {
    http: ureq::Agent,
    cookie: String,
}

impl Admin {
    fn login(base: &str) -> Admin {
        let http = http();
        let res = http
            .post(&format!("{base}/api/auth/login"))
            .send_json(json!({"email": ADMIN.0, "password": ADMIN.1}))
            .expect("login");
        assert_eq!(res.status(), 200, "sign-in through {base}");
        Admin {
            cookie: session_cookie(&res),
            http,
        }
    }

    fn send(&self, base: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{base}{path}");
        let res = match method {
            "GET" => self.http.get(&url).header("Cookie", &self.cookie).call(),
            "DELETE" => self
                .http
                .delete(&url)
                .header("Cookie", &self.cookie)
                .header("Origin", base)
                .call(),
            "POST" => self
                .http
                .post(&url)
                .header("Cookie", &self.cookie)
                .header("Origin", base)
                .send_json(body.unwrap_or(Value::Null)),
            "PATCH" => self
                .http
                .patch(&url)
                .header("Cookie", &self.cookie)
                .header("Origin", base)
                .send_json(body.unwrap_or(Value::Null)),
            "PUT_WASM" => {
                self.http
                    .put(&url)
                    .header("Cookie", &self.cookie)
                    .header("Origin", base)
                    .header("Content-Type", "application/wasm")
                    .send(
                        &billstack_test_artifacts::read(
                            billstack_test_artifacts::EXAMPLE_READ_ONLY,
                        )[..],
                    )
            }
            other => panic!("method {other}"),
        };
        let mut res = res.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// nginx balancing over `replicas` (round robin; a replica that fails or answers 503 is
/// skipped for that request, as an operator would configure it).
fn start_nginx(dir: &Path, replicas: &[&str]) -> (Running, String) {
    let port = free_port();
    let servers: String = replicas
        .iter()
        .map(|base| {
            format!(
                "server {} max_fails=1 fail_timeout=1s;\n",
                base.trim_start_matches("http://")
            )
        })
        .collect();
    let conf = format!(
        "worker_processes 1;\nevents {{ worker_connections 1024; }}\nhttp {{\n\
             access_log off;\nupstream billstack {{\n{servers}keepalive 32;\n}}\n\
             server {{\nlisten 127.0.0.1:{port};\nlocation / {{\n\
             proxy_pass http://billstack;\nproxy_http_version 1.1;\n\
             proxy_set_header Connection \"\";\nproxy_set_header Host $http_host;\n\
             proxy_next_upstream error timeout http_503;\nproxy_connect_timeout 1s;\n\
             }}\n}}\n}}\n"
    );
    (
        run_nginx(&dir.join("nginx"), &conf, port),
        format!("http://127.0.0.1:{port}"),
    )
}

/// A TCP link between a replica and PostgreSQL that the test can freeze: while frozen, it
/// holds every connection open and forwards nothing either way, as a network partition that
/// drops packets would.
struct Link {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Link {
    fn start(to: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let shared = Arc::clone(&frozen);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                // As PostgreSQL's clients do: small messages must not wait for Nagle.
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                for (from, into) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    let (Ok(from), Ok(into)) = (from, into) else {
                        continue;
                    };
                    let frozen = Arc::clone(&shared);
                    std::thread::spawn(move || pump(from, into, &frozen));
                }
            }
        });
        Link { port, frozen }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut into: TcpStream, frozen: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        if frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if into.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = into.shutdown(std::net::Shutdown::Both);
}

/// `url` with `application_name` set (so the test can find a replica's connections) and, when
/// given, another port.
fn replica_url(url: &str, name: &str, port: Option<u16>) -> String {
    let mut url = url.to_string();
    if let Some(port) = port {
        let (head, rest) = url.rsplit_once(':').expect("a port");
        let database = rest.split_once('/').expect("a database").1;
        url = format!("{head}:{port}/{database}");
    }
    format!("{url}?application_name={name}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn describe(label: &str, latencies: &mut [Duration]) -> String {
    latencies.sort();
    format!(
        "{label}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        latencies.len(),
        percentile(latencies, 0.5).as_secs_f64() * 1e3,
        percentile(latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    )
}

/// Polls `probe` every 10 ms until it is true, failing after `limit`; returns how long it took.
fn until(what: &str, limit: Duration, mut probe: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if probe() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[ignore = "needs nginx and PostgreSQL: .ci/run installs both and runs this"]
fn three_replicas_behind_nginx_never_allow_a_revoked_key_through_failures() {
    let Some(cluster) = PgCluster::start() else {
        eprintln!("PostgreSQL is not installed: skipped");
        return;
    };
    let revocations = revocations();
    let url = cluster.new_database();
    let database = url.rsplit('/').next().expect("database").to_string();
    let sql = |q: &str| cluster.psql(&database, q);
    let dir = tempfile::tempdir().expect("tempdir");
    // Replica c reaches PostgreSQL through a link the test can freeze.
    let link = Link::start(cluster.port());
    let urls = [
        replica_url(&url, "replica_a", None),
        replica_url(&url, "replica_b", None),
        replica_url(&url, "replica_c", Some(link.port)),
    ];

    // All three start together on the empty database: one bootstrap between them.
    let mut servers: Vec<Option<Server>> = std::thread::scope(|s| {
        let started: Vec<_> = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let data = dir.path().join(format!("replica-{i}"));
                s.spawn(move || {
                    Server::start(
                        &data,
                        &[
                            ("BILLSTACK_STORAGE", url.as_str()),
                            ("BILLSTACK_ADMIN_EMAIL", ADMIN.0),
                            ("BILLSTACK_ADMIN_PASSWORD", ADMIN.1),
                            ("BILLSTACK_UNKNOWN_KEYS_PER_ADDRESS", "1000000"),
                        ],
                    )
                })
            })
            .collect();
        started
            .into_iter()
            .map(|h| Some(h.join().expect("replica started")))
            .collect()
    });
    assert_eq!(sql("SELECT count(*) FROM teams"), "1", "bootstrapped once");
    assert_eq!(sql("SELECT count(*) FROM users"), "1", "bootstrapped once");
    assert_eq!(sql("SELECT count(*) FROM replicas"), "3");
    let bases: Vec<String> = servers
        .iter()
        .map(|s| s.as_ref().expect("running").base.clone())
        .collect();
    let base_refs: Vec<&str> = bases.iter().map(String::as_str).collect();
    let (_nginx, lb) = start_nginx(dir.path(), &base_refs);

    // Every replica is ready (caught up) and says so in its metrics.
    for base in &bases {
        let mut res = http()
            .get(&format!("{base}/readyz"))
            .call()
            .expect("readyz");
        let text = res.body_mut().read_to_string().expect("text");
        assert!(
            text.contains("replica rep_") && text.contains(": ok"),
            "{text}"
        );
        let mut res = http()
            .get(&format!("{base}/metrics"))
            .call()
            .expect("metrics");
        let text = res.body_mut().read_to_string().expect("text");
        assert!(text.contains("billstack_replica_lease_valid 1"), "{text}");
        assert!(text.contains("billstack_replica_lag_changes 0"), "{text}");
    }

    let admin = Admin::login(&lb);
    let (team, project) =
        common::api::first_team_and_project(|path| admin.send(&lb, "GET", path, None).1);
    let keys_path = format!("/api/billstack/teams/{team}/api-keys");
    let target = format!("/api/billstack/teams/{team}/projects/{project}/customers");
    let create = |name: String| -> (String, String) {
        let (status, body) = admin.send(&lb, "POST", &keys_path, Some(json!({ "name": name })));
        assert_eq!(status, 201, "{body}");
        (
            body["key"]["id"].as_str().expect("id").to_string(),
            body["rawKey"].as_str().expect("raw").to_string(),
        )
    };
    let keys: Vec<(String, String)> = (0..revocations).map(|i| create(format!("k{i}"))).collect();

    // The race: clients hammer every replica (directly, and through nginx) with the keys
    // about to be revoked and those just revoked, while the keys are revoked one by one
    // through nginx. A request that started after its key's DELETE answered must be refused.
    let revoked_at: Vec<OnceLock<Instant>> = (0..revocations).map(|_| OnceLock::new()).collect();
    let cursor = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let late_allows = Mutex::new(Vec::new());
    let allowed = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let mut targets: Vec<&str> = base_refs.clone();
    targets.push(&lb);
    let mut delete_latencies = std::thread::scope(|s| {
        for t in 0..6 {
            let (keys, revoked_at, targets) = (&keys, &revoked_at, &targets);
            let (cursor, done, late_allows) = (&cursor, &done, &late_allows);
            let (allowed, refused, target) = (&allowed, &refused, &target);
            s.spawn(move || {
                let http = http();
                let mut n = t;
                while !done.load(Ordering::SeqCst) {
                    n += 1;
                    let i = (cursor.load(Ordering::SeqCst) + n % 4)
                        .saturating_sub(1)
                        .min(revocations - 1);
                    let base = targets[n % targets.len()];
                    let started = Instant::now();
                    let status = verify(&http, base, &keys[i].1, target);
                    if status == 200 {
                        allowed.fetch_add(1, Ordering::Relaxed);
                        if let Some(at) = revoked_at[i].get()
                            && started > *at
                        {
                            late_allows.lock().expect("lock").push(format!(
                                "key {i} allowed by {base}, request started {:?} after its DELETE answered",
                                started - *at
                            ));
                        }
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let mut latencies = Vec::with_capacity(revocations);
        for (i, (id, _)) in keys.iter().enumerate() {
            cursor.store(i, Ordering::SeqCst);
            // Let the clients use the key on every replica before it goes.
            std::thread::sleep(Duration::from_millis(2));
            let sent = Instant::now();
            let (status, body) = admin.send(&lb, "DELETE", &format!("{keys_path}/{id}"), None);
            let answered = Instant::now();
            assert_eq!(status, 204, "{body}");
            revoked_at[i].set(answered).expect("revoked once");
            latencies.push(answered - sent);
        }
        done.store(true, Ordering::SeqCst);
        latencies
    });
    let late = late_allows.into_inner().expect("lock");
    assert!(late.is_empty(), "{} late allows: {late:#?}", late.len());
    let (allowed, refused) = (allowed.into_inner(), refused.into_inner());
    assert!(
        allowed > revocations,
        "the clients' keys were in use: {allowed} allowed, {refused} refused"
    );
    eprintln!(
        "race: {revocations} revocations, {allowed} requests allowed before their DELETE answered, {refused} refused, 0 allowed after"
    );
    eprintln!(
        "{}",
        describe(
            "DELETE through nginx with 3 healthy replicas (revoked → refused on every replica)",
            &mut delete_latencies
        )
    );

    // A key in use on every replica from here on.
    let (_, live) = create("live".into());
    for base in &bases {
        assert_eq!(verify(&http(), base, &live, &target), 200);
    }
    let delete_via = |base: &str| -> Duration {
        let (id, raw) = create("doomed".into());
        for b in &bases {
            // In every replica's cache (a killed replica's answer is 0 and does not matter).
            let _ = verify(&http(), b, &raw, &target);
        }
        let sent = Instant::now();
        let (status, body) = admin.send(base, "DELETE", &format!("{keys_path}/{id}"), None);
        let took = sent.elapsed();
        assert_eq!(status, 204, "{body}");
        for b in &bases {
            let status = verify(&http(), b, &raw, &target);
            assert_ne!(status, 200, "{b} allowed a key revoked through {base}");
        }
        took
    };

    // Disabling (PATCH) and rotating without grace hold across replicas the same way: once
    // the answer is sent, no replica allows the old state.
    let in_use_everywhere = |name: &str| -> (String, String) {
        let (id, raw) = create(name.into());
        for b in &bases {
            assert_eq!(verify(&http(), b, &raw, &target), 200);
        }
        (id, raw)
    };
    let (id, raw) = in_use_everywhere("to disable");
    let (status, body) = admin.send(
        &bases[0],
        "PATCH",
        &format!("{keys_path}/{id}"),
        Some(json!({"enabled": false})),
    );
    assert_eq!(status, 200, "{body}");
    for b in &bases {
        assert_eq!(verify(&http(), b, &raw, &target), 401, "disabled, on {b}");
    }
    let (id, raw) = in_use_everywhere("to rotate");
    let (status, body) = admin.send(
        &bases[1],
        "POST",
        &format!("{keys_path}/{id}/rotate"),
        Some(json!({"gracePeriodSeconds": 0})),
    );
    assert_eq!(status, 201, "{body}");
    let successor = body["rawKey"].as_str().expect("raw").to_string();
    for b in &bases {
        assert_eq!(
            verify(&http(), b, &raw, &target),
            401,
            "rotated out, on {b}"
        );
        assert_eq!(
            verify(&http(), b, &successor, &target),
            200,
            "its successor, on {b}"
        );
    }

    // The same without the clients' load: what a DELETE costs with 3 healthy replicas.
    let mut quiet: Vec<Duration> = (0..200).map(|i| delete_via(&bases[i % 3])).collect();
    eprintln!(
        "{}",
        describe(
            "DELETE on a replica with 3 healthy replicas, no other load",
            &mut quiet
        )
    );

    // A policy uploaded through replica a decides on b and c too (each compiles it off the
    // request path and swaps it in); a reset through b reaches every replica the same way.
    let policy_path = format!("/api/billstack/teams/{team}/policy");
    let write = |base: &str| -> u16 {
        http()
            .get(&format!("{base}/auth/verify"))
            .header("X-Forwarded-Method", "POST")
            .header("X-Forwarded-Uri", &target)
            .header("Authorization", &format!("Bearer {live}"))
            .call()
            .map_or(0, |mut r| {
                let _ = r.body_mut().read_to_string();
                r.status().as_u16()
            })
    };
    for base in &bases {
        assert_eq!(write(base), 200, "full access under the default policy");
    }
    let (status, body) = admin.send(&bases[0], "PUT_WASM", &policy_path, None);
    assert_eq!(status, 200, "{body}");
    let uploaded = Instant::now();
    for base in &bases {
        until(
            "the uploaded policy decides on every replica",
            Duration::from_secs(30),
            || write(base) == 403,
        );
        assert_eq!(
            verify(&http(), base, &live, &target),
            200,
            "reads still pass"
        );
    }
    eprintln!(
        "policy uploaded through replica a: active on all three {:?} later",
        uploaded.elapsed()
    );
    let (status, body) = admin.send(&bases[1], "DELETE", &policy_path, None);
    assert!(status == 200 || status == 204, "{status} {body}");
    for base in &bases {
        until(
            "the reset reaches every replica",
            Duration::from_secs(30),
            || write(base) == 200,
        );
    }

    // A budget of 1,000 requests a minute, spent through all three replicas at once: at most
    // 1.1 × the limit is admitted (docs/deployment.md gives the bound), and at least the limit.
    let (status, body) = admin.send(
        &lb,
        "POST",
        &keys_path,
        Some(json!({"name": "budgeted", "rateLimit": {"limit": 1000, "windowSeconds": 60}})),
    );
    assert_eq!(status, 201, "{body}");
    let budgeted = body["rawKey"].as_str().expect("raw").to_string();
    let minute = |at: std::time::SystemTime| {
        at.duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            / 60
    };
    // The window is the clock's minute: start early in one, so the test stays inside it.
    let now = std::time::SystemTime::now();
    let into_minute = now
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
        % 60.0;
    if into_minute > 30.0 {
        std::thread::sleep(Duration::from_secs_f64(60.0 - into_minute + 0.05));
    }
    let began = std::time::SystemTime::now();
    let sent = AtomicUsize::new(0);
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..6 {
            let (sent, admitted, bases, budgeted, target) =
                (&sent, &admitted, &bases, &budgeted, &target);
            s.spawn(move || {
                let http = http();
                while sent.fetch_add(1, Ordering::SeqCst) < 3_000 {
                    let status = verify(&http, &bases[t % 3], budgeted, target);
                    if status == 200 {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    } else {
                        assert_eq!(status, 429, "over the budget the answer is 429");
                    }
                }
            });
        }
    });
    assert_eq!(
        minute(began),
        minute(std::time::SystemTime::now()),
        "the budget test ran across a minute boundary; it must fit in one window"
    );
    let admitted = admitted.into_inner();
    assert!(
        (1_000..=1_100).contains(&admitted),
        "{admitted} of 3,000 requests admitted for a budget of 1,000 across 3 replicas"
    );
    eprintln!("budget of 1,000 a minute across 3 replicas: {admitted} of 3,000 admitted");

    // Sign-in throttles are shared: five wrong passwords for one account from one address,
    // spread over the replicas, and the sixth try is refused on any of them.
    let sign_in = |base: &str| -> u16 {
        http()
            .post(&format!("{base}/api/auth/login"))
            .send_json(json!({"email": "ghost@acme.test", "password": "not-the-password"}))
            .map_or(0, |mut r| {
                let _ = r.body_mut().read_to_string();
                r.status().as_u16()
            })
    };
    for i in 0..5 {
        assert_eq!(
            sign_in(&bases[i % 3]),
            401,
            "failure {i} is within the limit"
        );
    }
    for base in &bases {
        assert_eq!(sign_in(base), 429, "over the limit on {base}");
    }

    // Replica b's database connections are cut: it reconnects by itself and follows again.
    let cut = sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'replica_b'",
    );
    assert_ne!(cut, "0", "replica b had connections");
    let recovered = until(
        "replica b serves after its connections were cut",
        Duration::from_secs(10),
        || {
            verify(&http(), &bases[1], &live, &target) == 200
                && sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'replica_b'")
                    != "0"
        },
    );
    eprintln!("connections of replica b cut: serving again after {recovered:?}");
    let took = delete_via(&bases[0]);
    eprintln!("DELETE after replica b reconnected: {took:?}");

    // The link between replica c and the database freezes. Replica c must refuse within one
    // lease (judged by when each request started) and a DELETE elsewhere must still return
    // within one lease; when the link thaws, c recovers by itself.
    let (doomed_id, doomed) = create("revoked while c is cut off".into());
    assert_eq!(verify(&http(), &bases[2], &doomed, &target), 200);
    link.freeze(true);
    let frozen_at = Instant::now();
    let deleting = std::thread::spawn({
        let (admin_cookie, path, base) = (
            admin.cookie.clone(),
            format!("{keys_path}/{doomed_id}"),
            bases[0].clone(),
        );
        move || {
            let admin = Admin {
                http: http(),
                cookie: admin_cookie,
            };
            let sent = Instant::now();
            let (status, body) = admin.send(&base, "DELETE", &path, None);
            assert_eq!(status, 204, "{body}");
            sent.elapsed()
        }
    });
    let mut refused_after = None;
    while frozen_at.elapsed() < LEASE * 2 {
        let started = Instant::now();
        let status = verify(&http(), &bases[2], &live, &target);
        if status == 200 {
            assert!(
                started < frozen_at + LEASE + SLACK,
                "replica c allowed {:?} after its link froze (lease {LEASE:?})",
                started - frozen_at
            );
        } else {
            assert_eq!(
                status,
                503,
                "a cut-off replica refuses with 503; its log:\n{}",
                servers[2].as_ref().expect("c").log_text()
            );
            refused_after.get_or_insert(started - frozen_at);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let refused_after = refused_after.expect("replica c refused while cut off");
    let delete_took = deleting.join().expect("delete");
    assert!(
        delete_took < LEASE + Duration::from_millis(500),
        "a DELETE while replica c was cut off took {delete_took:?}"
    );
    assert_ne!(verify(&http(), &bases[2], &doomed, &target), 200);
    link.freeze(false);
    let thawed = until(
        "replica c serves after its link thawed",
        Duration::from_secs(15),
        || verify(&http(), &bases[2], &live, &target) == 200,
    );
    assert_ne!(
        verify(&http(), &bases[2], &doomed, &target),
        200,
        "replica c learned of the revocation it missed"
    );
    eprintln!(
        "frozen link to replica c: refused {refused_after:?} after the freeze; DELETE elsewhere took {delete_took:?}; serving again {thawed:?} after the thaw"
    );

    // Replica c is SIGKILLed under traffic: nginx routes around it, and a DELETE at once
    // returns within one lease (c's heartbeat is fresh until its lease would have ended).
    let traffic_stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, lb, live, target) = (
            Arc::clone(&traffic_stop),
            lb.clone(),
            live.clone(),
            target.clone(),
        );
        std::thread::spawn(move || {
            let http = http();
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            while !stop.load(Ordering::SeqCst) {
                *statuses
                    .entry(verify(&http, &lb, &live, &target))
                    .or_default() += 1;
            }
            statuses
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut killed = servers[2].take().expect("replica c");
    killed.child.kill().expect("SIGKILL");
    let _ = killed.child.wait();
    let mut after_kill = vec![delete_via(&bases[0])];
    for _ in 0..5 {
        after_kill.push(delete_via(&bases[1]));
    }
    assert!(
        after_kill[0] < LEASE + Duration::from_millis(500),
        "a DELETE right after a replica was killed took {:?}",
        after_kill[0]
    );
    traffic_stop.store(true, Ordering::SeqCst);
    let statuses = traffic.join().expect("traffic");
    assert!(statuses.get(&200).copied().unwrap_or(0) > 0, "{statuses:?}");
    eprintln!(
        "replica c SIGKILLed: first DELETE {:?}, then {:?}; traffic through nginx meanwhile: {statuses:?}",
        after_kill[0],
        &after_kill[1..]
    );
    drop(killed);

    // PostgreSQL restarts under traffic: both replicas refuse within one lease, then serve
    // again by themselves, none restarted.
    cluster.kill();
    let stopped = Instant::now();
    let mut refused_by = Vec::new();
    for base in &bases[..2] {
        let mut last_allowed = None;
        until(
            "a replica refuses once the database is gone",
            Duration::from_secs(5),
            || {
                let started = Instant::now();
                let ok = verify(&http(), base, &live, &target) == 200;
                if ok {
                    last_allowed = Some(started - stopped);
                }
                !ok
            },
        );
        if let Some(at) = last_allowed {
            assert!(
                at < LEASE + SLACK,
                "{base} allowed {at:?} after the database stopped"
            );
        }
        refused_by.push(stopped.elapsed());
    }
    cluster.restart();
    let restarted = Instant::now();
    for base in &bases[..2] {
        until(
            "a replica serves again after the database returned",
            Duration::from_secs(15),
            || verify(&http(), base, &live, &target) == 200,
        );
    }
    let back = restarted.elapsed();
    eprintln!(
        "PostgreSQL stopped: both replicas refusing by {:?}; serving again {back:?} after it returned",
        refused_by.last().copied().unwrap_or_default()
    );

    // Nothing acknowledged was lost: every revoked key is revoked, the live key lives.
    assert_eq!(
        sql("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL AND name = 'live'"),
        "1"
    );
    assert_eq!(
        sql("SELECT count(*) FROM api_keys WHERE name LIKE 'k%' AND revoked_at IS NULL"),
        "0"
    );
    // What confirmation costs: the same DELETEs with replica a alone (b stopped cleanly, so it
    // left the table; c's row is stale, so no one waits for it).
    let b = servers[1].take().expect("replica b");
    assert_eq!(b.stop().code(), Some(0));
    let mut alone: Vec<Duration> = (0..100).map(|_| delete_via(&bases[0])).collect();
    eprintln!(
        "{}",
        describe("DELETE on a replica alone, no other load", &mut alone)
    );
    for server in servers.into_iter().flatten() {
        assert_eq!(server.stop().code(), Some(0));
    }
    assert_eq!(
        sql("SELECT count(*) FROM replicas"),
        "1",
        "replicas that stop cleanly leave the table; the killed one's row stays until pruned"
    );
}
