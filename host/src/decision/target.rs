//! Request targets: the one-pass parser that splits `/path?query` into team, project and
//! resource, and refuses whatever could make the host and an upstream disagree about the route.

/// Longest request target (path and query) accepted, in bytes.
pub const MAX_TARGET_LEN: usize = 8 * 1024;

/// A request target split into the parts the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The path as sent, without the query.
    pub path: &'a str,
    /// The query, without `?`.
    pub query: Option<&'a str>,
    /// `teamId` from the path.
    pub team_id: &'a str,
    /// `projectId` from the path.
    pub project_id: &'a str,
    /// The path below the project, starting with `/`.
    pub resource: &'a str,
}

/// Why a target was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Malformed: 400.
    Invalid(String),
    /// Well formed but outside `/api/billstack/teams/{teamId}/projects/{projectId}/…`: 404.
    NotTeamApi,
}

const TEAM_API: [&str; 3] = ["api", "billstack", "teams"];

/// Parses and checks a request target (`/path?query`). Refuses what could make the host and an
/// upstream disagree about which route this is: control characters, backslashes, empty
/// segments (`//`), `.` and `..` segments, encoded slashes, backslashes, dots and NULs, and
/// malformed percent-escapes.
pub fn parse_target(target: &str) -> Result<Target<'_>, TargetError> {
    // Two passes over bytes, no allocation unless refusing: this runs on every decision, and
    // the straightforward version (splits and searches) cost more than SHA-256 of the key.
    let invalid = |why: &str| Err(TargetError::Invalid(why.to_string()));
    if target.len() > MAX_TARGET_LEN {
        return invalid("the path is too long");
    }
    let bytes = target.as_bytes();
    // Pass 1, the whole target: characters that must be percent-encoded, where the query
    // starts (the first `?`) and where a fragment starts (a `#` before it).
    let mut query_at = None;
    let mut fragment_at = None;
    let mut unencoded = false;
    for (i, &b) in bytes.iter().enumerate() {
        match BYTE_CLASS[b as usize] {
            ORDINARY | SLASH | PERCENT => {}
            UNENCODED => unencoded = true,
            QUESTION if query_at.is_none() => query_at = Some(i),
            HASH if query_at.is_none() && fragment_at.is_none() => fragment_at = Some(i),
            _ => {}
        }
    }
    let query = query_at.map(|q| &target[q + 1..]);
    let path = &target[..fragment_at.or(query_at).unwrap_or(bytes.len())];
    if !path.starts_with('/') {
        return invalid("the path must start with /");
    }
    if unencoded {
        return invalid("the path contains characters that must be percent-encoded");
    }
    // Pass 2, the path: percent-escapes, and segments between the leading slash and an
    // optional trailing one. A bad escape anywhere wins over a bad segment.
    let p = path.as_bytes();
    let inner_end = if p.len() > 1 && p[p.len() - 1] == b'/' {
        p.len() - 1
    } else {
        p.len()
    };
    let mut segment_error = None;
    // The first six segments: api/billstack/teams/{t}/projects/{p}.
    let mut segments = [(0usize, 0usize); 6];
    let mut found = 0;
    let mut start = 1;
    let mut i = 1;
    while i < p.len() {
        let class = BYTE_CLASS[p[i] as usize];
        if class == ORDINARY {
            i += 1;
            continue;
        }
        if class == PERCENT {
            let value = p
                .get(i + 1..i + 3)
                .and_then(|h| Some(hex_digit(h[0])? << 4 | hex_digit(h[1])?));
            let Some(value) = value else {
                return invalid("the path has a malformed percent-escape");
            };
            if matches!(value, b'/' | b'\\' | b'.' | 0) || value.is_ascii_control() {
                return invalid(
                    "the path has an encoded slash, backslash, dot or control character",
                );
            }
            i += 3;
            continue;
        }
        if class == SLASH && i < inner_end {
            end_segment(p, start, i, &mut segments, &mut found, &mut segment_error);
            start = i + 1;
        }
        i += 1;
    }
    if inner_end > 1 {
        end_segment(
            p,
            start,
            inner_end,
            &mut segments,
            &mut found,
            &mut segment_error,
        );
    }
    if let Some(why) = segment_error {
        return invalid(why);
    }
    let segment = |n: usize| (n < found).then(|| &path[segments[n].0..segments[n].1]);
    for (n, expected) in TEAM_API.iter().enumerate() {
        if segment(n) != Some(expected) {
            return Err(TargetError::NotTeamApi);
        }
    }
    let team_id = segment(3).ok_or(TargetError::NotTeamApi)?;
    if segment(4) != Some("projects") {
        return Err(TargetError::NotTeamApi);
    }
    let project_id = segment(5).ok_or(TargetError::NotTeamApi)?;
    // Everything after `/api/billstack/teams/{t}/projects/{p}`, keeping a trailing slash.
    let prefix_len = segments[5].1;
    let resource = if prefix_len >= path.len() {
        "/"
    } else {
        &path[prefix_len..]
    };
    Ok(Target {
        path,
        query,
        team_id,
        project_id,
        resource,
    })
}

