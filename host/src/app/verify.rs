//! The verify service behind all three front doors (forward auth, reverse proxy, JSON
//! verify): the address throttle, the decision (in memory when it can be, else on the
//! blocking pool behind a bound), the key's request budget, usage and metrics.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use billstack_keystore::apikey;

use super::App;
use crate::decision::{Credential, Decider, Decision, Denied, DenyKind, Identity, internal};
use crate::ratelimit::Quota;

/// The front door a request came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontDoor {
    /// `/auth/verify`.
    ForwardAuth,
    /// The reverse proxy.
    Proxy,
    /// `POST /api/billstack/keys/verify`.
    JsonVerify,
}

impl FrontDoor {
    /// The label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FrontDoor::ForwardAuth => "forward_auth",
            FrontDoor::Proxy => "proxy",
            FrontDoor::JsonVerify => "json_verify",
        }
    }

    /// Whether failed keys are counted, and refused, per client address. Not for JSON verify:
    /// its callers are backends verifying for many end users from one address, and a few of
    /// those users' bad keys must not refuse everyone else's.
    fn throttled_by_address(self) -> bool {
        self != FrontDoor::JsonVerify
    }
}

/// The credential as a front door received it (owned, so it can move to the blocking pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// The `Authorization` header's value, if there was one.
    AuthorizationHeader(Option<String>),
    /// A raw key given directly (JSON verify).
    RawKey(String),
}

impl Presented {
    /// The borrowed form the decision takes.
    pub fn as_credential(&self) -> Credential<'_> {
        match self {
            Presented::AuthorizationHeader(h) => Credential::AuthorizationHeader(h.as_deref()),
            Presented::RawKey(k) => Credential::RawKey(k),
        }
    }
}

/// One request to decide.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The door it came in by.
    pub door: FrontDoor,
    /// The client's address (for the address throttle).
    pub client: IpAddr,
    /// The key, as presented.
    pub credential: Presented,
    /// The original request's method.
    pub method: String,
    /// The original request's path and query.
    pub target: String,
}

/// A decision and the budget that applied to it, for the `RateLimit-*` and `Retry-After`
/// headers.
#[derive(Debug)]
pub struct Checked {
    /// Allow or deny.
    pub decision: Decision,
    /// The budget it was counted against, if any.
    pub budget: Option<Budget>,
}

/// Which budget a request was counted against.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// The key's own `rateLimit`.
    Key(Quota),
    /// Too many failed keys from the client's address.
    Address {
        /// Failures allowed per window.
        limit: u32,
        /// Seconds until the window ends.
        retry_after: u64,
    },
}

impl Budget {
    /// Seconds until a refused request may be retried (`None` when it was not refused).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Budget::Key(q) => (!q.allowed).then_some(q.reset_seconds),
            Budget::Address { retry_after, .. } => Some(*retry_after),
        }
    }

    /// `(limit, remaining, seconds until reset)` for the `RateLimit-*` headers.
    pub fn headers(&self) -> (u32, u32, u64) {
        match self {
            Budget::Key(q) => (q.limit, q.remaining, q.reset_seconds),
            Budget::Address { limit, retry_after } => (*limit, 0, *retry_after),
        }
    }
}

fn rate_limited(message: &str, identity: Option<Identity>) -> Decision {
    Decision::Deny(Denied {
        identity,
        ..Denied::new(DenyKind::RateLimited, message, true)
    })
}

