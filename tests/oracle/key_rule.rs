//! The key rule as an oracle, shared by the key-parsing property tests in
//! `keystore/src/apikey.rs` and the `key_format` fuzz target: written out from DESIGN.md on its
//! own, so that it and `check_format` can disagree.

/// `bs_`, 40 lower-case hex digits, then the CRC-32 of the first 43 characters as 8 lower-case
/// hex digits.
pub fn follows_the_rule(candidate: &str) -> bool {
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    candidate.len() == 51
        && candidate.is_ascii()
        && candidate.starts_with("bs_")
        && lower_hex(&candidate[3..])
        && format!("{:08x}", crc32fast::hash(&candidate.as_bytes()[..43])) == candidate[43..]
}
