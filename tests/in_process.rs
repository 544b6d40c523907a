//! The router in process: requests go through `tower::ServiceExt::oneshot` into the same
//! `server::router` the binary serves, over a store whose clock the test moves. This is where
//! the handlers' mapping from outcomes to statuses is pinned down, and where everything that
//! depends on time (key expiry, rotation grace periods, session ages, sign-in windows) is
//! tested without waiting for it. The black-box tests (`tests/http.rs`) cover the same routes
//! through the real binary.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use billstack_host::app::accounts::{
    ABSOLUTE_TIMEOUT, FAILURE_WINDOW, IDLE_TIMEOUT, MAX_FAILURES_PER_EMAIL,
};
use billstack_host::app::{App, AppOptions};
use billstack_host::config::{DEFAULT_THROTTLE_WINDOW_SECONDS, DEFAULT_UNKNOWN_KEYS_PER_ADDRESS};
use billstack_host::plugins::DEFAULT_PLUGIN;
use billstack_host::policy::{PolicyEngine, PolicyLimits, PolicySet};
use billstack_host::server::{self, AppState};
use billstack_keystore::clock::{Clock, ManualClock};
use billstack_keystore::storage::*;
use billstack_keystore::{NewUser, Role, Store, StoreOptions};
use serde_json::{Value, json};
use tower::ServiceExt;

const ALICE: (&str, &str) = ("alice@acme.test", "alice-password-1");
const CAROL: (&str, &str) = ("carol@acme.test", "carol-password-1");
const BOB: (&str, &str) = ("bob@globex.test", "bob-password-12");
const CUSTOMERS: &str = "/api/billstack/teams/team_a/projects/proj_a/customers";

/// The services and the router over a fresh store, at a time the test controls.
struct World {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    router: Router,
    runtime: tokio::runtime::Runtime,
}

/// One answer: status, headers, JSON body (`Null` when there is none).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl World {
    /// Team `team_a` (projects `proj_a`, `proj_a2`; Alice owns it and administers the
    /// deployment, Carol is a member) and `team_b` (Bob); the proxy forwards to an echo server.
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::starting_now();
        let store = Store::open_with(
            dir.path().join("data"),
            &StoreOptions {
                clock: clock.clone(),
                ..StoreOptions::default()
            },
        )
        .expect("store");
        for (team, project) in [
            ("team_a", "proj_a"),
            ("team_a", "proj_a2"),
            ("team_b", "proj_b"),
        ] {
            if store.get_team(team).expect("team").is_none() {
                store
                    .create_team(Some(team), team, "test".into())
                    .expect("team");
            }
            store
                .create_project(team, Some(project), project, "test".into())
                .expect("project");
        }
        for ((email, password), team, role) in [
            (ALICE, "team_a", Role::Owner),
            (CAROL, "team_a", Role::Member),
            (BOB, "team_b", Role::Member),
        ] {
            let user = store
                .create_user(
                    &NewUser {
                        email: email.into(),
                        password: password.into(),
                        team_id: team.into(),
                        role,
                    },
                    "test".into(),
                )
                .expect("user");
            if email == ALICE.0 {
                store
                    .set_admin(&user.id, true, "test".into())
                    .expect("admin");
            }
        }
        let engine = PolicyEngine::new(PolicyLimits::default(), Some(dir.path().join("cache")))
            .expect("engine");
        let policies = PolicySet::new(engine.load(DEFAULT_PLUGIN).expect("default policy"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let router = {
            let _entered = runtime.enter();
            let app = Arc::new(App::new(
                Arc::new(store),
                Arc::new(policies),
                engine,
                &AppOptions {
                    unknown_keys_per_address: DEFAULT_UNKNOWN_KEYS_PER_ADDRESS,
                    throttle_window: Duration::from_secs(DEFAULT_THROTTLE_WINDOW_SECONDS),
                },
            ));
            let upstream = common::echo_upstream(1000);
            server::router(Arc::new(AppState::plain(app, Some(upstream))))
        };
        World {
            _dir: dir,
            clock,
            router,
            runtime,
        }
    }

    /// Sends one request from 192.0.2.1, as a browser on this server's pages would (Host and
    /// Origin agree).
    fn send(&self, request: Request<Body>) -> Answer {
        let mut request = request;
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 40000))));
        let headers = request.headers_mut();
        headers.insert(header::HOST, "keys.test".parse().expect("host"));
        let response = self
            .runtime
            .block_on(self.router.clone().oneshot(request))
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = self
            .runtime
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .expect("body");
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// A dashboard request with `cookie` (and this server's Origin for state changes).
    fn call(&self, cookie: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::COOKIE, cookie);
        if method != "GET" {
            builder = builder.header(header::ORIGIN, "http://keys.test");
        }
        let request = match body {
            Some(b) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => builder.body(Body::empty()),
        };
        self.send(request.expect("request"))
    }

    /// Signs in; returns the `Cookie` header value.
    fn login(&self, (email, password): (&str, &str)) -> String {
        let answer = self.sign_in(email, password);
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let set_cookie = answer.headers[header::SET_COOKIE].to_str().expect("ascii");
        set_cookie.split(';').next().expect("pair").to_string()
    }

    fn sign_in(&self, email: &str, password: &str) -> Answer {
        self.send(
            Request::post("/api/auth/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"email": email, "password": password}).to_string(),
                ))
                .expect("request"),
        )
    }

    fn create_key(&self, cookie: &str, body: Value) -> Answer {
        self.call(
            cookie,
            "POST",
            "/api/billstack/teams/team_a/api-keys",
            Some(body),
        )
    }

    /// The three front doors' answers: (forward auth status, proxy status, JSON verify code).
    fn doors(&self, key: &str, path: &str) -> (u16, u16, String) {
        let bearer = format!("Bearer {key}");
        let forward = self.send(
            Request::get("/auth/verify")
                .header("X-Forwarded-Method", "GET")
                .header("X-Forwarded-Uri", path)
                .header(header::AUTHORIZATION, &bearer)
                .body(Body::empty())
                .expect("request"),
        );
        let proxied = self.send(
            Request::get(path)
                .header(header::AUTHORIZATION, &bearer)
                .body(Body::empty())
                .expect("request"),
        );
        let verified = self.send(
            Request::post("/api/billstack/keys/verify")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"key": key, "method": "GET", "path": path}).to_string(),
                ))
                .expect("request"),
        );
        assert_eq!(verified.status, StatusCode::OK);
        (
            forward.status.as_u16(),
            proxied.status.as_u16(),
            verified.body["code"].as_str().expect("code").to_string(),
        )
    }

    fn rfc3339_in(&self, by: Duration) -> String {
        billstack_keystore::clock::format_rfc3339(
            self.clock.now_ms() + i64::try_from(by.as_millis()).expect("ms"),
        )
    }
}

