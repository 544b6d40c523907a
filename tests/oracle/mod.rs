//! The fuzzing oracle, shared by the property test in `tests/decisions.rs` and the `cargo fuzz`
//! targets in `fuzz/`: written independently of `parse_target`, from the rule rather than from
//! the parser, so that the two can disagree.

/// Whether `target` is a plain request under `/api/billstack/teams/{team}/projects/{project}`
/// (any project when `project` is `None`): the only kind a key of that team (and project) may
/// ever be allowed. No empty, `.` or `..` segment (literal or encoded), no encoded slash or
/// backslash, no control characters, nothing before the team API, and the team and project
/// segments exactly as given (no prefix match: `team_a` is not `team_ab`).
pub fn is_plain_target(target: &str, team: &str, project: Option<&str>) -> bool {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let lower = path.to_ascii_lowercase();
    let segments: Vec<&str> = path.split('/').collect();
    let names_the_tenant = segments.len() >= 6
        && segments[..4] == ["", "api", "billstack", "teams"]
        && segments[4] == team
        && segments[5] == "projects"
        && segments
            .get(6)
            .is_some_and(|p| !p.is_empty() && project.is_none_or(|want| *p == want));
    names_the_tenant
        && !path.contains("//")
        && !lower.contains("%2f")
        && !lower.contains("%5c")
        && !path.contains('\\')
        && !target.chars().any(char::is_control)
        && segments.iter().all(|segment| {
            let s = segment.to_ascii_lowercase().replace("%2e", ".");
            s != "." && s != ".."
        })
}

/// Whether `method` may ever be allowed: a non-empty upper-case token.
pub fn is_plain_method(method: &str) -> bool {
    !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase())
}
