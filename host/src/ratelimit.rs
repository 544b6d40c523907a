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

#[cfg(test)]
mod tests {
    use super::*;

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
