//! The API key format: `bs_` + 40 hex of CSPRNG output + 8 hex of CRC-32 (IEEE) over the first
//! 43 characters. The checksum lets the host (and secret scanners) reject a mistyped or made-up
//! key without touching storage.

use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// The fixed start of every key.
pub const KEY_PREFIX: &str = "bs_";
/// Length of a raw key: `bs_` + 40 random hex + 8 checksum hex.
pub const KEY_LEN: usize = 3 + 40 + 8;
/// Length of the displayed prefix (`bs_a1b2`).
pub const DISPLAY_PREFIX_LEN: usize = 7;

/// Why a string is not a well-formed BillStack key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// The string does not start with `bs_`.
    #[error("the key does not start with bs_")]
    Prefix,
    /// The string is not exactly 51 characters.
    #[error("the key is not {KEY_LEN} characters long")]
    Length,
    /// A character after `bs_` is not lowercase hex.
    #[error("the key contains characters other than lowercase hex after bs_")]
    NotHex,
    /// The last 8 hex do not match the CRC-32 of the rest.
    #[error("the key's checksum does not match")]
    Checksum,
}

/// A freshly generated key. The raw form exists only here and in the create response.
pub struct NewKey {
    /// The full secret, shown once.
    pub raw: String,
    /// SHA-256 of the raw key, the only form stored.
    pub hash: [u8; 32],
    /// The first 7 characters, safe to display.
    pub prefix: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, even in debug output.
        f.debug_struct("NewKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Generates a new key from the OS CSPRNG.
pub fn generate() -> NewKey {
    let mut random = [0u8; 20];
    // The OS CSPRNG failing is not something to carry on from: no key is better than a weak one.
    rand::rngs::OsRng
        .try_fill_bytes(&mut random)
        .expect("the OS random number generator is unavailable");
    let mut raw = String::with_capacity(KEY_LEN);
    raw.push_str(KEY_PREFIX);
    raw.push_str(&hex::encode(random));
    let crc = crc32fast::hash(raw.as_bytes());
    raw.push_str(&format!("{crc:08x}"));
    debug_assert_eq!(check_format(&raw), Ok(()));
    NewKey {
        hash: hash(&raw),
        prefix: raw[..DISPLAY_PREFIX_LEN].to_string(),
        raw,
    }
}

/// Checks prefix, length, alphabet and checksum, in that order, without any storage access.
pub fn check_format(candidate: &str) -> Result<(), KeyFormatError> {
    let bytes = candidate.as_bytes();
    if !bytes.starts_with(KEY_PREFIX.as_bytes()) {
        return Err(KeyFormatError::Prefix);
    }
    if bytes.len() != KEY_LEN {
        return Err(KeyFormatError::Length);
    }
    let body = &bytes[3..];
    if !body.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(KeyFormatError::NotHex);
    }
    let expected = crc32fast::hash(&bytes[..43]);
    let mut got = 0u32;
    for &b in &bytes[43..] {
        let nibble = if b <= b'9' { b - b'0' } else { b - b'a' + 10 };
        got = (got << 4) | u32::from(nibble);
    }
    if got != expected {
        return Err(KeyFormatError::Checksum);
    }
    Ok(())
}

/// SHA-256 of a raw key: the only form of a key that is ever stored.
pub fn hash(raw: &str) -> [u8; 32] {
    Sha256::digest(raw.as_bytes()).into()
}

#[cfg(test)]
#[path = "../../tests/oracle/key_rule.rs"]
mod key_rule;

#[cfg(test)]
mod tests {
    use super::key_rule::follows_the_rule;
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.raw.len(), KEY_LEN);
        assert!(a.raw.starts_with("bs_"));
        assert_eq!(check_format(&a.raw), Ok(()));
        assert_ne!(a.raw, b.raw);
        assert_eq!(a.prefix, &a.raw[..7]);
        assert_eq!(a.hash, hash(&a.raw));
        assert!(!format!("{a:?}").contains(&a.raw[7..]));
    }

    #[test]
    fn checksum_is_crc32_ieee_of_first_43_chars() {
        let body = "bs_0123456789abcdef0123456789abcdef01234567";
        let crc = crc32fast::hash(body.as_bytes());
        let key = format!("{body}{crc:08x}");
        assert_eq!(check_format(&key), Ok(()));
        // Known CRC-32/IEEE value: "123456789" -> cbf43926.
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn malformed_keys_are_rejected_with_the_reason() {
        let good = generate().raw;
        assert_eq!(check_format(""), Err(KeyFormatError::Prefix));
        assert_eq!(
            check_format(&good.replacen("bs_", "sk_", 1)),
            Err(KeyFormatError::Prefix)
        );
        assert_eq!(check_format(&good[..50]), Err(KeyFormatError::Length));
        assert_eq!(
            check_format(&format!("{good}0")),
            Err(KeyFormatError::Length)
        );
        assert_eq!(
            check_format(&"bs_".repeat(3400)),
            Err(KeyFormatError::Length)
        );
        let upper = format!("bs_{}", good[3..].to_uppercase());
        assert_eq!(check_format(&upper), Err(KeyFormatError::NotHex));
        let mut flipped = good.clone().into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            check_format(std::str::from_utf8(&flipped).expect("ascii")),
            Err(KeyFormatError::Checksum)
        );
        let mut multibyte = good.clone();
        multibyte.replace_range(10..11, "é");
        assert!(check_format(&multibyte).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// Any text: no panic, and accepted exactly when it follows the rule (almost never).
        #[test]
        fn any_text_is_accepted_exactly_when_it_follows_the_rule(text in ".{0,80}") {
            proptest::prop_assert_eq!(check_format(&text).is_ok(), follows_the_rule(&text));
        }

        /// A generated key with one character replaced (by any character, multi-byte ones
        /// included), one inserted or one removed: refused unless it is the same key, so no
        /// neighbour of a key is ever a key.
        #[test]
        fn every_neighbour_of_a_key_is_refused(
            at in 0usize..52,
            edit in 0u8..3,
            replacement in proptest::char::any(),
        ) {
            let key = generate().raw;
            let mut edited = key.clone();
            let at = at.min(edited.len() - 1);
            match edit {
                0 => edited.replace_range(at..at + 1, &replacement.to_string()),
                1 => edited.insert(at, replacement),
                _ => {
                    edited.remove(at);
                }
            }
            proptest::prop_assert_eq!(check_format(&edited).is_ok(), edited == key);
            proptest::prop_assert_eq!(follows_the_rule(&edited), edited == key);
        }
    }
}
