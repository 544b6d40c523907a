//! Key parsing: `apikey::check_format` against the rule written out independently, and the
//! bearer-token extraction of the `Authorization` header.

#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use billstack_host::decision::Credential;
use billstack_keystore::apikey;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Input<'a> {
    /// Any text as the key.
    Text(&'a str),
    /// A well-formed key built from 20 random bytes, then one byte changed at `at`: random
    /// text almost never carries a valid checksum, so this reaches the accepting path.
    Edited { body: [u8; 20], at: u8, to: u8 },
    /// Any text as an `Authorization` header value.
    Header(&'a str),
}

#[path = "../../tests/oracle/key_rule.rs"]
mod key_rule;
use key_rule::follows_the_rule;

fn check(candidate: &str) {
    let accepted = apikey::check_format(candidate).is_ok();
    assert_eq!(accepted, follows_the_rule(candidate), "{candidate:?}");
    if accepted {
        report_accepted();
    }
}

/// Prints how many keys were accepted at every power of two, so a run shows that the accepting
/// path was exercised (`fuzz/run.sh` reports the last count).
fn report_accepted() {
    static ACCEPTED: AtomicU64 = AtomicU64::new(0);
    let n = ACCEPTED.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        eprintln!("fuzz-count: {n} accepted");
    }
}

fuzz_target!(|input: Input<'_>| match input {
    Input::Text(text) => check(text),
    Input::Edited { body, at, to } => {
        let mut key = format!(
            "bs_{}",
            body.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        key.push_str(&format!("{:08x}", crc32fast::hash(key.as_bytes())));
        assert!(follows_the_rule(&key));
        check(&key);
        let mut bytes = key.into_bytes();
        let at = usize::from(at) % (bytes.len() + 1);
        if at < bytes.len() {
            bytes[at] = to;
        }
        if let Ok(edited) = String::from_utf8(bytes) {
            check(&edited);
        }
    }
    Input::Header(value) => {
        let Some(token) = Credential::AuthorizationHeader(Some(value)).token() else {
            panic!("a header that was sent is a credential that was sent");
        };
        if !token.is_empty() {
            // Only `Bearer <token>` (scheme in any case) yields a token, and it is a piece of
            // the header, never anything else.
            assert!(value.contains(token));
            let scheme = value.trim_start().get(..7).unwrap_or_default();
            assert!(scheme.eq_ignore_ascii_case("bearer "), "{value:?}");
        }
    }
});