fn valid() -> (u16, u16, String) {
    (200, 200, "VALID".to_string())
}

fn expired() -> (u16, u16, String) {
    (401, 401, "EXPIRED".to_string())
}

#[test]
fn handlers_answer_each_outcome_with_its_status() {
    let w = World::new();
    let keys = "/api/billstack/teams/team_a/api-keys";
    // No session; an API key instead of one.
    let none = w.call("", "GET", keys, None);
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.body["error"]["code"], "unauthenticated");
    let alice = w.login(ALICE);
    // Created (201), shown once, listed (200), revoked (204), then gone (404).
    let created = w.create_key(&alice, json!({"name": "ci", "scopes": ["customers:read"]}));
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["key"]["id"].as_str().expect("id").to_string();
    assert_eq!(w.call(&alice, "GET", keys, None).status, StatusCode::OK);
    let revoke = format!("{keys}/{id}");
    let revoked = w.call(&alice, "DELETE", &revoke, None);
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(revoked.body, Value::Null, "204 has no body");
    let again = w.call(&alice, "DELETE", &revoke, None);
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.body["error"]["code"], "not_found");
    // Validation: 400 naming the API's field (the store's snake_case never leaks).
    for (body, field) in [
        (json!({"name": "x", "scopes": ["nope:never"]}), "scopes"),
        (json!({"name": "x", "expiresAt": "tomorrow"}), "expiresAt"),
        (
            json!({"name": "x", "expiresAt": w.rfc3339_in(Duration::ZERO)}),
            "expiresAt",
        ),
        (
            json!({"name": "x", "rateLimit": {"limit": 0, "windowSeconds": 1}}),
            "rateLimit",
        ),
        (json!({"name": "x", "projectId": "proj_nope"}), "projectId"),
        (json!({"name": " "}), "name"),
    ] {
        let refused = w.create_key(&alice, body.clone());
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(refused.body["error"]["code"], "validation_error", "{body}");
        assert_eq!(refused.body["error"]["field"], field, "{body}");
    }
    // A body must be a JSON object: serde would read `["x"]` as the struct's fields in order.
    for body in [json!(["array-named key"]), json!(null), json!("x")] {
        let refused = w.create_key(&alice, body.clone());
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(refused.body["error"]["code"], "invalid_json", "{body}");
    }
    // Another team's member: 404, so the team's existence is not revealed.
    let bob = w.login(BOB);
    let hidden = w.call(&bob, "GET", keys, None);
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    // A member who is not an owner: 403 for owners' actions.
    let carol = w.login(CAROL);
    let policy = "/api/billstack/teams/team_a/policy";
    assert_eq!(w.call(&carol, "GET", policy, None).status, StatusCode::OK);
    let owners_only = w.call(&carol, "DELETE", policy, None);
    assert_eq!(owners_only.status, StatusCode::FORBIDDEN);
    assert_eq!(owners_only.body["error"]["code"], "forbidden");
    assert_eq!(
        w.call(&alice, "DELETE", policy, None).status,
        StatusCode::OK
    );
    // Not a Wasm body: 415. Not this server's origin: 403. No such route: 404.
    let not_wasm = w.send(
        Request::put(policy)
            .header(header::COOKIE, &alice)
            .header(header::ORIGIN, "http://keys.test")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("hello"))
            .expect("request"),
    );
    assert_eq!(not_wasm.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let cross_site = w.send(
        Request::post(keys)
            .header(header::COOKIE, &alice)
            .header(header::ORIGIN, "http://evil.test")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"name": "x"}).to_string()))
            .expect("request"),
    );
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert_eq!(cross_site.body["error"]["code"], "csrf_rejected");
    let nowhere = w.call(&alice, "GET", "/api/nowhere", None);
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    assert_eq!(nowhere.body["error"]["message"], "no such endpoint");
    // A refusal at a front door: 401 with the RFC 6750 challenge.
    let refused = w.send(
        Request::get("/auth/verify")
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Uri", CUSTOMERS)
            .body(Body::empty())
            .expect("request"),
    );
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"billstack\""
    );
}

