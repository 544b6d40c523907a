//! Accounts: sign-in (with its rate limits), sessions (their ages), membership checks, and
//! who may do what in a team.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use billstack_keystore::{Role, Session, Team, User};

use super::{App, AppError, AppResult, Caller};

/// A session ends after this long without use.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// A session ends this long after login, used or not.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Activity is written back at most this often per session (it only moves the idle expiry).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Failed logins allowed per (email address, client address) in a window. Counted per pair,
/// never per account alone: a guesser can then lock an account out from their own address,
/// but never its owner out from theirs.
pub const MAX_FAILURES_PER_EMAIL: u32 = 5;
/// Failed logins allowed per client address in a window, over every account it tries.
pub const MAX_FAILURES_PER_IP: u32 = 50;
/// The rate-limit window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Counts failed logins per key (an email from an address, or an address) in fixed windows.
#[derive(Default)]
pub struct LoginLimiter {
    /// Per key: failures so far and when the window started (Unix ms).
    failures: Mutex<HashMap<String, (u32, i64)>>,
}

impl LoginLimiter {
    /// `Err(seconds to wait)` when any of `keys` has used its limit in the current window.
    fn check(&self, keys: &[(String, u32)], now_ms: i64) -> Result<(), u64> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for (key, limit) in keys {
            if let Some((count, start)) = map.get(key) {
                let elapsed = now_ms - start;
                if elapsed < ms(FAILURE_WINDOW) && count >= limit {
                    return Err(((ms(FAILURE_WINDOW) - elapsed) / 1000) as u64 + 1);
                }
            }
        }
        Ok(())
    }

    fn fail(&self, keys: &[(String, u32)], now_ms: i64) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (_, start)| now_ms - *start < ms(FAILURE_WINDOW));
        }
        for (key, _) in keys {
            let entry = map.entry(key.clone()).or_insert((0, now_ms));
            if now_ms - entry.1 >= ms(FAILURE_WINDOW) {
                *entry = (0, now_ms);
            }
            entry.0 += 1;
        }
    }

    fn succeed(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// A sign-in throttle's counter among replicas.
fn shared_login_name(key: &str) -> String {
    format!("login:{key}")
}

/// The sign-in throttle among replicas (PostgreSQL): the same limits, counted in the shared
/// counters in windows of [`FAILURE_WINDOW`] aligned to the clock, so an address guessing
/// through several replicas gets no more tries than through one. Adds `delta` (0 to read, 1
/// for a failure) and answers as [`LoginLimiter::check`] does.
fn shared_login_check(
    counters: &dyn billstack_keystore::storage::SharedCounters,
    keys: &[(String, u32)],
    now_ms: i64,
    delta: u64,
) -> AppResult<Result<(), u64>> {
    let window_ms = ms(FAILURE_WINDOW);
    let window_start = now_ms - now_ms.rem_euclid(window_ms);
    let adds: Vec<_> = keys
        .iter()
        .map(|(key, _)| billstack_keystore::storage::CounterAdd {
            name: shared_login_name(key),
            window_start,
            window_ms,
            delta,
        })
        .collect();
    let totals = counters.add_counts(&adds)?;
    let over = keys
        .iter()
        .zip(&totals)
        .any(|((_, limit), total)| *total >= u64::from(*limit));
    let retry_after = u64::try_from((window_start + window_ms - now_ms) / 1000 + 1).unwrap_or(1);
    Ok(if over { Err(retry_after) } else { Ok(()) })
}

/// Whether a session has ended at `now_ms`: idle too long, or older than the absolute limit.
pub fn session_expired(session: &Session, now_ms: i64) -> bool {
    let idle = now_ms - session.last_seen_at > ms(IDLE_TIMEOUT);
    let old = now_ms - session.created_at > ms(ABSOLUTE_TIMEOUT);
    idle || old
}

/// A successful sign-in: the account, its teams, and its new session's raw token (for the
/// cookie).
#[derive(Debug)]
pub struct SignedIn {
    /// The account.
    pub user: User,
    /// The teams it belongs to, with its role in each.
    pub teams: Vec<(Team, Role)>,
    /// The session token; only its hash is stored.
    pub token: String,
}

/// What a team-scoped service needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any member of the team.
    Member,
    /// An owner; the text completes "only team owners can …".
    Owner(&'static str),
}

impl App {
    /// Checks an email and password from `source` (an address), within the sign-in limits:
    /// at most [`MAX_FAILURES_PER_EMAIL`] failures per email and address and
    /// [`MAX_FAILURES_PER_IP`] per address in [`FAILURE_WINDOW`]. The attempt is in the audit
    /// log before it is answered; a success starts a session. Argon2id: tens of ms of CPU.
    pub fn sign_in(&self, email: &str, password: &str, source: &str) -> AppResult<SignedIn> {
        let email = email.trim().to_lowercase();
        let keys = [
            (
                format!("account:{email} from:{source}"),
                MAX_FAILURES_PER_EMAIL,
            ),
            (format!("ip:{source}"), MAX_FAILURES_PER_IP),
        ];
        let shared = self.store.shared_counters();
        let checked = match shared {
            Some(counters) => shared_login_check(counters, &keys, self.now_ms(), 0)?,
            None => self.login_limiter.check(&keys, self.now_ms()),
        };
        if let Err(retry_after) = checked {
            self.metrics.login("rate_limited");
            return Err(AppError::RateLimited { retry_after });
        }
        let verified = self.store.verify_password(&email, password)?;
        self.store
            .record_sign_in(&email, verified.is_some(), source)?;
        let Some(user) = verified else {
            match shared {
                Some(counters) => {
                    shared_login_check(counters, &keys, self.now_ms(), 1)?.ok();
                }
                None => self.login_limiter.fail(&keys, self.now_ms()),
            }
            self.metrics.login("failure");
            tracing::info!(client = %source, "sign-in failed");
            return Err(AppError::Unauthenticated("wrong email or password"));
        };
        match shared {
            Some(counters) => counters.reset_count(&shared_login_name(&keys[0].0))?,
            None => self.login_limiter.succeed(&keys[0].0),
        }
        self.metrics.login("success");
        tracing::info!(user = %user.id, client = %source, "signed in");
        self.start_session(user)
    }

    /// A new session for `user`, with their teams.
    pub(super) fn start_session(&self, user: User) -> AppResult<SignedIn> {
        let (token, _) = self.store.create_session(&user.id)?;
        let teams = self.store.user_teams(&user.id)?;
        Ok(SignedIn { user, teams, token })
    }

    /// Ends a session (durably: the token never works again).
    pub fn sign_out(&self, token: &str) -> AppResult<()> {
        Ok(self.store.delete_session(token)?)
    }

    /// The account of a session token. An idle ([`IDLE_TIMEOUT`]) or old
    /// ([`ABSOLUTE_TIMEOUT`]) session is deleted and refused; a used one has its activity
    /// written back (at most once a minute).
    pub fn session_user(&self, token: &str) -> AppResult<User> {
        let Some(session) = self.store.get_session(token)? else {
            return Err(AppError::Unauthenticated(
                "the session has ended; sign in again",
            ));
        };
        let now = self.now_ms();
        if session_expired(&session, now) {
            self.store.delete_session(token)?;
            return Err(AppError::Unauthenticated(
                "the session has expired; sign in again",
            ));
        }
        let Some(user) = self.store.get_user(&session.user_id)? else {
            return Err(AppError::Unauthenticated("the account no longer exists"));
        };
        if now - session.last_seen_at > ms(TOUCH_EVERY) {
            self.store.touch_session(token, now)?;
        }
        Ok(user)
    }

    /// The teams an account belongs to, with its role in each.
    pub fn teams_of(&self, user_id: &str) -> AppResult<Vec<(Team, Role)>> {
        Ok(self.store.user_teams(user_id)?)
    }

    /// Whether `caller` may act in `team_id` as `need` says. An account that is not a member
    /// gets `NotFound` (not a refusal), so a team's existence is not revealed; the operator
    /// (command line) may act in any team that exists.
    pub fn authorize(&self, caller: &Caller, team_id: &str, need: Need) -> AppResult<()> {
        let role = match caller {
            Caller::Operator => {
                if self.store.get_team(team_id)?.is_none() {
                    return Err(AppError::not_found("team", team_id));
                }
                return Ok(());
            }
            Caller::Account { user_id, .. } => self
                .store
                .membership(team_id, user_id)?
                .ok_or_else(|| AppError::not_found("team", team_id))?,
        };
        match (need, role) {
            (Need::Member, _) | (Need::Owner(_), Role::Owner) => Ok(()),
            (Need::Owner(action), Role::Member) => Err(AppError::OwnersOnly(action)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_or_old_and_not_before() {
        let idle = ms(IDLE_TIMEOUT);
        let absolute = ms(ABSOLUTE_TIMEOUT);
        let s = Session {
            user_id: "user_1".into(),
            created_at: 0,
            last_seen_at: 0,
        };
        assert!(
            !session_expired(&s, idle),
            "exactly at the idle limit is still fine"
        );
        assert!(session_expired(&s, idle + 1), "idle too long");
        // Kept busy, it still ends at the absolute limit.
        let busy = Session {
            last_seen_at: absolute,
            ..s.clone()
        };
        assert!(!session_expired(&busy, absolute));
        assert!(session_expired(&busy, absolute + 1));
    }

    #[test]
    fn the_limiter_allows_up_to_the_limit_then_refuses_until_the_window_ends() {
        let l = LoginLimiter::default();
        let keys = [("email:a".to_string(), 2)];
        let t = 1_000_000;
        assert!(l.check(&keys, t).is_ok());
        l.fail(&keys, t);
        assert!(l.check(&keys, t).is_ok());
        l.fail(&keys, t + 1);
        assert_eq!(
            l.check(&keys, t + 1),
            Err(FAILURE_WINDOW.as_secs()),
            "the wait counts from the window's start"
        );
        assert!(l.check(&keys, t + ms(FAILURE_WINDOW) - 1).is_err());
        assert!(
            l.check(&keys, t + ms(FAILURE_WINDOW)).is_ok(),
            "a new window"
        );
        l.fail(&keys, t + ms(FAILURE_WINDOW));
        assert!(
            l.check(&keys, t + ms(FAILURE_WINDOW)).is_ok(),
            "the count restarted"
        );
        l.fail(&keys, t + ms(FAILURE_WINDOW));
        assert!(l.check(&keys, t + ms(FAILURE_WINDOW)).is_err());
        l.succeed("email:a");
        assert!(l.check(&keys, t + ms(FAILURE_WINDOW)).is_ok());
    }
}
