//! A replica following the change feed (DESIGN.md § Storage backends and replicas).
//!
//! Each serving process that opens PostgreSQL as a replica keeps one connection of its own
//! (outside the pool) that `LISTEN`s for `billstack_changes`. It polls the feed when notified,
//! every [`ReplicaOptions::poll_interval`] anyway, and right after every reconnect (a
//! notification sent while the connection was down is lost). One poll is one statement: it
//! writes the replica's heartbeat and reads every change after the position it has applied,
//! with the feed's head, in one snapshot. Each change is applied to the key cache (the key's
//! entry removed) and handed to the listeners (the host reloads a team's policy), then the new
//! position is reported in the `replicas` table.
//!
//! # The lease
//!
//! A poll that returns every change up to the head renews the lease from the moment the poll
//! was *sent*, on this process's monotonic clock: until `sent + lease`, cached keys may
//! decide. Past it, the store refuses lookups ([`crate::Error::Unavailable`], 503
//! `store_unavailable`) until a poll succeeds again. Every change committed before a poll's
//! snapshot is applied by that poll, and that snapshot is taken after the poll was sent; so a
//! replica that has not applied a change committed at time C holds no lease begun after C, and
//! stops allowing from its cache by C + lease, whatever the network does. That is what lets a
//! writer bound its wait ([`super::PgStore::confirm`]) without comparing clocks.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio_postgres::{AsyncMessage, Client};

use crate::Result;
use crate::store::key_cache::KeyCache;

use super::db_error;

/// How a process follows the change feed.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// How long after its last complete poll began a replica may still decide from its cache
    /// (`replica_lease_ms`).
    pub lease: Duration,
    /// How often the feed is polled when no notification arrives.
    pub poll_interval: Duration,
}

impl Default for ReplicaOptions {
    fn default() -> ReplicaOptions {
        ReplicaOptions {
            lease: Duration::from_millis(DEFAULT_LEASE_MS),
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// `replica_lease_ms` when the configuration does not set it.
pub const DEFAULT_LEASE_MS: u64 = 1_000;

/// Most changes one poll reads; a replica further behind polls again at once.
const BATCH: i64 = 1_000;

/// What the feed carried, for listeners outside the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedChange {
    /// A key was created, changed, rotated or revoked (the key cache is already updated).
    Key {
        /// Its team.
        team_id: String,
        /// The key's id.
        key_id: String,
    },
    /// A team's policy was uploaded or reset.
    Policy {
        /// The team.
        team_id: String,
    },
    /// A team's membership changed.
    Membership {
        /// The team.
        team_id: String,
        /// The account.
        user_id: String,
    },
    /// Changes were missed and cannot be named (the feed was pruned past this replica's
    /// position): everything derived from the store must be reloaded.
    Everything,
}

/// A callback for changes; called on the store's runtime, so it must not block.
pub type ChangeListener = Arc<dyn Fn(&FeedChange) + Send + Sync>;

/// A replica's state, for `/readyz` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// This replica's row in `replicas`.
    pub id: String,
    /// The last feed position applied to this replica's caches.
    pub applied_seq: i64,
    /// The feed's head at the last poll.
    pub head_seq: i64,
    /// Whether the first poll has completed (the replica has caught up once).
    pub caught_up: bool,
    /// Whether cached keys may decide now.
    pub lease_valid: bool,
    /// How long ago the last complete poll began (how stale this replica may be), if ever.
    pub confirmed_ms_ago: Option<u64>,
    /// The configured lease.
    pub lease_ms: u64,
}

/// The state one replica shares between its follower task and the request path.
pub(crate) struct Follower {
    pub(crate) id: String,
    pub(crate) options: ReplicaOptions,
    base: Instant,
    /// Nanoseconds after `base` at which the lease ends; 0 before the first complete poll.
    lease_until: AtomicU64,
    /// Nanoseconds after `base` at which the last complete poll was sent.
    confirmed_at: AtomicU64,
    applied: AtomicI64,
    head: AtomicI64,
    caught_up: AtomicBool,
    stopped: AtomicBool,
    listeners: RwLock<Vec<ChangeListener>>,
}

impl Follower {
    pub(crate) fn new(options: ReplicaOptions) -> Follower {
        Follower {
            id: crate::ids::new_id("rep"),
            options,
            base: Instant::now(),
            lease_until: AtomicU64::new(0),
            confirmed_at: AtomicU64::new(0),
            applied: AtomicI64::new(0),
            head: AtomicI64::new(0),
            caught_up: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            listeners: RwLock::new(Vec::new()),
        }
    }