/// Moved from `tests/http.rs` (`expired_keys_get_401`), which polled the real clock: a key is
/// valid on every door until its expiry, and expired on every door from that instant on.
#[test]
fn keys_expire_on_every_door_at_their_expiry_instant() {
    let w = World::new();
    let alice = w.login(ALICE);
    let created = w.create_key(
        &alice,
        json!({"name": "brief", "expiresAt": w.rfc3339_in(Duration::from_secs(2))}),
    );
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let raw = created.body["rawKey"].as_str().expect("raw").to_string();
    assert_eq!(w.doors(&raw, CUSTOMERS), valid());
    w.clock.advance(Duration::from_millis(1999));
    assert_eq!(w.doors(&raw, CUSTOMERS), valid(), "a millisecond before");
    w.clock.advance(Duration::from_millis(1));
    assert_eq!(w.doors(&raw, CUSTOMERS), expired(), "at the instant");
    w.clock.advance(Duration::from_secs(3600));
    assert_eq!(w.doors(&raw, CUSTOMERS), expired(), "and ever after");
}

/// Moved from `tests/http.rs` (`rotation_keeps_the_old_key_for_its_grace_period_then_401`),
/// which waited for a two-second grace period to pass.
#[test]
fn a_rotated_key_works_for_its_grace_period_then_expires() {
    let w = World::new();
    let alice = w.login(ALICE);
    let created = w.create_key(
        &alice,
        json!({"name": "rotating", "projectId": "proj_a", "scopes": ["customers:read"]}),
    );
    let old_raw = created.body["rawKey"].as_str().expect("raw").to_string();
    let old_id = created.body["key"]["id"].as_str().expect("id").to_string();
    let rotated = w.call(
        &alice,
        "POST",
        &format!("/api/billstack/teams/team_a/api-keys/{old_id}/rotate"),
        Some(json!({"gracePeriodSeconds": 2})),
    );
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.body);
    let new_raw = rotated.body["rawKey"].as_str().expect("raw").to_string();
    assert_eq!(w.doors(&old_raw, CUSTOMERS), valid());
    assert_eq!(w.doors(&new_raw, CUSTOMERS), valid());
    w.clock.advance(Duration::from_millis(1999));
    assert_eq!(w.doors(&old_raw, CUSTOMERS), valid(), "still in its grace");
    w.clock.advance(Duration::from_millis(1));
    assert_eq!(w.doors(&old_raw, CUSTOMERS), expired(), "its grace is over");
    assert_eq!(w.doors(&new_raw, CUSTOMERS), valid(), "the new key goes on");
}

