//! Key usage without a disk write per request: each decided request of a known key is noted
//! in memory (its day's allowed or refused count, and `lastUsedAt` when allowed) and written in
//! one batch every few seconds (and at shutdown). A crash loses at most that many seconds of
//! counts; usage is advisory, never an acknowledged write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use billstack_keystore::{DailyUsage, KeyUsage, Storage};

/// How often noted uses are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// Days of counts kept (and the most the usage endpoint shows).
pub const RETENTION_DAYS: u32 = 90;

#[derive(Default)]
struct Pending {
    last_used_at: Option<i64>,
    days: HashMap<i64, DailyUsage>,
}

/// Pending uses, per key id.
#[derive(Default)]
pub struct UsageTracker {
    pending: Mutex<HashMap<String, Pending>>,
}

/// The day (since the Unix epoch, UTC) of a Unix-ms time.
pub fn day_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(DAY_MS)
}

impl UsageTracker {
    /// Notes one decided request of `key_id` at `at_ms`: allowed (`refused` is `None`), or
    /// refused with that code.
    pub fn note(&self, key_id: &str, at_ms: i64, refused: Option<&str>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = match pending.get_mut(key_id) {
            Some(entry) => entry,
            None => pending.entry(key_id.to_owned()).or_default(),
        };
        let day = entry.days.entry(day_of(at_ms)).or_default();
        match refused {
            None => {
                day.allowed = day.allowed.saturating_add(1);
                entry.last_used_at = Some(entry.last_used_at.map_or(at_ms, |t| t.max(at_ms)));
            }
            Some(reason) => day.add_refusal(reason),
        }
    }

    /// Writes everything noted so far. On failure the batch is put back, to be retried with
    /// the next one.
    pub fn flush(&self, store: &dyn Storage) -> billstack_keystore::Result<()> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return Ok(());
        }
        let batch: Vec<KeyUsage> = taken
            .into_iter()
            .map(|(key_id, p)| KeyUsage {
                key_id,
                last_used_at: p.last_used_at,
                days: p.days.into_iter().collect(),
            })
            .collect();
        store.record_key_usage(&batch).inspect_err(|_| {
            for usage in batch {
                for (day, counts) in usage.days {
                    self.merge(&usage.key_id, usage.last_used_at, day, counts);
                }
            }
        })
    }

    fn merge(&self, key_id: &str, last_used_at: Option<i64>, day: i64, counts: DailyUsage) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending.entry(key_id.to_owned()).or_default();
        entry.last_used_at = entry.last_used_at.max(last_used_at);
        let d = entry.days.entry(day).or_default();
        *d = std::mem::take(d).plus(&counts);
    }
}

/// Flushes `tracker` every [`FLUSH_EVERY`] until the process ends, and once a day (and at
/// start) drops counts older than [`RETENTION_DAYS`].
pub fn spawn_flusher(tracker: Arc<UsageTracker>, store: Arc<dyn Storage>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        let mut pruned_on = None;
        loop {
            tick.tick().await;
            let today = day_of(store.clock().now_ms());
            let prune = (pruned_on != Some(today)).then_some(today);
            let (t, s) = (Arc::clone(&tracker), Arc::clone(&store));
            let done = tokio::task::spawn_blocking(move || {
                t.flush(&*s)?;
                if let Some(today) = prune {
                    s.prune_key_usage(today - i64::from(RETENTION_DAYS) + 1)?;
                }
                Ok::<_, billstack_keystore::Error>(())
            })
            .await;
            match done {
                Ok(Ok(())) => pruned_on = prune.or(pruned_on),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not record key usage"),
                Err(e) => tracing::warn!(error = %e, "usage flush task failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use billstack_keystore::{KeyStore, Store, TeamStore, UsageStore};

    #[test]
    fn notes_add_up_per_day_and_last_use_is_the_latest_allowed_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let team = store
            .create_team(Some("team_a"), "A", "test".into())
            .expect("team");
        let (key, _) = store
            .create_key(
                &billstack_keystore::NewApiKey::new(&team.id, "k"),
                "test".into(),
            )
            .expect("key");
        let tracker = UsageTracker::default();
        let day = 20_000;
        let t = day * DAY_MS;
        tracker.note(&key.id, t + 10, None);
        tracker.note(&key.id, t + 5, None);
        tracker.note(&key.id, t + 20, Some("insufficient_scope"));
        tracker.note(&key.id, t + 30, Some("insufficient_scope"));
        tracker.note(&key.id, t + DAY_MS, Some("rate_limited"));
        tracker.flush(&store).expect("flush");
        tracker.flush(&store).expect("an empty flush");
        let usage = store.key_usage(&key.id, day + 1, 2).expect("usage");
        assert_eq!(
            usage,
            [
                (
                    day,
                    DailyUsage {
                        allowed: 2,
                        denied: 2,
                        refused: [("insufficient_scope".to_owned(), 2)].into(),
                    }
                ),
                (
                    day + 1,
                    DailyUsage {
                        allowed: 0,
                        denied: 1,
                        refused: [("rate_limited".to_owned(), 1)].into(),
                    }
                ),
            ]
        );
        let stored = store.get_key(&team.id, &key.id).expect("get").expect("key");
        assert_eq!(
            stored.last_used_at,
            Some(t + 10),
            "a refused request is not a use"
        );
        assert_eq!(day_of(-1), -1, "days before the epoch round down");
    }
}
