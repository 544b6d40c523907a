//! Load (issue 8): 1,000 concurrent keep-alive connections of mixed traffic — forward-auth
//! decisions, key creations and key listings — against the real server. No 5xx may come back,
//! no connection may be dropped, and the server's memory must stay bounded (its peak RSS is
//! reported). `BILLSTACK_LOAD_SECONDS` sets the length: `.ci/run` uses the default 10 s, the
//! documented full run uses 60.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, create_user, json};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

const CONNECTIONS: usize = 1_000;

/// The server's peak resident set (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("proc status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_thousand_connections_of_mixed_traffic_get_no_5xx_and_none_is_dropped() {
    let seconds: u64 = std::env::var("BILLSTACK_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Scripts make the directory; only `serve` creates a missing one.
    std::fs::create_dir(&data).expect("mkdir data");
    json(
        &data,
        &["team", "create", "--name", "Load", "--id", "team_a"],
    );
    json(
        &data,
        &[
            "project", "create", "--team", "team_a", "--name", "Web", "--id", "proj_a",
        ],
    );
    create_user(
        &data,
        "owner@load.test",
        "load-password-12",
        "team_a",
        "owner",
    );
    let raw = json(
        &data,
        &["key", "create", "--team", "team_a", "--name", "load"],
    )["rawKey"]
        .as_str()
        .expect("raw")
        .to_string();
    let server = Server::start(&data, &[("BILLSTACK_LOG", "error")]);
    let pid = server.child.id();
    let addr = server.base.trim_start_matches("http://").to_string();
    let cookie = common::sign_in(&server.base, "owner@load.test", "load-password-12");
    let idle_rss = peak_rss_kib(pid);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let statuses = Arc::new(std::sync::Mutex::new(BTreeMap::<u16, usize>::new()));
    let dropped = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    runtime.block_on(async {
        let mut tasks = Vec::with_capacity(CONNECTIONS);
        for c in 0..CONNECTIONS {
            let (addr, raw, cookie, statuses, dropped) = (
                addr.clone(),
                raw.clone(),
                cookie.clone(),
                Arc::clone(&statuses),
                Arc::clone(&dropped),
            );
            tasks.push(tokio::spawn(async move {
                let stream = match tokio::net::TcpStream::connect(&addr).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        eprintln!("connection {c} not made: {e}");
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                let Ok((mut sender, conn)) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
                else {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                tokio::spawn(conn);
                let mut local: BTreeMap<u16, usize> = BTreeMap::new();
                let mut i = c;
                while Instant::now() < deadline {
                    i += 1;
                    // 90 % decisions, 5 % creations, 5 % listings.
                    let request = match i % 20 {
                        0 => hyper::Request::post("/api/billstack/teams/team_a/api-keys")
                            .header("host", &addr)
                            .header("cookie", &cookie)
                            .header("origin", format!("http://{addr}"))
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(format!(
                                "{{\"name\":\"load {c} {i}\"}}"
                            )))),
                        1 => hyper::Request::get("/api/billstack/teams/team_a/api-keys")
                            .header("host", &addr)
                            .header("cookie", &cookie)
                            .body(Full::new(Bytes::new())),
                        _ => hyper::Request::get("/auth/verify")
                            .header("host", &addr)
                            .header("authorization", format!("Bearer {raw}"))
                            .header("x-forwarded-method", "GET")
                            .header(
                                "x-forwarded-uri",
                                "/api/billstack/teams/team_a/projects/proj_a/customers",
                            )
                            .body(Full::new(Bytes::new())),
                    }
                    .expect("request");
                    // The connection takes the next request once the last one is fully done.
                    if let Err(e) = sender.ready().await {
                        eprintln!("connection {c} closed: {e:?}");
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    match sender.send_request(request).await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            if let Err(e) = response.into_body().collect().await {
                                eprintln!("connection {c} dropped mid-body: {e:?}");
                                dropped.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            *local.entry(status).or_default() += 1;
                        }
                        Err(e) => {
                            eprintln!("connection {c} dropped: {e:?}");
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
                let mut all = statuses.lock().expect("lock");
                for (status, n) in local {
                    *all.entry(status).or_default() += n;
                }
            }));
        }
        for task in tasks {
            task.await.expect("connection task");
        }
    });
    let peak_rss = peak_rss_kib(pid);
    let statuses = statuses.lock().expect("lock").clone();
    let total: usize = statuses.values().sum();
    let dropped = dropped.load(Ordering::Relaxed);
    println!(
        "load: {CONNECTIONS} connections for {seconds} s: {total} requests ({:.0}/s), statuses \
         {statuses:?}, {dropped} dropped; server RSS {} MiB idle, {} MiB peak",
        total as f64 / seconds as f64,
        idle_rss / 1024,
        peak_rss / 1024
    );
    assert_eq!(dropped, 0, "dropped connections");
    assert!(
        statuses.keys().all(|s| *s < 500),
        "5xx answers: {statuses:?}"
    );
    assert!(
        statuses.keys().all(|s| matches!(s, 200 | 201)),
        "{statuses:?}"
    );
    assert!(
        total > CONNECTIONS,
        "every connection made requests: {total}"
    );
    // Bounded: 1,000 connections and thousands of new keys fit in a few hundred MiB.
    assert!(peak_rss < 512 * 1024, "peak RSS {} MiB", peak_rss / 1024);
    assert_eq!(server.stop().code(), Some(0));
}