#[test]
fn sessions_end_when_idle_too_long_or_too_old() {
    let w = World::new();
    let me = "/api/auth/me";
    // Idle: exactly the limit is fine, a millisecond more ends it.
    let alice = w.login(ALICE);
    w.clock.advance(IDLE_TIMEOUT);
    assert_eq!(w.call(&alice, "GET", me, None).status, StatusCode::OK);
    w.clock.advance(IDLE_TIMEOUT + Duration::from_millis(1));
    let ended = w.call(&alice, "GET", me, None);
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED);
    assert!(
        ended.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{}",
        ended.body
    );
    assert_eq!(
        w.call(&alice, "GET", me, None).body["error"]["message"],
        "the session has ended; sign in again",
        "and it is gone"
    );
    // Kept busy, a session still ends at its absolute age.
    let busy = w.login(ALICE);
    let step = IDLE_TIMEOUT / 2;
    let mut age = Duration::ZERO;
    while age + step <= ABSOLUTE_TIMEOUT {
        w.clock.advance(step);
        age += step;
        assert_eq!(
            w.call(&busy, "GET", me, None).status,
            StatusCode::OK,
            "{age:?}"
        );
    }
    w.clock
        .advance(ABSOLUTE_TIMEOUT - age + Duration::from_millis(1));
    assert_eq!(
        w.call(&busy, "GET", me, None).status,
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn failed_sign_ins_are_refused_until_their_window_ends() {
    let w = World::new();
    for _ in 0..MAX_FAILURES_PER_EMAIL {
        let wrong = w.sign_in(ALICE.0, "wrong-password-1");
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
    let limited = w.sign_in(ALICE.0, ALICE.1);
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after <= FAILURE_WINDOW.as_secs() + 1, "{retry_after}");
    w.clock.advance(FAILURE_WINDOW - Duration::from_secs(1));
    assert_eq!(
        w.sign_in(ALICE.0, ALICE.1).status,
        StatusCode::TOO_MANY_REQUESTS,
        "a second before the window ends"
    );
    w.clock.advance(Duration::from_secs(1));
    assert_eq!(w.sign_in(ALICE.0, ALICE.1).status, StatusCode::OK);
}

#[test]
fn every_documented_operation_is_routed() {
    let w = World::new();
    let alice = w.login(ALICE);
    let doc = billstack_host::server::openapi::document();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let concrete = path
            .replace("{teamId}", "team_a")
            .replace("{keyId}", "key_nope")
            .replace("{projectId}", "proj_a")
            .replace("{resource}", "customers");
        for method in item.as_object().expect("item").keys() {
            let method = method.to_ascii_uppercase();
            if !matches!(
                method.as_str(),
                "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" | "TRACE"
            ) {
                continue;
            }
            let answer = w.call(&alice, &method, &concrete, None);
            assert_ne!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed"
            );
            assert_ne!(
                answer.body["error"]["message"], "no such endpoint",
                "{method} {path} is documented but not routed"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} operations");
}

fn cookie_of(answer: &Answer) -> String {
    answer.headers[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_string()
}

#[test]
fn an_owner_invites_a_colleague_who_joins_works_and_is_demoted_then_removed() {
    let w = World::new();
    let alice = w.login(ALICE);
    let members = "/api/billstack/teams/team_a/members";
    let invited = w.call(
        &alice,
        "POST",
        members,
        Some(json!({"email": "Dana@Acme.test", "role": "owner"})),
    );
    assert_eq!(invited.status, StatusCode::CREATED, "{}", invited.body);
    assert_eq!(invited.body["member"]["email"], "dana@acme.test");
    let url = invited.body["inviteUrl"]
        .as_str()
        .expect("a link for a new person");
    assert!(url.starts_with("http://keys.test/#invite="), "{url}");
    let token = url.rsplit('=').next().expect("token").to_string();
    let dana_id = invited.body["member"]["userId"]
        .as_str()
        .expect("id")
        .to_string();
    // Dana cannot sign in before accepting; accepting signs her in, once.
    assert_eq!(
        w.sign_in("dana@acme.test", "dana-password-1").status,
        StatusCode::UNAUTHORIZED
    );
    let accept = |password: &str| {
        w.send(
            Request::post("/api/auth/invitations/accept")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"token": token, "password": password}).to_string(),
                ))
                .expect("request"),
        )
    };
    let short = accept("short");
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert_eq!(short.body["error"]["field"], "password");
    let accepted = accept("dana-password-1");
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert_eq!(accepted.body["teams"][0]["role"], "owner");
    let dana = cookie_of(&accepted);
    let again = accept("dana-password-2");
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.body["error"]["code"], "invalid_invitation");
    // She works in the team.
    let created = w.create_key(&dana, json!({"name": "dana's"}));
    assert_eq!(created.status, StatusCode::CREATED);
    // Inviting her again is a conflict; listing shows both owners.
    let twice = w.call(
        &alice,
        "POST",
        members,
        Some(json!({"email": "dana@acme.test", "role": "member"})),
    );
    assert_eq!(twice.status, StatusCode::CONFLICT);
    let listed = w.call(&dana, "GET", members, None);
    assert_eq!(listed.body["members"].as_array().expect("members").len(), 3);
    // A member may not manage members; a bad role is a 400 naming the field.
    let carol = w.login(CAROL);
    let member_path = format!("{members}/{dana_id}");
    assert_eq!(
        w.call(
            &carol,
            "PATCH",
            &member_path,
            Some(json!({"role": "member"}))
        )
        .status,
        StatusCode::FORBIDDEN
    );
    let bad = w.call(&alice, "PATCH", &member_path, Some(json!({"role": "boss"})));
    assert_eq!(bad.body["error"]["field"], "role");
    // Demoted, then removed: her session loses the team at once.
    let demoted = w.call(
        &alice,
        "PATCH",
        &member_path,
        Some(json!({"role": "member"})),
    );
    assert_eq!(demoted.status, StatusCode::OK);
    assert_eq!(demoted.body["member"]["role"], "member");
    assert_eq!(
        w.call(&dana, "DELETE", "/api/billstack/teams/team_a/policy", None)
            .status,
        StatusCode::FORBIDDEN,
        "a member now"
    );
    assert_eq!(
        w.call(&alice, "DELETE", &member_path, None).status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        w.call(&dana, "GET", "/api/billstack/teams/team_a/api-keys", None)
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        w.call(&dana, "GET", "/api/auth/me", None).body["teams"],
        json!([])
    );
}

