//! `lastUsedAt` without a disk write per request: uses are noted in memory and written in one
//! batch every few seconds (and at shutdown).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use billstack_keystore::Store;

/// How often noted uses are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Pending uses: key id → latest use (Unix ms).
#[derive(Default)]
pub struct UsageTracker {
    pending: Mutex<HashMap<String, i64>>,
}

impl UsageTracker {
    /// Notes a successful use.
    pub fn note(&self, key_id: &str, at_ms: i64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(key_id) {
            Some(t) => *t = (*t).max(at_ms),
            None => {
                pending.insert(key_id.to_owned(), at_ms);
            }
        }
    }

    /// Writes everything noted so far.
    pub fn flush(&self, store: &Store) -> billstack_keystore::Result<()> {
        let batch: Vec<(String, i64)> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        if batch.is_empty() {
            return Ok(());
        }
        store.record_key_usage(&batch)
    }
}

/// Flushes `tracker` every [`FLUSH_EVERY`] until the process ends.
pub fn spawn_flusher(tracker: Arc<UsageTracker>, store: Arc<Store>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tick.tick().await;
            let (t, s) = (Arc::clone(&tracker), Arc::clone(&store));
            match tokio::task::spawn_blocking(move || t.flush(&s)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not record key usage"),
                Err(e) => tracing::warn!(error = %e, "usage flush task failed"),
            }
        }
    });
}