// Byte classes for `parse_target`'s loops, looked up once per byte.
const ORDINARY: u8 = 0;
const UNENCODED: u8 = 1;
const SLASH: u8 = 2;
const PERCENT: u8 = 3;
const QUESTION: u8 = 4;
const HASH: u8 = 5;
const BYTE_CLASS: [u8; 256] = {
    let mut classes = [ORDINARY; 256];
    let mut b = 0;
    while b < 256 {
        // Control characters, space, backslash and anything outside ASCII.
        if b <= b' ' as usize || b == 0x7f || b == b'\\' as usize || b >= 0x80 {
            classes[b] = UNENCODED;
        }
        b += 1;
    }
    classes[b'/' as usize] = SLASH;
    classes[b'%' as usize] = PERCENT;
    classes[b'?' as usize] = QUESTION;
    classes[b'#' as usize] = HASH;
    classes
};

/// Records the segment `p[start..end]` (one of the first six) and the first problem with any
/// segment: empty (`//`), `.` or `..`.
fn end_segment(
    p: &[u8],
    start: usize,
    end: usize,
    segments: &mut [(usize, usize); 6],
    found: &mut usize,
    error: &mut Option<&'static str>,
) {
    let segment = &p[start..end];
    if error.is_none() {
        if segment.is_empty() {
            *error = Some("the path has an empty segment (//)");
        } else if segment == b"." || segment == b".." {
            *error = Some("the path has a . or .. segment");
        }
    }
    if let Some(slot) = segments.get_mut(*found) {
        *slot = (start, end);
        *found += 1;
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first, straightforward version of [`parse_target`]: the oracle the one-pass version
    /// is checked against.
    #[allow(clippy::question_mark)]
    fn parse_target_reference(target: &str) -> Result<Target<'_>, TargetError> {
        let invalid = |why: &str| Err(TargetError::Invalid(why.to_string()));
        if target.len() > MAX_TARGET_LEN {
            return invalid("the path is too long");
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let path = path.split('#').next().unwrap_or_default();
        if !path.starts_with('/') {
            return invalid("the path must start with /");
        }
        if target
            .bytes()
            .any(|b| b.is_ascii_control() || b == b'\\' || b == b' ' || b >= 0x80)
        {
            return invalid("the path contains characters that must be percent-encoded");
        }
        let bytes = path.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                    return invalid("the path has a malformed percent-escape");
                };
                if matches!(value, b'/' | b'\\' | b'.' | 0) || value.is_ascii_control() {
                    return invalid(
                        "the path has an encoded slash, backslash, dot or control character",
                    );
                }
                i += 3;
            } else {
                i += 1;
            }
        }
        let inner = &path[1..];
        let inner = inner.strip_suffix('/').unwrap_or(inner);
        if !inner.is_empty() {
            for seg in inner.split('/') {
                if seg.is_empty() {
                    return invalid("the path has an empty segment (//)");
                }
                if seg == "." || seg == ".." {
                    return invalid("the path has a . or .. segment");
                }
            }
        }
        let mut segs = inner.split('/');
        for expected in TEAM_API {
            if segs.next() != Some(expected) {
                return Err(TargetError::NotTeamApi);
            }
        }
        let team_id = segs.next().ok_or(TargetError::NotTeamApi)?;
        if segs.next() != Some("projects") {
            return Err(TargetError::NotTeamApi);
        }
        let project_id = segs.next().ok_or(TargetError::NotTeamApi)?;
        // Everything after `/api/billstack/teams/{t}/projects/{p}`, keeping a trailing slash.
        // `project_id` is a slice of `path`; the resource starts right after it.
        let prefix_len = project_id.as_ptr() as usize - path.as_ptr() as usize + project_id.len();
        let resource = if prefix_len >= path.len() {
            "/"
        } else {
            &path[prefix_len..]
        };
        Ok(Target {
            path,
            query,
            team_id,
            project_id,
            resource,
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// The one-pass parser answers exactly as the straightforward one on targets built
        /// from the pieces that matter: slashes, dots, escapes (good, bad, forbidden), `?`,
        /// `#`, characters that need encoding, and the team API's own segments.
        #[test]
        fn the_one_pass_parser_agrees_with_the_reference(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "/", "/", "/", ".", "..", "a", "x_1", "%", "%2", "%2F", "%2e", "%41", "%5c",
                    "%00", "%zz", "?", "#", " ", "\\", "\u{7f}", "é", "api", "billstack",
                    "teams", "projects", "/api/billstack/teams/t/projects/p",
                ]),
                0..14,
            )
        ) {
            let target: String = pieces.concat();
            proptest::prop_assert_eq!(parse_target(&target), parse_target_reference(&target));
        }
    }

    #[test]
    fn targets_under_the_team_api() {
        let t = parse_target("/api/billstack/teams/team_1/projects/proj_1/customers/cus_1/?a=b")
            .expect("ok");
        assert_eq!(t.team_id, "team_1");
        assert_eq!(t.project_id, "proj_1");
        assert_eq!(t.resource, "/customers/cus_1/");
        assert_eq!(
            t.path,
            "/api/billstack/teams/team_1/projects/proj_1/customers/cus_1/"
        );
        assert_eq!(t.query, Some("a=b"));
        assert_eq!(
            parse_target("/api/billstack/teams/t/projects/p")
                .expect("ok")
                .resource,
            "/"
        );
        assert_eq!(
            parse_target("/api/billstack/teams/t/projects/p/")
                .expect("ok")
                .resource,
            "/"
        );
        assert_eq!(
            parse_target("/api/billstack/teams/t/projects/p/a%20b")
                .expect("ok")
                .resource,
            "/a%20b"
        );
    }

    #[test]
    fn targets_outside_the_team_api() {
        for t in [
            "/",
            "/healthz",
            "/api/billstack/teams/t",
            "/api/billstack/teams/t/projects",
            "/api/billstack/teams/t/keys/p/x",
            "/API/billstack/teams/t/projects/p/x",
        ] {
            assert_eq!(parse_target(t), Err(TargetError::NotTeamApi), "{t}");
        }
    }

    #[test]
    fn malformed_targets() {
        for t in [
            "",
            "customers",
            "/api/billstack/teams/t/projects/p//customers",
            "//api/billstack/teams/t/projects/p/customers",
            "/api/billstack/teams/t/projects/p/customers/../../../q/projects/x",
            "/api/billstack/teams/t/projects/p/./customers",
            "/api/billstack/teams/t%2Fx/projects/p/customers",
            "/api/billstack/teams/t/projects/p/customers%2f1",
            "/api/billstack/teams/t/projects/p/%2e%2e/customers",
            "/api/billstack/teams/t/projects/p/customers%5c1",
            "/api/billstack/teams/t/projects/p/customers%00",
            "/api/billstack/teams/t/projects/p/customers%zz",
            "/api/billstack/teams/t/projects/p/customers%4",
            "/api/billstack/teams/t/projects/p/cust\\omers",
            "/api/billstack/teams/t/projects/p/cust omers",
            "/api/billstack/teams/t/projects/p/customers\n",
            "/api/billstack/teams/t/projects/p/cüstomers",
        ] {
            assert!(
                matches!(parse_target(t), Err(TargetError::Invalid(_))),
                "{t:?}"
            );
        }
        let long = format!(
            "/api/billstack/teams/t/projects/p/{}",
            "a".repeat(MAX_TARGET_LEN)
        );
        assert!(matches!(parse_target(&long), Err(TargetError::Invalid(_))));
        let within = format!(
            "/api/billstack/teams/t/projects/p/customers/{}",
            "a".repeat(MAX_TARGET_LEN - 100)
        );
        assert!(parse_target(&within).is_ok());
    }
}
