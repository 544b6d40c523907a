//! Request budgets, in memory: per key (the key's own `rateLimit`) and, for credentials that do
//! not authenticate, per client address, so that guessing keys is throttled before it costs a
//! storage lookup.
//!
//! Both use fixed windows that start with the first request counted (so every request of a
//! window sees the same reset time, and a fresh budget is whole). Counts live only in this
//! process: a restart starts every window afresh.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use billstack_keystore::RateLimit;
use billstack_keystore::storage::{CounterAdd, SharedCounters};

/// Independent locks, so that concurrent requests for different keys rarely wait on each other.
const SHARDS: usize = 16;
/// Most windows tracked per shard; expired ones are dropped first when it fills.
const MAX_ENTRIES_PER_SHARD: usize = 16 * 1024;

/// A key's budget after counting one request, as the `RateLimit-*` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed per window.
    pub limit: u32,
    /// Requests left in this window after this one.
    pub remaining: u32,
    /// Whole seconds until the window resets (at least 1).
    pub reset_seconds: u64,
    /// Whether this request is within the budget.
    pub allowed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    ends_ms: i64,
    count: u32,
}

/// Windows keyed by `K`, sharded.
struct Windows<K> {
    shards: Vec<Mutex<HashMap<K, Window>>>,
    hasher: RandomState,
}

