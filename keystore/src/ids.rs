//! Identifiers: random, url-safe, with a kind prefix (`key_`, `team_`, `proj_`, `user_`).

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A new random id such as `key_3kq0c9x1m2a7b8d4e5f6` (20 characters, about 103 bits).
pub fn new_id(kind: &str) -> String {
    let mut rng = rand::rng();
    let mut id = String::with_capacity(kind.len() + 21);
    id.push_str(kind);
    id.push('_');
    for _ in 0..20 {
        id.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    id
}

/// Whether `id` may be used as a team, project, user or key id: 1–64 characters of
/// `A-Z a-z 0-9 _ -`. Ids appear in URL paths, so nothing else is allowed.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_valid_prefixed_and_distinct() {
        let a = new_id("team");
        assert!(a.starts_with("team_"));
        assert!(is_valid_id(&a));
        assert_ne!(a, new_id("team"));
    }

    #[test]
    fn id_validation_limits() {
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("team/1"));
        assert!(!is_valid_id("team 1"));
        assert!(!is_valid_id(".."));
    }
}