#[test]
fn the_last_owner_stays() {
    let w = World::new();
    let alice = w.login(ALICE);
    let me = w.call(&alice, "GET", "/api/auth/me", None);
    let alice_id = me.body["user"]["id"].as_str().expect("id").to_string();
    assert_eq!(me.body["user"]["admin"], true);
    let path = format!("/api/billstack/teams/team_a/members/{alice_id}");
    for (method, body) in [("PATCH", Some(json!({"role": "member"}))), ("DELETE", None)] {
        let refused = w.call(&alice, method, &path, body);
        assert_eq!(refused.status, StatusCode::CONFLICT, "{method}");
        assert_eq!(refused.body["error"]["code"], "last_owner");
    }
    assert_eq!(
        w.call(&alice, "GET", "/api/billstack/teams/team_a/audit-log", None)
            .status,
        StatusCode::OK,
        "still the owner"
    );
}

#[test]
fn a_password_change_needs_the_current_one_and_ends_the_other_sessions() {
    let w = World::new();
    let here = w.login(ALICE);
    let elsewhere = w.login(ALICE);
    let change = |current: &str, new: &str| {
        w.call(
            &here,
            "POST",
            "/api/auth/password",
            Some(json!({"currentPassword": current, "newPassword": new})),
        )
    };
    let wrong = change("not-the-password", "a-new-password-1");
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong.body["error"]["field"], "currentPassword");
    let short = change(ALICE.1, "short-pass1");
    assert_eq!(short.body["error"]["field"], "newPassword", "11 characters");
    assert_eq!(
        w.call(&elsewhere, "GET", "/api/auth/me", None).status,
        StatusCode::OK
    );
    let changed = change(ALICE.1, "a-new-password-1");
    assert_eq!(changed.status, StatusCode::NO_CONTENT);
    let renewed = cookie_of(&changed);
    for old in [&here, &elsewhere] {
        assert_eq!(
            w.call(old, "GET", "/api/auth/me", None).status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        w.call(&renewed, "GET", "/api/auth/me", None).status,
        StatusCode::OK
    );
    assert_eq!(w.sign_in(ALICE.0, ALICE.1).status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        w.sign_in(ALICE.0, "a-new-password-1").status,
        StatusCode::OK
    );
}

#[test]
fn admins_create_teams_and_owners_create_projects() {
    let w = World::new();
    let alice = w.login(ALICE);
    let carol = w.login(CAROL);
    let refused = w.call(
        &carol,
        "POST",
        "/api/billstack/teams",
        Some(json!({"name": "Mine"})),
    );
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "not an administrator"
    );
    let team = w.call(
        &alice,
        "POST",
        "/api/billstack/teams",
        Some(json!({"name": "Labs"})),
    );
    assert_eq!(team.status, StatusCode::CREATED, "{}", team.body);
    let team_id = team.body["team"]["id"].as_str().expect("id").to_string();
    let teams = w.call(&alice, "GET", "/api/auth/me", None).body["teams"].clone();
    assert!(
        teams
            .as_array()
            .expect("teams")
            .iter()
            .any(|t| t["id"] == team_id.as_str() && t["role"] == "owner"),
        "{teams}"
    );
    let projects = format!("/api/billstack/teams/{team_id}/projects");
    let made = w.call(&alice, "POST", &projects, Some(json!({"name": "Web"})));
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert_eq!(made.body["project"]["name"], "Web");
    let listed = w.call(&alice, "GET", &projects, None);
    assert_eq!(listed.body["projects"][0]["name"], "Web");
    assert_eq!(
        w.call(
            &carol,
            "POST",
            "/api/billstack/teams/team_a/projects",
            Some(json!({"name": "X"}))
        )
        .status,
        StatusCode::FORBIDDEN,
        "members do not make projects"
    );
    let blank = w.call(&alice, "POST", &projects, Some(json!({"name": " "})));
    assert_eq!(blank.body["error"]["field"], "name");
}

