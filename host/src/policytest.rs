//! `billstack policy test PLUGIN.wasm CASES.toml`: runs a table of cases against a plugin,
//! through the same host checks as real requests (tenant, project, then the plugin), like
//! `opa test` does for Rego.
//!
//! ```toml
//! [[case]]
//! name = "read customers"            # optional; defaults to "METHOD PATH"
//! method = "GET"
//! path = "/customers"                # below the project, or a full /api/billstack/… path
//! scopes = ["customers:read"]        # the key's scopes; omitted or [] = full access
//! project = "proj_other"             # optional: the key's project restriction
//! expect = "allow"                   # "allow", or the deny code the caller sees: "insufficient_scope", "unknown_route", or the plugin's own such as "read_only"
//! required_scope = "customers:read"  # optional, checked when given
//! ```

use serde::Deserialize;

use crate::decision::{Decision, decide_for_key};
use crate::policy::ScopePolicy;
use billstack_keystore::KeyRecord;

/// Team id used for relative paths.
pub const TEST_TEAM: &str = "team_test";
/// Project id used for relative paths.
pub const TEST_PROJECT: &str = "proj_test";

/// A cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesFile {
    /// The cases, in order.
    #[serde(rename = "case", default)]
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Shown in the report.
    pub name: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path below the project (`/customers`) or a full team API path.
    pub path: String,
    /// The key's scopes; empty means full access.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The key's project restriction.
    pub project: Option<String>,
    /// The key's team (defaults to the team in the path).
    pub team: Option<String>,
    /// `allow` or a deny code.
    pub expect: String,
    /// The scope a denial must name.
    pub required_scope: Option<String>,
}

/// A case for `policy diff`: `method path` with `scopes` (empty: full access).
pub fn probe(method: &str, path: &str, scopes: &[&str]) -> Case {
    Case {
        name: None,
        method: method.to_string(),
        path: path.to_string(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        project: None,
        team: None,
        expect: String::new(),
        required_scope: None,
    }
}

/// The default table's route set as `policy diff` probes it when no cases are given: every
/// example row of the table with a full-access key, with exactly its scope, and with every
/// other scope of the table but not its own.
pub fn default_table_probes() -> Vec<Case> {
    use billstack_scope_table::{EXAMPLES, SCOPES};
    let mut probes = Vec::new();
    for (method, path, scope) in EXAMPLES {
        let others: Vec<&str> = SCOPES
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| name != scope)
            .collect();
        let named = |label: String, scopes: &[&str]| Case {
            name: Some(format!("{method} {path}, {label}")),
            ..probe(method, path, scopes)
        };
        probes.push(named("full-access key".into(), &[]));
        probes.push(named(format!("key with {scope}"), &[scope]));
        probes.push(named(format!("key with every scope but {scope}"), &others));
    }
    // Routes the table does not know, and a malformed one.
    probes.push(probe("GET", "/unknown", &[]));
    probes.push(probe("GET", "/customers/cus_1/unknown", &[]));
    probes
}

/// The outcome of one case.
#[derive(Debug)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// `None` if it passed, else what went wrong.
    pub failure: Option<String>,
}

/// The whole decision (as the server makes it for a key of the case's shape) of one case.
pub fn decide_case(policy: &dyn ScopePolicy, case: &Case) -> Decision {
    let target = if case.path.starts_with("/api/billstack/") {
        case.path.clone()
    } else {
        format!(
            "/api/billstack/teams/{TEST_TEAM}/projects/{TEST_PROJECT}{}",
            case.path
        )
    };
    let team = case.team.clone().unwrap_or_else(|| {
        crate::decision::parse_target(&target)
            .map(|t| t.team_id.to_string())
            .unwrap_or_else(|_| TEST_TEAM.to_string())
    });
    let key = KeyRecord {
        id: "key_test".into(),
        team_id: team,
        project_id: case.project.clone(),
        name: "policy test".into(),
        prefix: "bs_test".into(),
        scopes: case.scopes.clone(),
        expires_at: None,
        created_at: 0,
        revoked_at: None,
        last_used_at: None,
        hash: String::new(),
        rotated_to: None,
        rate_limit: None,
        disabled: false,
        created_by: None,
    };
    decide_for_key(&key, policy, &case.method, &target)
}

