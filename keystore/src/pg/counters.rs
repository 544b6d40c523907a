//! Counters shared by replicas (request budgets, sign-in throttles) on PostgreSQL: one
//! statement adds a batch and returns the totals.

use std::collections::BTreeMap;

use super::{PgStore, db_error};
use crate::Result;
use crate::storage::{CounterAdd, SharedCounters};

impl SharedCounters for PgStore {
    fn add_counts(&self, adds: &[CounterAdd]) -> Result<Vec<u64>> {
        // One row per counter and window: a statement may not update a row twice.
        let mut merged: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
        for add in adds {
            let delta = i64::try_from(add.delta).unwrap_or(i64::MAX);
            let entry = merged
                .entry((add.name.clone(), add.window_start))
                .or_insert((add.window_ms, 0));
            entry.1 = entry.1.saturating_add(delta);
        }
        let mut names = Vec::with_capacity(merged.len());
        let mut starts = Vec::with_capacity(merged.len());
        let mut lengths = Vec::with_capacity(merged.len());
        let mut deltas = Vec::with_capacity(merged.len());
        for ((name, start), (length, delta)) in &merged {
            names.push(name.clone());
            starts.push(*start);
            lengths.push(*length);
            deltas.push(*delta);
        }
        let totals: BTreeMap<(String, i64), u64> = self.with_client(move |client| async move {
            let rows = client
                .query(
                    "INSERT INTO shared_counters (name, window_start, window_ms, count) \
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) \
                     ON CONFLICT (name, window_start) \
                     DO UPDATE SET count = shared_counters.count + EXCLUDED.count \
                     RETURNING name, window_start, count",
                    &[&names, &starts, &lengths, &deltas],
                )
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        (r.get::<_, String>(0), r.get::<_, i64>(1)),
                        u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                    )
                })
                .collect())
        })?;
        Ok(adds
            .iter()
            .map(|a| {
                totals
                    .get(&(a.name.clone(), a.window_start))
                    .copied()
                    .unwrap_or(0)
            })
            .collect())
    }

    fn reset_count(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.with_client(move |client| async move {
            client
                .execute("DELETE FROM shared_counters WHERE name = $1", &[&name])
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }
}