impl<K: Hash + Eq + Clone> Windows<K> {
    fn new() -> Self {
        Windows {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, HashMap<K, Window>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` to the current window of `key` (a fresh one when the last has ended), and
    /// returns the window's end. `None` when the shard is full of live windows: the caller
    /// decides whether an untracked key passes.
    fn with<R>(
        &self,
        key: &K,
        window_ms: i64,
        now_ms: i64,
        f: impl FnOnce(&mut Window) -> R,
    ) -> Option<(R, i64)> {
        let ends_ms = now_ms.saturating_add(window_ms.max(1));
        let mut map = self.shard(key);
        if !map.contains_key(key) && map.len() >= MAX_ENTRIES_PER_SHARD {
            map.retain(|_, w| w.ends_ms > now_ms);
            if map.len() >= MAX_ENTRIES_PER_SHARD {
                return None;
            }
        }
        let w = map
            .entry(key.clone())
            .or_insert(Window { ends_ms, count: 0 });
        if w.ends_ms <= now_ms {
            *w = Window { ends_ms, count: 0 };
        }
        let r = f(w);
        Some((r, w.ends_ms))
    }

    fn peek(&self, key: &K, now_ms: i64) -> Option<Window> {
        self.shard(key)
            .get(key)
            .copied()
            .filter(|w| w.ends_ms > now_ms)
    }
}

fn seconds_until(ends_ms: i64, now_ms: i64) -> u64 {
    let ms = (ends_ms - now_ms).max(1) as u64;
    ms.div_ceil(1000)
}

/// Per-key request budgets.
pub struct KeyLimiter {
    windows: Windows<String>,
}

impl Default for KeyLimiter {
    fn default() -> Self {
        KeyLimiter {
            windows: Windows::new(),
        }
    }
}

impl KeyLimiter {
    /// Counts one request of `key_id` against `limit` at `now_ms`.
    pub fn check(&self, key_id: &str, limit: &RateLimit, now_ms: i64) -> Quota {
        let window_ms = i64::from(limit.window_seconds) * 1000;
        let counted = self
            .windows
            .with(&key_id.to_string(), window_ms, now_ms, |w| {
                w.count = w.count.saturating_add(1);
                w.count
            });
        match counted {
            Some((count, ends_ms)) => Quota {
                limit: limit.limit,
                remaining: limit.limit.saturating_sub(count),
                reset_seconds: seconds_until(ends_ms, now_ms),
                allowed: count <= limit.limit,
            },
            // Every slot holds a live window of some other limited key: this one cannot be
            // counted, and a budget that cannot be counted is not enforced.
            None => Quota {
                limit: limit.limit,
                remaining: limit.limit,
                reset_seconds: u64::from(limit.window_seconds),
                allowed: true,
            },
        }
    }
}

/// Failed authentications per client address. IPv6 addresses are counted per /64, the block
/// one subscriber usually holds, so that one client cannot step around the limit.
pub struct AddressThrottle {
    windows: Windows<IpAddr>,
    limit: u32,
    window: Duration,
}

impl AddressThrottle {
    /// At most `limit` failures per `window` per address.
    pub fn new(limit: u32, window: Duration) -> AddressThrottle {
        AddressThrottle {
            windows: Windows::new(),
            limit,
            window,
        }
    }

    fn bucket(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut octets = v6.octets();
                    octets[8..].fill(0);
                    IpAddr::from(octets)
                }
            },
        }
    }

    /// Failures allowed per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// `Some(seconds until retry)` when the address has used up its failures in this window.
    pub fn blocked(&self, ip: IpAddr, now_ms: i64) -> Option<u64> {
        let w = self.windows.peek(&Self::bucket(ip), now_ms)?;
        (w.count >= self.limit).then(|| seconds_until(w.ends_ms, now_ms))
    }

    /// Counts one failed authentication from `ip`.
    pub fn fail(&self, ip: IpAddr, now_ms: i64) {
        let window_ms = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .windows
            .with(&Self::bucket(ip), window_ms, now_ms, |w| {
                w.count = w.count.saturating_add(1);
            });
    }
}

/// Per-key budgets among replicas (PostgreSQL), after Unkey's design: each replica decides
/// locally and adds its counts to the shared counters in the background
/// ([`SharedKeyBudgets::sync`], every [`SHARED_SYNC_EVERY`]); near the limit, and after a
/// local count would pass its share, it asks the database before answering
/// ([`SharedKeyBudgets::check_shared`]). Windows are aligned to the clock (they start at
/// multiples of the window's length), so every replica counts the same window.
///
/// # The bound
///
/// A replica answers from memory only while the total it knows plus its own unsent count stays
/// within 90 % of the limit, and its unsent count stays below `limit / 20`; past either, every
/// request is counted in the database before it is answered, which is exact. What can be
/// admitted beyond the limit is what other replicas admitted from memory and had not sent yet:
/// at most `limit / 20` each, so with N replicas at most `limit × (1 + (N − 1) / 20)` — 1.1 ×
/// the limit with 3 replicas. Every request counts, allowed or not, as on one server.
pub struct SharedKeyBudgets {
    shards: Vec<Mutex<HashMap<(String, i64), SharedWindow>>>,
    hasher: RandomState,
}

/// How often a replica adds its local counts to the shared counters.
pub const SHARED_SYNC_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct SharedWindow {
    window_ms: i64,
    /// The total the database last reported for this window (every replica's counts).
    known_total: u64,
    /// Requests counted here and not yet added to the database.
    pending: u64,
}

/// What a replica can answer from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalBudget {
    /// Decided (and counted) here.
    Decided(Quota),
    /// Near the limit: ask the database ([`SharedKeyBudgets::check_shared`]).
    Ask,
}

impl Default for SharedKeyBudgets {
    fn default() -> Self {
        SharedKeyBudgets {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

fn aligned(limit: &RateLimit, now_ms: i64) -> (i64, i64) {
    let window_ms = (i64::from(limit.window_seconds) * 1000).max(1);
    (now_ms - now_ms.rem_euclid(window_ms), window_ms)
}

fn quota(limit: &RateLimit, total: u64, ends_ms: i64, now_ms: i64) -> Quota {
    let used = u32::try_from(total).unwrap_or(u32::MAX);
    Quota {
        limit: limit.limit,
        remaining: limit.limit.saturating_sub(used),
        reset_seconds: seconds_until(ends_ms, now_ms),
        allowed: total <= u64::from(limit.limit),
    }
}

fn counter_name(key_id: &str) -> String {
    format!("key:{key_id}")
}

impl SharedKeyBudgets {
    fn shard(
        &self,
        key: &(String, i64),
    ) -> std::sync::MutexGuard<'_, HashMap<(String, i64), SharedWindow>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request of `key_id` from memory when that is safe (see the type's bound).
    pub fn check_local(&self, key_id: &str, limit: &RateLimit, now_ms: i64) -> LocalBudget {
        let (start, window_ms) = aligned(limit, now_ms);
        let key = (key_id.to_string(), start);
        let mut map = self.shard(&key);
        if !map.contains_key(&key) && map.len() >= MAX_ENTRIES_PER_SHARD {
            map.retain(|(_, s), w| s + w.window_ms > now_ms);
        }
        let w = map.entry(key).or_insert(SharedWindow {
            window_ms,
            known_total: 0,
            pending: 0,
        });
        let limit_n = u64::from(limit.limit);
        let ends = start + window_ms;
        if w.known_total >= limit_n {
            // Counts only grow within a window: refused for sure.
            w.pending += 1;
            return LocalBudget::Decided(quota(limit, w.known_total + w.pending, ends, now_ms));
        }
        let estimate = w.known_total + w.pending + 1;
        if w.pending < limit_n / 20 && estimate * 10 <= limit_n * 9 {
            w.pending += 1;
            return LocalBudget::Decided(quota(limit, estimate, ends, now_ms));
        }
        LocalBudget::Ask
    }

    /// Counts one request of `key_id` in the database (with what this replica had not sent)
    /// and answers from the total. Blocking. If the database cannot be asked, the request is
    /// counted here and judged on what this replica knows.
    pub fn check_shared(
        &self,
        counters: &dyn SharedCounters,
        key_id: &str,
        limit: &RateLimit,
        now_ms: i64,
    ) -> Quota {
        let (start, window_ms) = aligned(limit, now_ms);
        let key = (key_id.to_string(), start);
        let pending = {
            let mut map = self.shard(&key);
            let w = map.entry(key.clone()).or_insert(SharedWindow {
                window_ms,
                known_total: 0,
                pending: 0,
            });
            std::mem::take(&mut w.pending)
        };
        let add = CounterAdd {
            name: counter_name(key_id),
            window_start: start,
            window_ms,
            delta: pending + 1,
        };
        let ends = start + window_ms;
        match counters.add_counts(std::slice::from_ref(&add)) {
            Ok(totals) => {
                let total = totals.first().copied().unwrap_or(0);
                let mut map = self.shard(&key);
                if let Some(w) = map.get_mut(&key) {
                    w.known_total = w.known_total.max(total);
                }
                quota(limit, total, ends, now_ms)
            }
            Err(e) => {
                tracing::debug!(error = %e, "rate limit: cannot reach the shared counters; judged locally");
                let mut map = self.shard(&key);
                let w = map.entry(key).or_insert(SharedWindow {
                    window_ms,
                    known_total: 0,
                    pending: 0,
                });
                w.pending += pending + 1;
                quota(limit, w.known_total + w.pending, ends, now_ms)
            }
        }
    }

    /// Adds every count not yet sent to the shared counters and learns the totals; drops
    /// windows that have ended. Blocking; counts that cannot be sent are kept for next time.
    pub fn sync(&self, counters: &dyn SharedCounters, now_ms: i64) {
        let mut adds = Vec::new();
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|(_, start), w| start + w.window_ms > now_ms || w.pending > 0);
            for ((key_id, start), w) in map.iter_mut() {
                if w.pending > 0 {
                    adds.push(CounterAdd {
                        name: counter_name(key_id),
                        window_start: *start,
                        window_ms: w.window_ms,
                        delta: std::mem::take(&mut w.pending),
                    });
                }
            }
        }
        if adds.is_empty() {
            return;
        }
        let totals = counters.add_counts(&adds);
        for (i, add) in adds.iter().enumerate() {
            let key = (
                add.name.trim_start_matches("key:").to_string(),
                add.window_start,
            );
            let mut map = self.shard(&key);
            let Some(w) = map.get_mut(&key) else { continue };
            match &totals {
                Ok(totals) => {
                    w.known_total = w.known_total.max(totals.get(i).copied().unwrap_or(0));
                }
                Err(_) => w.pending += add.delta,
            }
        }
        if let Err(e) = totals {
            tracing::debug!(error = %e, "rate limit: cannot reach the shared counters; kept for the next sync");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The database's side of the shared counters, in memory.
    #[derive(Default)]
    struct Counters(Mutex<HashMap<(String, i64), u64>>);

    impl SharedCounters for Counters {
        fn add_counts(&self, adds: &[CounterAdd]) -> billstack_keystore::Result<Vec<u64>> {
            let mut map = self.0.lock().expect("lock");
            Ok(adds
                .iter()
                .map(|a| {
                    let total = map.entry((a.name.clone(), a.window_start)).or_default();
                    *total += a.delta;
                    *total
                })
                .collect())
        }

        fn reset_count(&self, name: &str) -> billstack_keystore::Result<()> {
            self.0.lock().expect("lock").retain(|(n, _), _| n != name);
            Ok(())
        }
    }

    /// Requests from three replicas in turn, each syncing every `sync_every` of its requests:
    /// how many were allowed.
    fn admitted(limit: u32, requests: u32, sync_every: u32) -> u32 {
        let db = Counters::default();
        let replicas: Vec<SharedKeyBudgets> = (0..3).map(|_| SharedKeyBudgets::default()).collect();
        let budget = RateLimit {
            limit,
            window_seconds: 60,
        };
        let now = 60_000 * 1_000;
        let mut allowed = 0;
        for i in 0..requests {
            let r = &replicas[(i % 3) as usize];
            let quota = match r.check_local("key_a", &budget, now) {
                LocalBudget::Decided(q) => q,
                LocalBudget::Ask => r.check_shared(&db, "key_a", &budget, now),
            };
            allowed += u32::from(quota.allowed);
            if i % sync_every == 0 {
                r.sync(&db, now);
            }
        }
        allowed
    }

    #[test]
    fn replicas_admit_within_a_tenth_over_a_shared_limit() {
        // Within the limit: every request passes, whatever the sync rate.
        assert_eq!(admitted(1_000, 900, 1_000_000), 900);
        assert_eq!(admitted(1_000, 1_000, 7), 1_000);
        // Over it: at least the limit and at most 1.1 × it, even when replicas never sync in
        // the background (the bound comes from the checks near the limit).
        for sync_every in [1, 7, 50, 1_000_000] {
            let n = admitted(1_000, 5_000, sync_every);
            assert!(
                (1_000..=1_100).contains(&n),
                "{n} admitted, sync every {sync_every}"
            );
        }
        // A small limit is counted exactly: every request asks the database.
        assert_eq!(admitted(3, 30, 1_000_000), 3);
    }

    #[test]
    fn shared_windows_are_aligned_to_the_clock_and_reset_together() {
        let db = Counters::default();
        let budgets = SharedKeyBudgets::default();
        let budget = RateLimit {
            limit: 2,
            window_seconds: 10,
        };
        let ask = |now: i64| match budgets.check_local("key_a", &budget, now) {
            LocalBudget::Decided(q) => q,
            LocalBudget::Ask => budgets.check_shared(&db, "key_a", &budget, now),
        };
        let start = 1_000_000; // a multiple of 10 s
        assert!(ask(start + 9_000).allowed);
        let second = ask(start + 9_500);
        assert_eq!((second.allowed, second.reset_seconds), (true, 1));
        assert!(!ask(start + 9_900).allowed, "the third in the window");
        // The next window starts at the clock's 10 s mark, not 10 s after the first request.
        let next = ask(start + 10_000);
        assert_eq!(
            (next.allowed, next.remaining, next.reset_seconds),
            (true, 1, 10)
        );
    }

    const LIMIT: RateLimit = RateLimit {
        limit: 3,
        window_seconds: 10,
    };

    #[test]
    fn a_key_gets_its_limit_per_window_then_429_until_the_window_resets() {
        let l = KeyLimiter::default();
        let start = 1_000_000;
        let quotas: Vec<Quota> = (0..4)
            .map(|i| l.check("key_a", &LIMIT, start + i))
            .collect();
        assert_eq!(
            quotas
                .iter()
                .map(|q| (q.allowed, q.remaining))
                .collect::<Vec<_>>(),
            [(true, 2), (true, 1), (true, 0), (false, 0)]
        );
        assert_eq!(quotas[0].reset_seconds, 10);
        // Another key has its own budget.
        assert!(l.check("key_b", &LIMIT, start + 5).allowed);
        // Late in the window the reset is near; in the next window the budget is back.
        let late = l.check("key_a", &LIMIT, start + 9_500);
        assert_eq!((late.allowed, late.reset_seconds), (false, 1));
        let next = l.check("key_a", &LIMIT, start + 10_000);
        assert_eq!(
            (next.allowed, next.remaining, next.reset_seconds),
            (true, 2, 10)
        );
    }

    #[test]
    fn addresses_are_blocked_after_their_failures_and_ipv6_counts_per_64() {
        let t = AddressThrottle::new(2, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let now = 6_000_000;
        assert_eq!(t.blocked(ip, now), None);
        t.fail(ip, now);
        assert_eq!(t.blocked(ip, now), None, "within the limit");
        t.fail(ip, now);
        assert_eq!(t.blocked(ip, now + 1_000), Some(59), "over it");
        assert_eq!(t.blocked("192.0.2.2".parse().expect("ip"), now), None);
        assert_eq!(t.blocked(ip, now + 60_000), None, "the next window");

        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        t.fail(a, now);
        t.fail(b, now);
        assert!(t.blocked(a, now).is_some(), "one /64 shares a budget");
        assert_eq!(t.blocked(other, now), None);
    }

    #[test]
    fn tracking_is_bounded_and_expired_windows_make_room() {
        let t = AddressThrottle::new(1, Duration::from_secs(1));
        let now = 0;
        for i in 0..(SHARDS * MAX_ENTRIES_PER_SHARD + 1000) as u32 {
            t.fail(IpAddr::from(i.to_be_bytes()), now);
        }
        let tracked: usize = t
            .windows
            .shards
            .iter()
            .map(|s| s.lock().expect("lock").len())
            .sum();
        assert!(tracked <= SHARDS * MAX_ENTRIES_PER_SHARD, "{tracked}");
        // A second later every window has ended, so new addresses are tracked again.
        let late = IpAddr::from([203, 0, 113, 1]);
        t.fail(late, now + 1_000);
        assert!(t.blocked(late, now + 1_000).is_some());
    }
}
