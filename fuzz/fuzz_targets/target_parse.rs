//! Request-target parsing: `parse_target` never panics, and whatever it accepts is a plain
//! route by the independent oracle in `tests/oracle/mod.rs`, split at the right places.

#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use billstack_host::decision::{MAX_TARGET_LEN, TargetError, parse_target};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/oracle/mod.rs"]
#[allow(dead_code)]
mod oracle;

/// Prints how many targets were accepted at every power of two, so a run shows that the
/// property was exercised (`fuzz/run.sh` reports the last count).
fn report_accepted() {
    static ACCEPTED: AtomicU64 = AtomicU64::new(0);
    let n = ACCEPTED.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        eprintln!("fuzz-count: {n} accepted");
    }
}

mod shared;

#[derive(Debug, Arbitrary)]
enum Input<'a> {
    /// A table route under a team and project, edited (see `shared`).
    Built(shared::BuiltTarget<'a>),
    /// Any text.
    Raw(&'a str),
}

fuzz_target!(|input: Input<'_>| {
    let built;
    let target = match &input {
        Input::Raw(text) => *text,
        Input::Built(b) => {
            built = b.build().0;
            built.as_str()
        }
    };
    match parse_target(target) {
        Ok(t) => {
            report_accepted();
            assert!(target.len() <= MAX_TARGET_LEN);
            assert!(
                oracle::is_plain_target(target, t.team_id, Some(t.project_id)),
                "accepted {target:?} as {t:?}"
            );
            // The path ends at the first `?` or `#`; the query is everything after the first
            // `?` (a fragment is never sent, but is cut off if it is).
            let path_end = target.find(['?', '#']).unwrap_or(target.len());
            assert_eq!(t.path, &target[..path_end]);
            assert_eq!(t.query, target.find('?').map(|q| &target[q + 1..]));
            let prefix = format!(
                "/api/billstack/teams/{}/projects/{}",
                t.team_id, t.project_id
            );
            let below = t
                .path
                .strip_prefix(prefix.as_str())
                .expect("the path starts with it");
            assert_eq!(t.resource, if below.is_empty() { "/" } else { below });
            assert!(t.resource.starts_with('/'));
        }
        Err(TargetError::Invalid(why)) => assert!(!why.is_empty()),
        Err(TargetError::NotTeamApi) => {}
    }
});