#[test]
fn owners_rename_projects_and_delete_only_unused_ones_while_keys_still_proxy_below_them() {
    let w = World::new();
    let alice = w.login(ALICE);
    let root = "/api/billstack/teams/team_a/projects/proj_a2";
    let renamed = w.call(&alice, "PATCH", root, Some(json!({"name": "Storefront"})));
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["project"]["name"], "Storefront");
    let carol = w.login(CAROL);
    assert_eq!(
        w.call(&carol, "PATCH", root, Some(json!({"name": "Mine"})))
            .status,
        StatusCode::FORBIDDEN
    );
    let scoped = w.create_key(&alice, json!({"name": "scoped", "projectId": "proj_a2"}));
    let key_id = scoped.body["key"]["id"].as_str().expect("id").to_string();
    let raw = scoped.body["rawKey"].as_str().expect("raw").to_string();
    // Below the project root, requests are still proxied for the key.
    let (forward, proxied, _) = w.doors(&raw, &format!("{root}/customers"));
    assert_eq!((forward, proxied), (200, 200));
    let in_use = w.call(&alice, "DELETE", root, None);
    assert_eq!(in_use.status, StatusCode::CONFLICT);
    assert_eq!(in_use.body["error"]["code"], "project_in_use");
    assert_eq!(
        w.call(
            &alice,
            "DELETE",
            &format!("/api/billstack/teams/team_a/api-keys/{key_id}"),
            None
        )
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        w.call(&alice, "DELETE", root, None).status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        w.call(&alice, "DELETE", root, None).status,
        StatusCode::NOT_FOUND
    );
    let listed = w.call(&alice, "GET", "/api/billstack/teams/team_a/projects", None);
    assert_eq!(
        listed.body["projects"].as_array().expect("projects").len(),
        1
    );
}

/// DESIGN.md § Key life cycle: a PATCH holds on every front door from the moment its 200 is
/// sent, even for a key the decision path has cached.
#[test]
fn a_key_change_holds_on_every_door_from_its_answer_on() {
    let w = World::new();
    let alice = w.login(ALICE);
    let created = w.create_key(
        &alice,
        json!({"name": "ci", "scopes": ["customers:read"], "expiresAt": w.rfc3339_in(Duration::from_secs(30 * 24 * 3600))}),
    );
    let raw = created.body["rawKey"].as_str().expect("raw").to_string();
    let id = created.body["key"]["id"].as_str().expect("id").to_string();
    assert_eq!(created.body["key"]["status"], "active");
    let path = format!("/api/billstack/teams/team_a/api-keys/{id}");
    let patch = |body: Value| w.call(&alice, "PATCH", &path, Some(body));
    assert_eq!(w.doors(&raw, CUSTOMERS), valid(), "warm in every cache");
    // Switched off: refused like a revoked key; JSON verify says DISABLED.
    let off = patch(json!({"enabled": false}));
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    assert_eq!(off.body["key"]["status"], "disabled");
    assert_eq!(w.doors(&raw, CUSTOMERS), (401, 401, "DISABLED".to_string()));
    assert_eq!(
        patch(json!({"enabled": true})).body["key"]["status"],
        "active"
    );
    assert_eq!(w.doors(&raw, CUSTOMERS), valid());
    // New scopes: the old route needs a scope the key no longer has, at once.
    let scoped = patch(json!({"scopes": ["products:read"], "name": "products only"}));
    assert_eq!(scoped.body["key"]["name"], "products only");
    assert_eq!(
        w.doors(&raw, CUSTOMERS),
        (403, 403, "INSUFFICIENT_SCOPE".to_string())
    );
    // A budget, then none (null clears); an expiry, then none.
    let budget = patch(json!({"rateLimit": {"limit": 1, "windowSeconds": 60}, "scopes": []}));
    assert_eq!(budget.body["key"]["rateLimit"]["limit"], 1);
    let (first, _, _) = w.doors(&raw, CUSTOMERS);
    assert_eq!(first, 200);
    assert_eq!(w.doors(&raw, CUSTOMERS).0, 429, "over the new budget");
    let unlimited = patch(json!({"rateLimit": null, "expiresAt": null}));
    assert!(
        unlimited.body["key"].get("rateLimit").is_none(),
        "{}",
        unlimited.body
    );
    assert_eq!(unlimited.body["key"]["expiresAt"], Value::Null);
    assert_eq!(w.doors(&raw, CUSTOMERS), valid());
    // Expiring within a week shows as expiring.
    let soon = patch(json!({"expiresAt": w.rfc3339_in(Duration::from_secs(3600))}));
    assert_eq!(soon.body["key"]["status"], "expiring");
    // Refusals name the field and change nothing.
    for (body, field) in [
        (json!({"scopes": ["nope:never"]}), "scopes"),
        (json!({"name": ""}), "name"),
        (json!({"expiresAt": "soon"}), "expiresAt"),
        (
            json!({"expiresAt": w.rfc3339_in(Duration::ZERO)}),
            "expiresAt",
        ),
        (
            json!({"rateLimit": {"limit": 0, "windowSeconds": 1}}),
            "rateLimit",
        ),
    ] {
        let refused = patch(body.clone());
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(refused.body["error"]["field"], field, "{body}");
    }
    assert_eq!(w.doors(&raw, CUSTOMERS), valid());
    let bob = w.login(BOB);
    assert_eq!(
        w.call(&bob, "PATCH", &path, Some(json!({"enabled": false})))
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(w.doors(&raw, CUSTOMERS), valid());
}

/// The keys of one list call (ids), and its `nextCursor`.
fn page_of(answer: &Answer) -> (Vec<String>, Option<String>) {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let ids = answer.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["id"].as_str().expect("id").to_string())
        .collect();
    (ids, answer.body["nextCursor"].as_str().map(str::to_string))
}