    /// Stops following (the lease ends with it); whether it had stopped already.
    pub(crate) fn stop(&self) -> bool {
        self.lease_until.store(0, Ordering::Release);
        self.stopped.swap(true, Ordering::AcqRel)
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn nanos_since_base(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether cached keys may decide now: the last complete poll began less than a lease ago.
    pub(crate) fn lease_valid(&self) -> bool {
        let until = self.lease_until.load(Ordering::Acquire);
        until != 0 && self.nanos_since_base(Instant::now()) < until
    }

    pub(crate) fn add_listener(&self, listener: ChangeListener) {
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    fn tell(&self, change: &FeedChange) {
        let listeners = self.listeners.read().unwrap_or_else(|e| e.into_inner());
        for listener in listeners.iter() {
            listener(change);
        }
    }

    pub(crate) fn status(&self) -> ReplicaStatus {
        let confirmed = self.confirmed_at.load(Ordering::Acquire);
        let now = self.nanos_since_base(Instant::now());
        ReplicaStatus {
            id: self.id.clone(),
            applied_seq: self.applied.load(Ordering::Acquire),
            head_seq: self.head.load(Ordering::Acquire),
            caught_up: self.caught_up.load(Ordering::Acquire),
            lease_valid: self.lease_valid(),
            confirmed_ms_ago: (confirmed != 0).then(|| now.saturating_sub(confirmed) / 1_000_000),
            lease_ms: u64::try_from(self.options.lease.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Starts applied at `head` (a replica that has cached nothing has nothing to catch up).
    pub(crate) fn start_at(&self, head: i64) {
        self.applied.store(head, Ordering::Release);
        self.head.store(head, Ordering::Release);
    }
}

/// How the follower opens its own connection (the pool's connections cannot `LISTEN`: their
/// notifications are dropped).
#[derive(Clone)]
pub(crate) enum Connector {
    Plain,
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// The database clock in Unix ms, in SQL.
pub(crate) const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// The poll: the heartbeat, the head and every change after `$2` (at most `$3`) with the
/// changed key's hash, in one statement and so one snapshot. Always at least one row (the
/// head's); the change columns are null when there is no change.
fn poll_statement() -> String {
    format!(
        "WITH beat AS (UPDATE replicas SET heartbeat_at = {DB_NOW_MS} WHERE id = $1 RETURNING 1) \
         SELECT (SELECT count(*) FROM beat), head.seq, f.seq, f.kind, f.team_id, f.subject, k.hash \
         FROM change_feed_head head \
         LEFT JOIN change_feed f ON f.seq > $2 AND f.seq <= $2 + $3 \
         LEFT JOIN api_keys k ON f.kind = 'key' AND k.id = f.subject \
         ORDER BY f.seq"
    )
}

/// How often a replica prunes what no replica needs any more.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);

/// Rows of replicas silent for 10 minutes (crashed ones: a clean stop removes its own row);
/// feed rows older than an hour (a replica further behind than that sees the gap and reloads
/// everything); counter windows that ended a minute ago. Each statement is cheap and
/// idempotent, so replicas running it at once do no harm.
fn maintenance_statements() -> String {
    format!(
        "DELETE FROM replicas WHERE heartbeat_at < {DB_NOW_MS} - 600000; \
         DELETE FROM change_feed WHERE at < {DB_NOW_MS} - 3600000; \
         DELETE FROM shared_counters WHERE window_start + window_ms < {DB_NOW_MS} - 60000;"
    )
}

fn register_statement() -> String {
    format!(
        "INSERT INTO replicas (id, host, applied_seq, heartbeat_at, started_at, lease_ms) \
         VALUES ($1, $2, $3, {DB_NOW_MS}, {DB_NOW_MS}, $4) \
         ON CONFLICT (id) DO UPDATE SET applied_seq = EXCLUDED.applied_seq, \
         heartbeat_at = EXCLUDED.heartbeat_at, lease_ms = EXCLUDED.lease_ms"
    )
}

/// Follows the feed until the runtime shuts down: one connection at a time, reconnecting
/// after any failure (with a short backoff), every wait bounded by the lease.
pub(crate) async fn follow(
    follower: Arc<Follower>,
    cache: Arc<KeyCache>,
    config: tokio_postgres::Config,
    connector: Connector,
) {
    let mut backoff = Duration::from_millis(25);
    let mut failures = 0u32;
    while !follower.stopped() {
        let outcome = session(&follower, &cache, &config, &connector).await;
        if let Err(e) = outcome {
            failures += 1;
            // Logged once per outage, not once per retry.
            if failures == 1 {
                tracing::warn!(replica = %follower.id, error = %e,
                    "replica: lost the change feed; cached keys decide until the lease ends, then requests get 503 until it is back");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
        if follower.lease_valid() {
            backoff = Duration::from_millis(25);
            if failures > 0 {
                tracing::info!(replica = %follower.id, "replica: following the change feed again");
            }
            failures = 0;
        }
    }
}

/// A bound on one database call: a call that takes longer than a lease cannot keep the lease
/// anyway, and a frozen link must not hold the follower forever.
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(db_error),
        Err(_) => Err(crate::Error::Unavailable(format!(
            "the database did not answer within {} ms",
            limit.as_millis()
        ))),
    }
}

async fn connect(
    config: &tokio_postgres::Config,
    connector: &Connector,
    limit: Duration,
) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<()>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    // The connection is driven by a task of its own; notifications wake the follower. The task
    // ends when the client is dropped or the connection fails (the follower then sees the
    // channel closed).
    macro_rules! drive {
        ($connection:expr) => {{
            let mut connection = $connection;
            tokio::spawn(async move {
                while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
                    match message {
                        Ok(AsyncMessage::Notification(_)) => {
                            let _ = tx.send(());
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
        }};
    }
    let client = match connector {
        Connector::Plain => {
            let (client, connection) =
                bounded(limit, config.connect(tokio_postgres::NoTls)).await?;
            drive!(connection);
            client
        }
        Connector::Tls(tls) => {
            let (client, connection) = bounded(limit, config.connect(tls.clone())).await?;
            drive!(connection);
            client
        }
    };
    Ok((client, rx))
}

async fn session(
    follower: &Follower,
    cache: &KeyCache,
    config: &tokio_postgres::Config,
    connector: &Connector,
) -> Result<()> {
    let limit = follower.options.lease;
    let (client, mut woken) = connect(config, connector, limit).await?;
    bounded(limit, client.batch_execute("LISTEN billstack_changes")).await?;
    register(follower, &client).await?;
    let poll = bounded(limit, client.prepare(&poll_statement())).await?;
    let mut maintained: Option<Instant> = None;
    while !follower.stopped() {
        if maintained.is_none_or(|at| at.elapsed() >= MAINTENANCE_EVERY) {
            maintained = Some(Instant::now());
            bounded(limit, client.batch_execute(&maintenance_statements())).await?;
        }
        // Notifications that arrived before this poll are answered by it.
        while woken.try_recv().is_ok() {}
        let more = poll_once(follower, cache, &client, &poll).await?;
        if more {
            continue;
        }
        tokio::select! {
            message = woken.recv() => {
                if message.is_none() {
                    return Err(crate::Error::Unavailable("the change feed's connection closed".into()));
                }
            }
            () = tokio::time::sleep(follower.options.poll_interval) => {}
        }
    }
    Ok(())
}

async fn register(follower: &Follower, client: &Client) -> Result<()> {
    let host = hostname();
    let lease_ms = i32::try_from(follower.options.lease.as_millis()).unwrap_or(i32::MAX);
    let applied = follower.applied.load(Ordering::Acquire);
    bounded(
        follower.options.lease,
        client.execute(
            &register_statement(),
            &[&follower.id, &host, &applied, &lease_ms],
        ),
    )
    .await?;
    Ok(())
}

/// One poll; `Ok(true)` when more changes wait beyond this batch.
async fn poll_once(
    follower: &Follower,
    cache: &KeyCache,
    client: &Client,
    poll: &tokio_postgres::Statement,
) -> Result<bool> {
    let limit = follower.options.lease;
    let sent = Instant::now();
    let applied = follower.applied.load(Ordering::Acquire);
    let previous = follower.confirmed_at.load(Ordering::Acquire);
    let since_previous = follower.nanos_since_base(sent).saturating_sub(previous) / 1_000_000;
    if previous != 0 && since_previous * 2 > limit.as_millis() as u64 {
        tracing::warn!(replica = %follower.id, since_previous_ms = since_previous,
            lease_ms = limit.as_millis() as u64,
            "replica: the change feed was last confirmed over half a lease ago (is this process starved of CPU?)");
    }
    let rows = bounded(limit, client.query(poll, &[&follower.id, &applied, &BATCH])).await?;
    let took = sent.elapsed();
    if took * 4 > limit {
        tracing::warn!(replica = %follower.id, took_ms = took.as_millis() as u64,
            lease_ms = limit.as_millis() as u64,
            "replica: a poll of the change feed took over a quarter of the lease");
    }
    let first = rows
        .first()
        .ok_or_else(|| crate::Error::Unavailable("the change feed has no head".into()))?;
    let beat: i64 = first.get(0);
    let head: i64 = first.get(1);
    if beat == 0 && !follower.stopped() {
        // Our row is gone (pruned as dead while we were away): back in, then poll again.
        register(follower, client).await?;
        return Ok(true);
    }
    let mut last = applied;
    let mut missed = false;
    for row in &rows {
        let Some(seq) = row.get::<_, Option<i64>>(2) else {
            continue;
        };
        if seq != last + 1 {
            missed = true;
            break;
        }
        let kind: String = row.get(3);
        let team_id: String = row.get(4);
        let subject: String = row.get(5);
        let change = match kind.as_str() {
            "key" => {
                match row
                    .get::<_, Option<Vec<u8>>>(6)
                    .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
                {
                    Some(hash) => cache.invalidate(&hash),
                    // The key's row is gone: which entry to drop cannot be told.
                    None => cache.clear(),
                }
                FeedChange::Key {
                    team_id,
                    key_id: subject,
                }
            }
            "policy" => FeedChange::Policy { team_id },
            _ => FeedChange::Membership {
                team_id,
                user_id: subject,
            },
        };
        follower.tell(&change);
        last = seq;
    }
    if head > last && last == applied && rows.iter().all(|r| r.get::<_, Option<i64>>(2).is_none()) {
        missed = true;
    }
    if missed {
        cache.clear();
        follower.tell(&FeedChange::Everything);
        last = head;
    }
    follower.applied.store(last, Ordering::Release);
    follower.head.store(head, Ordering::Release);
    if last != applied {
        bounded(
            limit,
            client.execute(
                "UPDATE replicas SET applied_seq = $2 WHERE id = $1",
                &[&follower.id, &last],
            ),
        )
        .await?;
    }
    if last >= head && !follower.stopped() {
        // Everything committed before this poll's snapshot is applied: the lease runs from
        // when the poll was sent.
        let sent_at = follower.nanos_since_base(sent);
        let lease = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        follower
            .confirmed_at
            .store(sent_at.max(1), Ordering::Release);
        follower
            .lease_until
            .store(sent_at.saturating_add(lease), Ordering::Release);
        follower.caught_up.store(true, Ordering::Release);
        return Ok(false);
    }
    Ok(true)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}
