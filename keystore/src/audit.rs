//! The audit log's shape on disk: who acted ([`Actor`]), and the event keys that let one team's
//! events be read newest first, a page at a time, without scanning anyone else's.
//!
//! An event's key is `team_id/seq` (or `/seq` for events of no team), with `seq` big-endian, so
//! a team's events are one contiguous range in sequence order. Team ids are never empty and
//! never contain `/`, so the prefixes cannot collide.

/// Who did something, and from where, as the audit log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor<'a> {
    /// A user id, or `cli`, `system`, or `anonymous` (a failed sign-in).
    pub id: &'a str,
    /// The client address the request came from, when there was a request.
    pub source: Option<&'a str>,
}

impl<'a> Actor<'a> {
    /// An actor acting from a network address.
    pub fn from_address(id: &'a str, source: &'a str) -> Actor<'a> {
        Actor {
            id,
            source: Some(source),
        }
    }
}

impl<'a> From<&'a str> for Actor<'a> {
    fn from(id: &'a str) -> Actor<'a> {
        Actor { id, source: None }
    }
}

impl<'a> From<&'a String> for Actor<'a> {
    fn from(id: &'a String) -> Actor<'a> {
        Actor::from(id.as_str())
    }
}

/// The actor of a failed sign-in: whoever typed the password is not known to be the user.
pub const ANONYMOUS: &str = "anonymous";

/// Largest page [`crate::Store::list_audit`] returns.
pub const MAX_AUDIT_PAGE: usize = 200;

/// One page of a team's audit log, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// The events, newest first.
    pub events: Vec<crate::AuditEvent>,
    /// Pass as `before` to read the next (older) page; `None` on the last page.
    pub next_before: Option<u64>,
}

/// The key of event `seq` of `team_id` (or of no team).
pub(crate) fn event_key(team_id: Option<&str>, seq: u64) -> Vec<u8> {
    let team = team_id.unwrap_or("");
    let mut k = Vec::with_capacity(team.len() + 9);
    k.extend_from_slice(team.as_bytes());
    k.push(b'/');
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Keys written before events were grouped by team were the bare 8-byte sequence number;
/// every current key is at least 9 bytes (`/` + 8).
pub(crate) fn is_legacy_key(k: &[u8]) -> bool {
    k.len() == 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_teams_keys_sort_by_sequence_and_never_share_a_prefix_with_another_team() {
        let a1 = event_key(Some("team_a"), 1);
        let a256 = event_key(Some("team_a"), 256);
        assert!(a1 < a256, "big-endian sequence numbers sort numerically");
        assert!(a256.starts_with(b"team_a/"));
        // "team_a" is a prefix of "team_ab" as a string, but not once the '/' is included.
        assert!(!event_key(Some("team_ab"), 1).starts_with(b"team_a/"));
        assert!(event_key(None, 7).starts_with(b"/"));
        assert!(!is_legacy_key(&event_key(None, 7)));
        assert!(is_legacy_key(&7u64.to_be_bytes()));
    }
}
