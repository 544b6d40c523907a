//! The tenancy matrix (issue 8): every operation of the OpenAPI document, and every front door,
//! against every kind of caller — none, a bad credential, an API key where a session belongs (or
//! a session where a key belongs), another team's session or key, another project's key, a
//! member where an owner is needed — must get the documented answer. The rows are keyed by
//! operation id, and the test fails for an operation without a row, so no endpoint can be added
//! without deciding who may call it.

mod common;

use std::collections::BTreeSet;

use common::{Server, agent, create_user, json, sign_in};
use serde_json::Value;

/// Who may call an operation.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Anyone (sign-in, health, the document itself).
    Public,
    /// Any signed-in user, about themselves.
    Session,
    /// A member of the team in the path.
    Member,
    /// An owner of the team in the path.
    Owner,
    /// A deployment administrator.
    Admin,
    /// An API key of the team (and project) in the decided request: the front doors.
    Key,
}

/// Every operation id in the document, and who may call it.
const ROWS: &[(&str, Access)] = &[
    ("signIn", Access::Public),
    ("signOut", Access::Session),
    ("getMe", Access::Session),
    ("createApiKey", Access::Member),
    ("listApiKeys", Access::Member),
    ("getApiKey", Access::Member),
    ("revokeApiKey", Access::Member),
    ("updateApiKey", Access::Member),
    ("rotateApiKey", Access::Member),
    ("getApiKeyUsage", Access::Member),
    ("listProjects", Access::Member),
    ("createProject", Access::Owner),
    ("renameProject", Access::Owner),
    ("deleteProject", Access::Owner),
    ("listMembers", Access::Member),
    ("addMember", Access::Owner),
    ("changeMemberRole", Access::Owner),
    ("removeMember", Access::Owner),
    ("createTeam", Access::Admin),
    ("changePassword", Access::Session),
    ("acceptInvitation", Access::Public),
    ("getPolicy", Access::Member),
    ("uploadPolicy", Access::Owner),
    ("resetPolicy", Access::Owner),
    ("listAuditLog", Access::Owner),
    ("verifyKey", Access::Key),
    ("forwardAuthGet", Access::Key),
    ("forwardAuthPost", Access::Key),
    ("forwardAuthPut", Access::Key),
    ("forwardAuthPatch", Access::Key),
    ("forwardAuthDelete", Access::Key),
    ("forwardAuthHead", Access::Key),
    ("forwardAuthOptions", Access::Key),
    ("forwardAuthTrace", Access::Key),
    ("proxyGet", Access::Key),
    ("proxyPost", Access::Key),
    ("proxyPut", Access::Key),
    ("proxyPatch", Access::Key),
    ("proxyDelete", Access::Key),
    ("healthz", Access::Public),
    ("readyz", Access::Public),
    ("metrics", Access::Public),
    ("openapiDocument", Access::Public),
];

struct World {
    _dir: tempfile::TempDir,
    server: Server,
    owner_a: String,
    owner_a_id: String,
    member_a: String,
    owner_b: String,
    key_a: String,
    key_a_id: String,
    key_b: String,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Scripts make the directory; only `serve` creates a missing one.
    std::fs::create_dir(&data).expect("mkdir data");
    for (team, projects) in [
        ("team_a", &["proj_a", "proj_a2"][..]),
        ("team_b", &["proj_b"][..]),
    ] {
        json(&data, &["team", "create", "--name", team, "--id", team]);
        for p in projects {
            json(
                &data,
                &["project", "create", "--team", team, "--name", p, "--id", p],
            );
        }
    }
    let mut ids = Vec::new();
    for (email, team, role) in [
        ("owner@a.test", "team_a", "owner"),
        ("member@a.test", "team_a", "member"),
        ("owner@b.test", "team_b", "owner"),
    ] {
        let out = create_user(&data, email, "tenancy-password-1", team, role);
        let user: Value = serde_json::from_slice(&out.stdout).expect("user json");
        ids.push(user["id"].as_str().expect("id").to_string());
    }
    let key = |team: &str, project: &str| {
        json(
            &data,
            &[
                "key",
                "create",
                "--team",
                team,
                "--name",
                "k",
                "--project",
                project,
            ],
        )
    };
    let a = key("team_a", "proj_a");
    let b = key("team_b", "proj_b");
    let server = Server::start(&data, &[("BILLSTACK_UNKNOWN_KEYS_PER_ADDRESS", "1000000")]);
    let base = server.base.clone();
    World {
        owner_a: sign_in(&base, "owner@a.test", "tenancy-password-1"),
        owner_a_id: ids[0].clone(),
        member_a: sign_in(&base, "member@a.test", "tenancy-password-1"),
        owner_b: sign_in(&base, "owner@b.test", "tenancy-password-1"),
        key_a: a["rawKey"].as_str().expect("raw").to_string(),
        key_a_id: a["key"]["id"].as_str().expect("id").to_string(),
        key_b: b["rawKey"].as_str().expect("raw").to_string(),
        server,
        _dir: dir,
    }
}