/// A decision in brief: `allow`, or the code the caller sees with the scope it names (or why
/// the plugin failed).
pub fn describe(decision: &Decision) -> String {
    match decision {
        Decision::Allow(_) => "allow".to_string(),
        Decision::Deny(d) => match (&d.required_scope, &d.cause) {
            (Some(s), _) => format!("{} (requires {s})", d.code()),
            // A local test is for the plugin's author: show why the plugin failed, which
            // callers of a real server never see.
            (None, Some(cause)) => format!("{}: {}", d.code(), cause),
            (None, None) => format!("{}: {}", d.code(), d.message),
        },
    }
}

/// What `policy diff` compares: allow, or the deny code with the scope it names (messages are
/// prose and may change freely).
pub fn outcome(decision: &Decision) -> (String, Option<String>) {
    match decision {
        Decision::Allow(_) => ("allow".to_string(), None),
        Decision::Deny(d) => (d.code().to_string(), d.required_scope.clone()),
    }
}

/// The case's name as reports show it.
pub fn case_name(case: &Case) -> String {
    case.name
        .clone()
        .unwrap_or_else(|| format!("{} {}", case.method, case.path))
}

/// Runs one case against `policy`.
pub fn run_case(policy: &dyn ScopePolicy, case: &Case) -> CaseResult {
    let name = case_name(case);
    let decision = decide_case(policy, case);
    let got_code = match &decision {
        Decision::Allow(_) => "allow",
        Decision::Deny(d) => d.code(),
    };
    let mut failure = None;
    if got_code != case.expect {
        failure = Some(format!(
            "expected {}, got {}",
            case.expect,
            describe(&decision)
        ));
    } else if let (Some(want), Decision::Deny(d)) = (&case.required_scope, &decision)
        && d.required_scope.as_ref() != Some(want)
    {
        failure = Some(format!(
            "expected required scope {want}, got {}",
            describe(&decision)
        ));
    }
    CaseResult { name, failure }
}

/// Parses a cases file.
pub fn parse_cases(text: &str) -> anyhow::Result<CasesFile> {
    let file: CasesFile = toml::from_str(text)?;
    if file.cases.is_empty() {
        anyhow::bail!("the cases file has no [[case]] entries");
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PolicyEngine, PolicyLimits};

    fn read_only() -> std::sync::Arc<crate::policy::Plugin> {
        let engine = PolicyEngine::new(PolicyLimits::default(), None).expect("engine");
        engine
            .load(&billstack_test_artifacts::read(
                billstack_test_artifacts::EXAMPLE_READ_ONLY,
            ))
            .expect("the read-only example loads")
    }

    fn case(method: &str, scopes: &[&str], expect: &str) -> Case {
        parse_cases(&format!(
            "[[case]]\nmethod = \"{method}\"\npath = \"/customers\"\nscopes = {scopes:?}\nexpect = \"{expect}\"\n"
        ))
        .expect("parses")
        .cases
        .remove(0)
    }

    #[test]
    fn a_case_expects_the_plugins_own_deny_code() {
        let policy = read_only();
        // The read-only example refuses a write with its own code, whatever the scopes.
        let passed = run_case(&*policy, &case("POST", &["customers:write"], "read_only"));
        assert_eq!(passed.failure, None);
        let failed = run_case(
            &*policy,
            &case("POST", &["customers:write"], "insufficient_scope"),
        );
        let failure = failed.failure.expect("the code differs");
        assert!(failure.contains("got read_only"), "{failure}");
        // Its conventional codes are expected as before.
        let scoped = run_case(
            &*policy,
            &case("GET", &["products:read"], "insufficient_scope"),
        );
        assert_eq!(scoped.failure, None);
    }
}
