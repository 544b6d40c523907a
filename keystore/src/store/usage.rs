//! Per-key usage: `lastUsedAt` and request counts per day, written in batches.

use std::collections::BTreeMap;

use super::*;

/// One key's uses since the last batch, for [`Store::record_key_usage`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// The key.
    pub key_id: String,
    /// Its latest allowed request (Unix ms), if any.
    pub last_used_at: Option<i64>,
    /// Requests per day (days since the Unix epoch, UTC).
    pub days: Vec<(i64, DailyUsage)>,
}

/// One key's requests on one day: decided and allowed, or refused after the key was
/// recognised (scope, project, route, rate limit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyUsage {
    /// Allowed requests.
    pub allowed: u64,
    /// Refused requests.
    pub denied: u64,
    /// Refused requests by reason (the refusal's code, such as `insufficient_scope`); they add
    /// up to `denied` (days recorded before reasons were have none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, u64>,
}

impl DailyUsage {
    /// The sum of two counts.
    pub fn plus(mut self, other: &DailyUsage) -> DailyUsage {
        self.allowed = self.allowed.saturating_add(other.allowed);
        self.denied = self.denied.saturating_add(other.denied);
        for (reason, n) in &other.refused {
            let count = self.refused.entry(reason.clone()).or_default();
            *count = count.saturating_add(*n);
        }
        self
    }

    /// Counts one refusal for `reason`.
    pub fn add_refusal(&mut self, reason: &str) {
        self.denied = self.denied.saturating_add(1);
        match self.refused.get_mut(reason) {
            Some(n) => *n = n.saturating_add(1),
            None => {
                self.refused.insert(reason.to_owned(), 1);
            }
        }
    }
}

/// `key_id/day`, the day big-endian so that a key's days sort in order. Days before 1970 never
/// occur, so the sign bit does not disturb the order.
pub(crate) fn usage_key(key_id: &str, day: i64) -> Vec<u8> {
    let mut k = prefix(key_id);
    k.extend_from_slice(&day.to_be_bytes());
    k
}

impl UsageStore for Store {
    fn record_key_usage(&self, uses: &[KeyUsage]) -> Result<()> {
        let _writing = self.writing();
        for usage in uses {
            if let Some(at) = usage.last_used_at {
                self.keys.fetch_and_update(usage.key_id.as_bytes(), |old| {
                    let old = old?;
                    match decode::<KeyRecord>("key", old) {
                        Ok(mut r)
                            if r.revoked_at.is_none() && r.last_used_at.is_none_or(|t| t < at) =>
                        {
                            r.last_used_at = Some(at);
                            Some(encode(&r))
                        }
                        _ => Some(old.to_vec()),
                    }
                })?;
            }
            if usage.days.is_empty() || self.keys.get(usage.key_id.as_bytes())?.is_none() {
                continue;
            }
            for (day, counts) in &usage.days {
                let k = usage_key(&usage.key_id, *day);
                self.key_usage.fetch_and_update(k, |old| {
                    let before = old
                        .and_then(|b| decode::<DailyUsage>("daily usage", b).ok())
                        .unwrap_or_default();
                    Some(encode(&before.plus(counts)))
                })?;
            }
        }
        Ok(())
    }

    fn prune_key_usage(&self, first_kept_day: i64) -> Result<usize> {
        let _writing = self.writing();
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for k in self.key_usage.iter().keys() {
            let k = k?;
            let day = k
                .len()
                .checked_sub(8)
                .and_then(|at| <[u8; 8]>::try_from(&k[at..]).ok())
                .map(i64::from_be_bytes);
            if day.is_none_or(|d| d < first_kept_day) {
                batch.remove(k);
                removed += 1;
            }
        }
        self.key_usage.apply_batch(batch)?;
        Ok(removed)
    }

    fn key_usage(&self, key_id: &str, last_day: i64, days: u32) -> Result<Vec<(i64, DailyUsage)>> {
        let first_day = last_day - i64::from(days) + 1;
        let mut stored = HashMap::new();
        for entry in self
            .key_usage
            .range(usage_key(key_id, first_day)..=usage_key(key_id, last_day))
        {
            let (k, v) = entry?;
            let day_bytes: [u8; 8] =
                k[k.len() - 8..].try_into().map_err(|_| Error::Corruption {
                    what: "usage key".into(),
                })?;
            stored.insert(
                i64::from_be_bytes(day_bytes),
                decode::<DailyUsage>("daily usage", &v)?,
            );
        }
        Ok((first_day..=last_day)
            .map(|day| (day, stored.remove(&day).unwrap_or_default()))
            .collect())
    }
}