impl App {
    /// Decides one request at a front door. Memory-only decisions are made here, on the
    /// caller's thread; the rest run on the blocking pool, at most
    /// [`super::MAX_CONCURRENT_DECISIONS`] at once. Then the key's budget, usage and metrics.
    pub async fn verify(self: &Arc<Self>, request: VerifyRequest) -> Checked {
        let started = Instant::now();
        let now = self.now_ms();
        let door = request.door.as_str();
        let by_address = request.door.throttled_by_address();
        // An address that keeps presenting keys that do not authenticate is refused before its
        // key costs a storage lookup; keys already in memory (in use by someone) still work, so
        // one guesser behind a shared address cannot lock out its neighbours.
        if let Some(retry_after) = by_address
            .then(|| self.address_throttle.blocked(request.client, now))
            .flatten()
        {
            let token = request.credential.as_credential().token();
            let in_use = token.is_some_and(|t| {
                apikey::check_format(t).is_ok() && self.store.cached_key(t).is_some()
            });
            if !in_use {
                let decision = rate_limited(
                    "too many requests with invalid API keys from this address; retry later",
                    None,
                );
                self.metrics
                    .decision(door, "rate_limited", started.elapsed().as_secs_f64());
                return Checked {
                    decision,
                    budget: Some(Budget::Address {
                        limit: self.address_throttle.limit(),
                        retry_after,
                    }),
                };
            }
        }
        // Most decisions need only memory (a refused credential, or a cached key under the
        // deployment default) and take microseconds: made here, they skip the hop to the
        // blocking pool, which costs more than the decision.
        let fast = self.decider(now).decide_without_blocking(
            request.credential.as_credential(),
            &request.method,
            &request.target,
        );
        let mut decision = match fast {
            Some(decision) => decision,
            None => match self.decisions.acquire().await {
                Ok(_permit) => {
                    let (app, req) = (Arc::clone(self), request.clone());
                    tokio::task::spawn_blocking(move || {
                        app.decider(now).decide(
                            req.credential.as_credential(),
                            &req.method,
                            &req.target,
                        )
                    })
                    .await
                    .unwrap_or_else(|e| internal(e.to_string()))
                }
                Err(_) => internal("the decision semaphore is closed"),
            },
        };
        let mut budget = None;
        if let Decision::Deny(d) = &decision
            && d.kind == DenyKind::InvalidKey
            && by_address
        {
            self.address_throttle.fail(request.client, now);
        }
        // Every authenticated request counts against its key's budget, allowed or not; over
        // it, the answer is 429 whatever the policy said.
        if let Some(id) = decision.identity()
            && let Some(limit) = &id.rate_limit
        {
            let quota = if self.store.shared_counters().is_none() {
                self.key_limiter.check(&id.key_id, limit, now)
            } else {
                match self.shared_budgets.check_local(&id.key_id, limit, now) {
                    crate::ratelimit::LocalBudget::Decided(quota) => quota,
                    crate::ratelimit::LocalBudget::Ask => {
                        let (app, key_id, budget) = (Arc::clone(self), id.key_id.clone(), *limit);
                        tokio::task::spawn_blocking(move || {
                            let counters = app.store.shared_counters()?;
                            Some(
                                app.shared_budgets
                                    .check_shared(counters, &key_id, &budget, now),
                            )
                        })
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| self.key_limiter.check(&id.key_id, limit, now))
                    }
                }
            };
            if !quota.allowed {
                decision = rate_limited(
                    "the API key has used its request budget for this window; retry later",
                    decision.identity().cloned(),
                );
            }
            budget = Some(Budget::Key(quota));
        }
        if let Some(id) = decision.identity() {
            let refused = match &decision {
                Decision::Allow(_) => None,
                Decision::Deny(d) => Some(d.kind.code()),
            };
            self.usage.note(&id.key_id, now, refused);
        }
        let outcome = match &decision {
            Decision::Allow(_) => "allow",
            Decision::Deny(d) => {
                if d.kind == DenyKind::PolicyError {
                    let (label, cause) = d
                        .cause
                        .as_ref()
                        .map_or(("unknown", String::new()), |c| (c.label(), c.to_string()));
                    self.metrics.plugin_error(label);
                    tracing::warn!(
                        front_door = door,
                        cause,
                        "policy plugin failed; request refused"
                    );
                }
                d.kind.code()
            }
        };
        self.metrics
            .decision(door, outcome, started.elapsed().as_secs_f64());
        Checked { decision, budget }
    }

    fn decider(&self, now_ms: i64) -> Decider<'_> {
        Decider {
            store: &*self.store,
            policies: &self.policies,
            now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use billstack_keystore::RateLimit;
    use billstack_keystore::clock::Clock;

    use super::*;
    use crate::app::keys::KeyRequest;
    use crate::app::testing::{TestApp, app, options};
    use crate::app::{AppOptions, Caller};

    const CUSTOMERS: &str = "/api/billstack/teams/team_a/projects/proj_a/customers";

    fn key(t: &TestApp, rate_limit: Option<RateLimit>) -> String {
        t.app
            .create_key(
                &Caller::Operator,
                "team_a",
                KeyRequest {
                    name: "k".into(),
                    rate_limit,
                    ..KeyRequest::default()
                },
            )
            .expect("key")
            .1
    }

    fn ask(t: &TestApp, door: FrontDoor, client: [u8; 4], raw: &str) -> Checked {
        let request = VerifyRequest {
            door,
            client: IpAddr::from(client),
            credential: match door {
                FrontDoor::JsonVerify => Presented::RawKey(raw.into()),
                _ => Presented::AuthorizationHeader(Some(format!("Bearer {raw}"))),
            },
            method: "GET".into(),
            target: CUSTOMERS.into(),
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(t.app.verify(request))
    }

    fn kind(c: &Checked) -> Option<DenyKind> {
        match &c.decision {
            Decision::Allow(_) => None,
            Decision::Deny(d) => Some(d.kind),
        }
    }

    #[test]
    fn an_address_with_too_many_bad_keys_is_refused_but_keys_in_use_still_work() {
        let t = app(AppOptions {
            unknown_keys_per_address: 2,
            ..options()
        });
        let good = key(&t, None);
        // Warm the key cache, as a key in use is.
        assert_eq!(
            kind(&ask(&t, FrontDoor::ForwardAuth, [192, 0, 2, 9], &good)),
            None
        );
        let bad = format!("bs_{}", "0".repeat(48));
        let guesser = [192, 0, 2, 1];
        for _ in 0..2 {
            let c = ask(&t, FrontDoor::ForwardAuth, guesser, &bad);
            assert_eq!(kind(&c), Some(DenyKind::InvalidKey), "within the limit");
        }
        let blocked = ask(&t, FrontDoor::Proxy, guesser, &bad);
        assert_eq!(kind(&blocked), Some(DenyKind::RateLimited), "over it");
        assert!(matches!(
            blocked.budget,
            Some(Budget::Address { limit: 2, .. })
        ));
        assert_eq!(
            kind(&ask(&t, FrontDoor::ForwardAuth, guesser, &good)),
            None,
            "a key in use still works from that address"
        );
        assert_eq!(
            kind(&ask(&t, FrontDoor::JsonVerify, guesser, &bad)),
            Some(DenyKind::InvalidKey),
            "JSON verify is never throttled by address"
        );
        // The window ends by the clock, not by waiting.
        t.clock.advance(Duration::from_secs(60));
        assert_eq!(
            kind(&ask(&t, FrontDoor::ForwardAuth, guesser, &bad)),
            Some(DenyKind::InvalidKey)
        );
    }

    #[test]
    fn a_keys_budget_refuses_over_it_until_its_window_ends() {
        let t = app(options());
        let raw = key(
            &t,
            Some(RateLimit {
                limit: 2,
                window_seconds: 10,
            }),
        );
        for remaining in [1, 0] {
            let c = ask(&t, FrontDoor::ForwardAuth, [192, 0, 2, 1], &raw);
            assert_eq!(kind(&c), None);
            match c.budget {
                Some(Budget::Key(q)) => assert_eq!(q.remaining, remaining),
                other => panic!("{other:?}"),
            }
        }
        let over = ask(&t, FrontDoor::JsonVerify, [192, 0, 2, 1], &raw);
        assert_eq!(kind(&over), Some(DenyKind::RateLimited));
        assert_eq!(over.budget.and_then(|b| b.retry_after()), Some(10));
        assert!(over.decision.identity().is_some(), "the key is still named");
        t.clock.advance(Duration::from_secs(10));
        assert_eq!(kind(&ask(&t, FrontDoor::Proxy, [192, 0, 2, 1], &raw)), None);
    }

    #[test]
    fn decisions_are_counted_as_usage_of_the_key() {
        let t = app(options());
        let raw = key(&t, None);
        ask(&t, FrontDoor::ForwardAuth, [192, 0, 2, 1], &raw);
        let outside = VerifyRequest {
            door: FrontDoor::JsonVerify,
            client: IpAddr::from([192, 0, 2, 1]),
            credential: Presented::RawKey(raw.clone()),
            method: "GET".into(),
            target: "/api/billstack/teams/team_b/projects/proj_b/customers".into(),
        };
        let refused = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(t.app.verify(outside));
        assert_eq!(kind(&refused), Some(DenyKind::TeamMismatch));
        let listed = t.app.list_keys(&Caller::Operator, "team_a").expect("list");
        let report = t
            .app
            .key_usage(&Caller::Operator, "team_a", &listed[0].id, 1)
            .expect("usage");
        assert_eq!(report.last_used_at, Some(t.clock.now_ms()));
        let (_, today) = &report.days[0];
        assert_eq!((today.allowed, today.denied), (1, 1));
        assert_eq!(
            today.refused,
            [("team_mismatch".to_owned(), 1)].into(),
            "refusals are counted by reason"
        );
    }
}