#[test]
fn the_key_list_pages_filters_and_searches_newest_first() {
    let w = World::new();
    let alice = w.login(ALICE);
    let mut created = Vec::new();
    for (name, project, expires_in_days) in [
        ("Production web", Some("proj_a"), None),
        ("CI runner", None, Some(3)),
        ("Staging web", Some("proj_a2"), Some(60)),
        ("Batch jobs", None, None),
        ("production worker", Some("proj_a"), Some(1)),
    ] {
        w.clock.advance(Duration::from_millis(5));
        let mut body = json!({"name": name, "projectId": project});
        if let Some(days) = expires_in_days {
            body["expiresAt"] = json!(w.rfc3339_in(Duration::from_secs(days * 24 * 3600)));
        }
        let answer = w.create_key(&alice, body);
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        created.push(answer.body["key"].clone());
    }
    let id = |i: usize| created[i]["id"].as_str().expect("id").to_string();
    let alice = std::cell::RefCell::new(alice);
    let list = |query: &str| {
        w.call(
            &alice.borrow(),
            "GET",
            &format!("/api/billstack/teams/team_a/api-keys{query}"),
            None,
        )
    };

    // Newest first, two at a time, to the end and no further.
    let (first, cursor) = page_of(&list("?limit=2"));
    assert_eq!(first, [id(4), id(3)]);
    let cursor = cursor.expect("a next page");
    let (second, cursor) = page_of(&list(&format!("?limit=2&cursor={cursor}")));
    assert_eq!(second, [id(2), id(1)]);
    let (third, cursor) = page_of(&list(&format!("?limit=2&cursor={}", cursor.expect("more"))));
    assert_eq!((third, cursor), (vec![id(0)], None));
    // The default page holds them all, and says who made each.
    let all = list("");
    assert_eq!(page_of(&all), ((0..5).rev().map(id).collect(), None));
    let alice_id = all.body["keys"][0]["createdBy"]["userId"]
        .as_str()
        .expect("created by an account")
        .to_string();
    assert!(alice_id.starts_with("user_"));
    assert_eq!(
        all.body["keys"][0]["createdBy"],
        json!({"userId": alice_id, "email": ALICE.0})
    );

    // Filters and search, alone and together.
    assert_eq!(page_of(&list("?projectId=proj_a")).0, [id(4), id(0)]);
    assert_eq!(page_of(&list("?status=expiring")).0, [id(4), id(1)]);
    assert_eq!(page_of(&list("?status=active")).0, [id(3), id(2), id(0)]);
    assert_eq!(page_of(&list("?q=PRODUCTION")).0, [id(4), id(0)]);
    assert_eq!(page_of(&list("?q=production&status=active")).0, [id(0)]);
    let prefix = created[3]["prefix"].as_str().expect("prefix");
    assert_eq!(page_of(&list(&format!("?q={prefix}"))).0, [id(3)]);
    assert_eq!(page_of(&list("?q=Staging%20web")).0, [id(2)]);

    // GET one key: the same view.
    let one = w.call(
        &alice.borrow(),
        "GET",
        &format!("/api/billstack/teams/team_a/api-keys/{}", id(2)),
        None,
    );
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["key"], all.body["keys"][2]);

    // Ended keys: listed as expired for 30 days, then not at all (nor by id).
    w.clock.advance(Duration::from_secs(2 * 24 * 3600));
    *alice.borrow_mut() = w.login(ALICE);
    assert_eq!(page_of(&list("?status=expired")).0, [id(4)]);
    // 32 days on: the key that expired on day 1 has been gone since day 31; the one that
    // expired on day 3 stays until day 33.
    w.clock.advance(Duration::from_secs(30 * 24 * 3600));
    *alice.borrow_mut() = w.login(ALICE);
    assert_eq!(page_of(&list("?status=expired")).0, [id(1)]);
    assert_eq!(
        w.call(
            &alice.borrow(),
            "GET",
            &format!("/api/billstack/teams/team_a/api-keys/{}", id(4)),
            None
        )
        .status,
        StatusCode::NOT_FOUND
    );

    // Limits, both ways; bad input names its parameter.
    assert_eq!(list("?limit=1").status, StatusCode::OK);
    assert_eq!(list("?limit=500").status, StatusCode::OK);
    assert_eq!(
        list(&format!("?q={}", "x".repeat(100))).status,
        StatusCode::OK
    );
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=ten", "limit"),
        ("?cursor=nonsense", "cursor"),
        ("?status=revoked", "status"),
        (&format!("?q={}", "x".repeat(101)) as &str, "q"),
    ] {
        let refused = list(query);
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(refused.body["error"]["field"], field, "{query}");
    }
    // Another team's member sees none of it.
    let bob = w.login(BOB);
    assert_eq!(
        w.call(&bob, "GET", "/api/billstack/teams/team_a/api-keys", None)
            .status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn the_audit_log_names_what_it_touched_and_says_what_changed() {
    let w = World::new();
    let alice = w.login(ALICE);
    let created = w.create_key(&alice, json!({"name": "deploy bot"}));
    let raw = created.body["rawKey"].as_str().expect("raw").to_string();
    let id = created.body["key"]["id"].as_str().expect("id").to_string();
    let key_path = format!("/api/billstack/teams/team_a/api-keys/{id}");
    let patched = w.call(
        &alice,
        "PATCH",
        &key_path,
        Some(json!({"name": "deploy bot (old)", "enabled": false})),
    );
    assert_eq!(patched.status, StatusCode::OK);
    let rotated = w.call(
        &alice,
        "POST",
        &format!("{key_path}/rotate"),
        Some(json!({"gracePeriodSeconds": 0})),
    );
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.body);
    let new_id = rotated.body["key"]["id"].as_str().expect("id").to_string();
    let new_raw = rotated.body["rawKey"].as_str().expect("raw").to_string();
    assert_eq!(
        w.call(
            &alice,
            "DELETE",
            &format!("/api/billstack/teams/team_a/api-keys/{new_id}"),
            None
        )
        .status,
        StatusCode::NO_CONTENT
    );
    // A member's role change, named by email.
    let members = w.call(&alice, "GET", "/api/billstack/teams/team_a/members", None);
    let carol_id = members.body["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["email"] == CAROL.0)
        .expect("carol")["userId"]
        .as_str()
        .expect("id")
        .to_string();
    let promoted = w.call(
        &alice,
        "PATCH",
        &format!("/api/billstack/teams/team_a/members/{carol_id}"),
        Some(json!({"role": "owner"})),
    );
    assert_eq!(promoted.status, StatusCode::OK, "{}", promoted.body);
    let log = w.call(&alice, "GET", "/api/billstack/teams/team_a/audit-log", None);
    assert_eq!(log.status, StatusCode::OK);
    let events = log.body["events"].as_array().expect("events");
    let event = |action: &str, target: &str| {
        events
            .iter()
            .find(|e| e["action"] == action && e["target"] == target)
            .unwrap_or_else(|| panic!("no {action} of {target} in {}", log.body))
    };
    // Both keys are revoked now, and the log still names them.
    let revoked = event("key.revoked", &new_id);
    assert_eq!(revoked["targetName"], "deploy bot (old)");
    assert_eq!(revoked["actor"]["email"], ALICE.0);
    assert_eq!(
        event("key.updated", &id)["details"],
        json!({"changed": {"name": "deploy bot (old)", "enabled": false}})
    );
    assert_eq!(
        event("key.rotated", &id)["details"],
        json!({"newKeyId": new_id, "gracePeriodSeconds": 0})
    );
    assert_eq!(event("key.rotated", &id)["targetName"], "deploy bot (old)");
    let role = event("member.role_changed", &carol_id);
    assert_eq!(role["targetName"], CAROL.0);
    assert_eq!(
        role["details"],
        json!({"email": CAROL.0, "from": "member", "role": "owner"})
    );
    let text = log.body.to_string();
    assert!(!text.contains(&raw[3..]) && !text.contains(&new_raw[3..]));
}

#[test]
fn usage_counts_refusals_by_reason() {
    let w = World::new();
    let alice = w.login(ALICE);
    let created = w.create_key(
        &alice,
        json!({"name": "reader", "scopes": ["products:read"]}),
    );
    let raw = created.body["rawKey"].as_str().expect("raw").to_string();
    let id = created.body["key"]["id"].as_str().expect("id").to_string();
    // Three doors each: refused for scope, then allowed on a route the key may use.
    w.doors(&raw, CUSTOMERS);
    w.doors(&raw, "/api/billstack/teams/team_a/projects/proj_a/products");
    let usage = w.call(
        &alice,
        "GET",
        &format!("/api/billstack/teams/team_a/api-keys/{id}/usage?days=1"),
        None,
    );
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.body);
    let today = &usage.body["days"][0];
    assert_eq!(today["allowed"], 3);
    assert_eq!(today["denied"], 3);
    assert_eq!(today["refused"], json!({"insufficient_scope": 3}));
}