/// A caller: a session cookie, an API key, both or neither.
#[derive(Debug, Clone, Copy)]
enum Caller<'a> {
    Nobody,
    BadCookie,
    BadKey,
    Cookie(&'a str),
    Key(&'a str),
}

/// Sends `method path` as `caller` (with this server's Origin, so CSRF is not what refuses it)
/// and returns the status. For JSON verify the key travels in the body and the answer's `code`
/// stands for the status (401 for a refused credential, 403 for a refused tenant or project).
fn call(w: &World, method: &str, path: &str, caller: Caller<'_>) -> u16 {
    let base = &w.server.base;
    if path == "/api/billstack/keys/verify" {
        let key = match caller {
            Caller::Key(k) => k.to_string(),
            Caller::BadKey => format!("bs_{}", "0".repeat(48)),
            _ => String::new(),
        };
        let mut res = agent()
            .post(&format!("{base}{path}"))
            .send_json(serde_json::json!({
                "key": key,
                "method": "GET",
                "path": "/api/billstack/teams/team_a/projects/proj_a/customers",
            }))
            .expect("verify");
        let body: Value = res.body_mut().read_json().expect("json");
        return match body["code"].as_str().expect("code") {
            "VALID" => 200,
            "INVALID_KEY" | "EXPIRED" | "DISABLED" => 401,
            "TEAM_MISMATCH" | "PROJECT_MISMATCH" | "INSUFFICIENT_SCOPE" => 403,
            other => panic!("verify code {other}"),
        };
    }
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("Origin", base.as_str())
        .header("Content-Type", "application/json")
        .header("X-Forwarded-Method", "GET")
        .header(
            "X-Forwarded-Uri",
            "/api/billstack/teams/team_a/projects/proj_a/customers",
        );
    request = match caller {
        Caller::Nobody => request,
        Caller::BadCookie => {
            request.header("Cookie", format!("billstack_session={}", "cd".repeat(32)))
        }
        Caller::BadKey => request.header("Authorization", format!("Bearer bs_{}", "0".repeat(48))),
        Caller::Cookie(c) => request.header("Cookie", c),
        Caller::Key(k) => request.header("Authorization", format!("Bearer {k}")),
    };
    // A valid body where one is needed, so that only the caller can be the reason to refuse.
    let body = if path.ends_with("/login") {
        r#"{"email":"nobody@x.test","password":"wrong-password-1"}"#
    } else if method == "POST" && path.ends_with("/api-keys") {
        r#"{"name":"made by the tenancy matrix"}"#
    } else if method == "POST" && path.ends_with("/members") {
        r#"{"email":"new@tenancy.test","role":"member"}"#
    } else if method == "PATCH" && path.contains("/members/") {
        r#"{"role":"member"}"#
    } else if (method == "POST" && (path.ends_with("/projects") || path.ends_with("/teams")))
        || (method == "PATCH" && path.ends_with("/projects/proj_a"))
    {
        r#"{"name":"made by the tenancy matrix"}"#
    } else if path.ends_with("/password") {
        r#"{"currentPassword":"wrong-password-1","newPassword":"a-new-password-1"}"#
    } else if path.ends_with("/invitations/accept") {
        r#"{"token":"not-a-token","password":"a-new-password-1"}"#
    } else {
        "{}"
    };
    agent()
        .run(request.body(body.to_string()).expect("request"))
        .expect("send")
        .status()
        .as_u16()
}

#[test]
fn every_operation_answers_every_kind_of_caller_as_documented() {
    let w = world();
    let doc: Value = agent()
        .get(&w.server.url("/api/openapi.json"))
        .call()
        .expect("document")
        .body_mut()
        .read_json()
        .expect("json");
    let mut seen = BTreeSet::new();
    let mut cells = 0;
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            let id = op["operationId"].as_str().expect("operationId");
            seen.insert(id.to_string());
            let access = ROWS
                .iter()
                .find(|(row, _)| *row == id)
                .unwrap_or_else(|| panic!("no tenancy row for operation {id}: add one to ROWS"))
                .1;
            let method = method.to_uppercase();
            // Fill the path for team A; the key is a real one of team A (never revoked here:
            // every call below that could change it is refused).
            let fill = |team: &str| {
                template
                    .replace("{teamId}", team)
                    .replace("{keyId}", &w.key_a_id)
                    .replace("{projectId}", "proj_a")
                    .replace("{resource}", "customers")
                    .replace("{userId}", &w.owner_a_id)
            };
            let path = fill("team_a");
            let expect = |caller: Caller<'_>, wanted: &[u16], what: &str| {
                let got = call(&w, &method, &path, caller);
                assert!(
                    wanted.contains(&got),
                    "{method} {path} ({id}) as {what}: {got}, wanted {wanted:?}"
                );
            };
            match access {
                Access::Public => {
                    // 400: an invitation token that is not one.
                    expect(Caller::Nobody, &[200, 400, 401], "nobody");
                    cells += 1;
                }
                Access::Session | Access::Member | Access::Owner | Access::Admin => {
                    expect(Caller::Nobody, &[401], "nobody");
                    expect(Caller::BadCookie, &[401], "a bad session");
                    expect(Caller::Key(&w.key_a), &[401], "an API key of the team");
                    cells += 3;
                    if matches!(access, Access::Member | Access::Owner) {
                        expect(Caller::Cookie(&w.owner_b), &[404], "another team's owner");
                        cells += 1;
                    }
                    if matches!(access, Access::Owner) {
                        expect(
                            Caller::Cookie(&w.member_a),
                            &[403],
                            "a member, not an owner",
                        );
                        cells += 1;
                    }
                    if matches!(access, Access::Admin) {
                        expect(
                            Caller::Cookie(&w.owner_b),
                            &[403],
                            "an owner who is not an administrator",
                        );
                        cells += 1;
                    }
                }
                Access::Key => {
                    expect(Caller::Nobody, &[401], "nobody");
                    expect(Caller::BadKey, &[401], "an unknown key");
                    expect(
                        Caller::Cookie(&w.owner_a),
                        &[401],
                        "a session instead of a key",
                    );
                    expect(Caller::Key(&w.key_b), &[403], "another team's key");
                    cells += 4;
                    // The same key on its team's other project.
                    let other_project = fill("team_a").replace("proj_a", "proj_a2");
                    if other_project != path {
                        let got = call(&w, &method, &other_project, Caller::Key(&w.key_a));
                        assert_eq!(
                            got, 403,
                            "{method} {other_project} ({id}) as another project's key"
                        );
                        cells += 1;
                    }
                }
            }
        }
    }
    // Every row names an operation that exists: no stale rows either.
    for (row, _) in ROWS {
        assert!(
            seen.contains(*row),
            "tenancy row {row} names no operation in the document"
        );
    }
    // The calls above changed nothing: team A's key still works.
    assert_eq!(call(&w, "GET", "/auth/verify", Caller::Key(&w.key_a)), 200);
    println!(
        "tenancy matrix: {} operations, {cells} refusal cells, all as documented",
        seen.len()
    );
}
