//! The PostgreSQL backend (DESIGN.md § Storage backends and replicas): `storage =
//! "postgres://…"`. This module holds the connection pool, the runtime the synchronous
//! [`crate::Storage`] calls run their queries on, and the schema's migrations; the entity
//! operations follow the sled store's, file by file.
//!
//! # Calls from synchronous code
//!
//! The storage traits are synchronous (the host calls them on its blocking pool). `PgStore`
//! owns a small tokio runtime of its own; each call spawns its query there and waits for the
//! answer on a channel, so it works from any thread, whether or not that thread belongs to
//! another runtime.
//!
//! # Migrations
//!
//! `migrations/V<n>__<name>.sql`, embedded in the binary (refinery), run at connect time under
//! a PostgreSQL advisory lock, so replicas starting together migrate once. A database that has
//! a migration this binary does not know (a newer release migrated it) is refused: the older
//! binary would not know the schema it writes to.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::audit::Actor;
use crate::clock::SharedClock;
use crate::store::key_cache::KeyCache;
use crate::{Error, Result};

mod accounts;
#[cfg(test)]
mod accounts_tests;
mod counters;
mod follower;
mod keys;
mod storage;

pub use follower::{ChangeListener, DEFAULT_LEASE_MS, FeedChange, ReplicaOptions, ReplicaStatus};
pub use storage::TableCheck;

mod embedded {
    refinery::embed_migrations!("src/pg/migrations");
}

/// The advisory lock key migrations hold (any constant shared by every replica): "bsk" +
/// schema in ASCII.
const MIGRATION_LOCK: i64 = 0x6273_6b5f_7363_6865;

/// The advisory lock the first-start bootstrap holds ("bsk_boot" in ASCII).
const BOOTSTRAP_LOCK: i64 = 0x6273_6b5f_626f_6f74;

/// Connection settings for [`PgStore::connect`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// How long to wait for a connection to the database before failing the call.
    pub connect_timeout: Duration,
    /// The longest any one statement may run (PostgreSQL's `statement_timeout`).
    pub statement_timeout: Duration,
    /// Most connections the pool holds.
    pub pool_size: usize,
    /// Most active keys held in the in-memory lookup cache (0 turns it off).
    pub key_cache_capacity: usize,
    /// Where "now" comes from (the system clock unless a test moves time by hand).
    pub clock: SharedClock,
    /// PEM certificates to trust for TLS (`sslmode=require`) besides the Mozilla roots, for
    /// a database whose certificate a private authority signed.
    pub ca_file: Option<std::path::PathBuf>,
    /// Follow the change feed as a replica (a serving process), or `None` for a short-lived
    /// command, which keeps no key cache and registers no replica.
    pub replica: Option<ReplicaOptions>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            pool_size: 16,
            key_cache_capacity: crate::store::DEFAULT_KEY_CACHE_CAPACITY,
            clock: crate::clock::system(),
            ca_file: None,
            replica: Some(ReplicaOptions::default()),
        }
    }
}

/// A connection to a BillStack database on PostgreSQL.
pub struct PgStore {
    /// Always `Some` until dropped (see the `Drop` impl).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    clock: SharedClock,
    key_cache: std::sync::Arc<KeyCache>,
    /// This process as a replica following the change feed (`None`: not following, so no
    /// key is cached).
    follower: Option<std::sync::Arc<follower::Follower>>,
    /// The highest change-feed position a cache miss's snapshot has seen: every record read
    /// from the database reflects at least the changes up to it.
    feed_position_read: std::sync::atomic::AtomicI64,
    /// The URL without its password, for messages.
    shown_url: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    /// The store may be dropped anywhere, an async task included, where a runtime must not be
    /// shut down by waiting: its threads are let go instead (the connections close with them).
    fn drop(&mut self) {
        self.leave();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// An audit event to write in the transaction of its change (see [`write_event`]).
#[derive(Debug, Clone)]
pub(crate) struct Event {
    team_id: Option<String>,
    actor: String,
    source: Option<String>,
    action: &'static str,
    target: String,
    details: Option<serde_json::Value>,
}

impl Event {
    pub(crate) fn new(
        team_id: Option<&str>,
        actor: Actor<'_>,
        action: &'static str,
        target: &str,
    ) -> Event {
        Event {
            team_id: team_id.map(str::to_owned),
            actor: actor.id.to_owned(),
            source: actor.source.map(str::to_owned),
            action,
            target: target.to_owned(),
            details: None,
        }
    }

    pub(crate) fn with(mut self, details: serde_json::Value) -> Event {
        self.details = Some(details);
        self
    }
}

/// Writes `event` at `at` (Unix ms) through `client` (the change's transaction).
pub(crate) async fn write_event(client: &impl GenericClient, at: i64, event: &Event) -> Result<()> {
    client
        .execute(
            "INSERT INTO audit_log (seq, at, team_id, actor, action, target, source, details) \
             VALUES (nextval('audit_seq'), $1, $2, $3, $4, $5, $6, $7)",
            &[
                &at,
                &event.team_id,
                &event.actor,
                &event.action,
                &event.target,
                &event.source,
                &event.details,
            ],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The kinds of change the feed carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change {
    /// A key was created, changed, rotated or revoked.
    Key,
    /// A team's policy changed.
    Policy,
    /// A team's membership changed.
    Membership,
}

/// Appends a change to the feed inside the writing transaction: the number comes from the
/// counter row, which this transaction now holds until it commits, so numbers follow commit
/// order with no gaps. The `NOTIFY` is delivered at commit and carries only the number.
pub(crate) async fn append_change(
    client: &impl GenericClient,
    at: i64,
    kind: Change,
    team_id: &str,
    subject: &str,
) -> Result<i64> {
    let kind = match kind {
        Change::Key => "key",
        Change::Policy => "policy",
        Change::Membership => "membership",
    };
    let row = client
        .query_one(
            "UPDATE change_feed_head SET seq = seq + 1 RETURNING seq",
            &[],
        )
        .await
        .map_err(db_error)?;
    let seq: i64 = row.get(0);
    client
        .execute(
            "INSERT INTO change_feed (seq, at, kind, team_id, subject) VALUES ($1, $2, $3, $4, $5)",
            &[&seq, &at, &kind, &team_id, &subject],
        )
        .await
        .map_err(db_error)?;
    client
        .execute(
            "SELECT pg_notify('billstack_changes', $1)",
            &[&seq.to_string()],
        )
        .await
        .map_err(db_error)?;
    Ok(seq)
}

/// The TLS client settings: Mozilla's roots, plus the certificates of `ca_file` (PEM).
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| crate::invalid("storage_ca", format!("{}: {e}", path.display())))?
        {
            let cert =
                cert.map_err(|e| crate::invalid("storage_ca", format!("{}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| crate::invalid("storage_ca", format!("{}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(crate::invalid(
                "storage_ca",
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Unavailable(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A database error as the store reports it: an unreachable or failing database is
/// [`Error::Unavailable`] (retry later); the message never carries the URL's password.
pub(crate) fn db_error(e: impl std::error::Error) -> Error {
    // The whole chain: "error performing TLS handshake" says less than its cause does.
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    Error::Unavailable(message)
}

impl PgStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/database[?options]`), checks
    /// that the database answers, and brings its schema up to date. `Invalid` (`storage`) for
    /// a URL that is not one; `Unavailable` when the database cannot be reached;
    /// `SchemaTooNew` when a newer release has migrated it.
    pub fn connect(url: &str, options: &PgOptions) -> Result<PgStore> {
        let shown_url = redact_url(url);
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            crate::invalid(
                "storage",
                format!("{shown_url} is not a PostgreSQL URL: {e}"),
            )
        })?;
        config.connect_timeout(options.connect_timeout);
        config.options(format!(
            "-c statement_timeout={}",
            options.statement_timeout.as_millis()
        ));
        if config.get_application_name().is_none() {
            config.application_name("billstack");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("billstack-pg")
            .enable_all()
            .build()?;
        let recycling = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        // TLS when the URL asks for it (`sslmode=require`): the server's certificate and name
        // are always verified. Otherwise plain, as on loopback or a private network.
        let connector = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            let tls = tls_config(options.ca_file.as_deref())?;
            follower::Connector::Tls(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        } else {
            follower::Connector::Plain
        };
        let manager = match &connector {
            follower::Connector::Tls(tls) => {
                Manager::from_config(config.clone(), tls.clone(), recycling)
            }
            follower::Connector::Plain => {
                Manager::from_config(config.clone(), tokio_postgres::NoTls, recycling)
            }
        };
        let wait = options.connect_timeout;
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .recycle_timeout(Some(wait))
            .build()
            .map_err(db_error)?;
        let store = PgStore {
            runtime: Some(runtime),
            pool,
            clock: std::sync::Arc::clone(&options.clock),
            key_cache: std::sync::Arc::new(KeyCache::new(options.key_cache_capacity)),
            follower: options
                .replica
                .clone()
                .map(|o| std::sync::Arc::new(follower::Follower::new(o))),
            feed_position_read: std::sync::atomic::AtomicI64::new(0),
            shown_url,
        };
        store.migrate()?;
        if let Some(follower) = &store.follower {
            store.start_following(follower, config, connector, options.connect_timeout)?;
        }
        Ok(store)
    }

    /// Runs `work` (given a pool handle) on the store's runtime and waits for its answer.
    pub(crate) fn run<T, F, Fut>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let future = work(self.pool.clone());
        let Some(runtime) = &self.runtime else {
            return Err(Error::Unavailable("the store is closed".into()));
        };
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| Error::Unavailable("the database task ended without answering".into()))?
    }

    /// The store's "now".
    pub(crate) fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Runs `work` with a connection of the pool.
    pub(crate) fn with_client<T, F, Fut>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        self.run(|pool| async move {
            let client = pool.get().await.map_err(db_error)?;
            work(client).await
        })
    }

    /// Applies the migrations this binary embeds, once, under the advisory lock.
    fn migrate(&self) -> Result<()> {
        self.run(|pool| async move {
            let mut client = pool.get().await.map_err(db_error)?;
            client
                .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(db_error)?;
            let outcome = embedded::migrations::runner()
                .set_abort_missing(true)
                .set_abort_divergent(true)
                .run_async(&mut **client)
                .await;
            // Unlocked whatever happened (the lock would end with the session anyway).
            let _ = client
                .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                .await;
            outcome.map(drop).map_err(|e| match e.kind() {
                refinery::error::Kind::MissingVersion(migration) => Error::SchemaTooNew {
                    found: migration.version().into(),
                    known: embedded::migrations::runner()
                        .get_migrations()
                        .iter()
                        .map(|m| i64::from(m.version()))
                        .max()
                        .unwrap_or(0),
                },
                _ => db_error(e),
            })
        })
    }

    /// Starts the follower at the feed's head (nothing is cached yet, so nothing is behind)
    /// and waits, up to `wait` past one lease, for its first complete poll, so a server that
    /// has just connected can decide at once. If it has not caught up by then, the store
    /// still opens: lookups answer `Unavailable` and `/readyz` says why until it does.
    fn start_following(
        &self,
        follower: &std::sync::Arc<follower::Follower>,
        config: tokio_postgres::Config,
        connector: follower::Connector,
        wait: Duration,
    ) -> Result<()> {
        let head: i64 = self.with_client(|client| async move {
            Ok(client
                .query_one("SELECT seq FROM change_feed_head", &[])
                .await
                .map_err(db_error)?
                .get(0))
        })?;
        follower.start_at(head);
        // Keys in use elsewhere are likely to be used here next; changes committed after the
        // head read above are applied by the follower (and a fill older than an invalidation
        // is dropped by the cache).
        let preloaded = self.preload_recent(self.key_cache.capacity() / 2)?;
        tracing::debug!(preloaded, "replica: preloaded recently used keys");
        let task = follower::follow(
            std::sync::Arc::clone(follower),
            std::sync::Arc::clone(&self.key_cache),
            config,
            connector,
        );
        if let Some(runtime) = &self.runtime {
            runtime.spawn(task);
        }
        let deadline = std::time::Instant::now() + wait + follower.options.lease;
        let mut step = Duration::from_millis(1);
        while !follower.status().caught_up && std::time::Instant::now() < deadline {
            std::thread::sleep(step);
            step = (step * 2).min(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops following the feed and leaves the `replicas` table, so no writer waits for this
    /// process any more (a clean shutdown; a crashed replica is waited for until its lease
    /// would have ended). Idempotent.
    pub fn leave(&self) {
        let (Some(follower), Some(runtime)) = (&self.follower, &self.runtime) else {
            return;
        };
        if follower.stop() {
            return;
        }
        let (pool, id) = (self.pool.clone(), follower.id.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            if let Ok(client) = pool.get().await {
                let _ = client
                    .execute("DELETE FROM replicas WHERE id = $1", &[&id])
                    .await;
            }
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(Duration::from_secs(1));
    }

    /// This replica's state (`None` when the store does not follow the feed).
    pub fn replica_status(&self) -> Option<ReplicaStatus> {
        self.follower.as_ref().map(|f| f.status())
    }

    /// Calls `listener` for every change this replica applies from the feed (its own writes
    /// included), on the store's runtime: it must not block.
    pub fn on_change(&self, listener: ChangeListener) {
        if let Some(follower) = &self.follower {
            follower.add_listener(listener);
        }
    }

    /// Whether cached keys may decide: always for a store that keeps no cache; for a replica,
    /// while its lease holds.
    pub(crate) fn lease_valid(&self) -> bool {
        self.follower.as_ref().is_none_or(|f| f.lease_valid())
    }

    /// `Unavailable` when this replica's lease has run out: it may have missed a revocation,
    /// so it decides nothing until it has caught up with the feed.
    pub(crate) fn check_lease(&self) -> Result<()> {
        match &self.follower {
            Some(f) if !f.lease_valid() => Err(Error::Unavailable(format!(
                "this replica has not caught up with the change feed within its lease \
                 ({} ms); it refuses until it has",
                f.options.lease.as_millis()
            ))),
            _ => Ok(()),
        }
    }

    /// Waits until every other replica with a live heartbeat has applied feed position `seq`,
    /// or until the longest of their leases has passed since the change committed: a replica
    /// that has not applied it by then refuses by itself (see `follower`). Never fails: the
    /// change is committed, and if the database cannot be asked, the lease still bounds it.
    pub(crate) fn confirm(&self, seq: i64) {
        let committed = std::time::Instant::now();
        let own = self
            .follower
            .as_ref()
            .map(|f| f.id.clone())
            .unwrap_or_default();
        let own_lease = self
            .follower
            .as_ref()
            .map_or(Duration::from_millis(follower::DEFAULT_LEASE_MS), |f| {
                f.options.lease
            });
        // Clocks run at slightly different rates; 5 % covers far more than any real drift.
        let bound = |lease: Duration| committed + lease + lease / 20;
        let mut deadline = bound(own_lease);
        let mut step = Duration::from_micros(500);
        let check = format!(
            "SELECT count(*) FILTER (WHERE applied_seq < $2), COALESCE(max(lease_ms), 0)::bigint \
             FROM replicas WHERE id <> $1 AND heartbeat_at > {} - lease_ms",
            follower::DB_NOW_MS
        );
        loop {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            let (own, check) = (own.clone(), check.clone());
            let answer = self.run(move |pool| async move {
                let asked = async {
                    let client = pool.get().await.map_err(db_error)?;
                    let row = client
                        .query_one(&check, &[&own, &seq])
                        .await
                        .map_err(db_error)?;
                    Ok::<_, Error>((row.get::<_, i64>(0), row.get::<_, i64>(1)))
                };
                tokio::time::timeout(remaining, asked)
                    .await
                    .unwrap_or_else(|_| Err(Error::Unavailable("timed out".into())))
            });
            match answer {
                Ok((0, _)) => return,
                Ok((_, lease_ms)) => {
                    let longest = Duration::from_millis(u64::try_from(lease_ms).unwrap_or(0));
                    deadline = deadline.max(bound(longest));
                }
                Err(_) => {}
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                tracing::warn!(
                    seq,
                    "replicas: not every replica confirmed change {seq} within its lease; those that did not have stopped allowing from their caches"
                );
                return;
            }
            std::thread::sleep(step.min(deadline - now));
            step = (step * 2).min(Duration::from_millis(4));
        }
    }

    /// The highest change-feed position any cache miss has read at: every key record this
    /// store has cached reflects every change up to it.
    pub fn feed_position_read(&self) -> i64 {
        self.feed_position_read
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The newest migration applied to the database.
    pub fn schema_version(&self) -> Result<i64> {
        self.run(|pool| async move {
            let client = pool.get().await.map_err(db_error)?;
            let row = client
                .query_one(
                    "SELECT COALESCE(MAX(version), 0)::bigint FROM refinery_schema_history",
                    &[],
                )
                .await
                .map_err(db_error)?;
            Ok(row.get::<_, i64>(0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use billstack_pg_cluster::PgCluster;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/keys"),
            "postgres://app:***@db:5432/keys"
        );
        assert_eq!(
            redact_url("postgres://app@db/keys"),
            "postgres://app@db/keys"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn a_bad_url_is_refused_by_field() {
        match PgStore::connect("postgres://host:notaport/db", &PgOptions::default()) {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "storage"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unreachable_database_fails_fast_as_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let started = std::time::Instant::now();
        let outcome = PgStore::connect(
            &format!("postgres://nobody:pw@127.0.0.1:{port}/none"),
            &PgOptions::default(),
        );
        match outcome {
            Err(Error::Unavailable(message)) => assert!(!message.contains("pw@"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// With `sslmode=require` the connection is TLS and the server must prove who it is: a
    /// certificate from an authority not trusted is refused; trusted through `ca_file`, it works.
    #[test]
    fn tls_is_used_when_required_and_the_certificate_is_checked() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let Some(cluster) = PgCluster::start_tls(&cert.pem(), &key.serialize_pem()) else {
            eprintln!("PostgreSQL is not installed: skipped");
            return;
        };
        let url = format!("{}?sslmode=require", cluster.new_database());
        match PgStore::connect(&url, &PgOptions::default()) {
            Err(Error::Unavailable(message)) => {
                assert!(message.to_lowercase().contains("certificate"), "{message}");
            }
            other => panic!("an untrusted certificate was accepted: {other:?}"),
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("write");
        let store = PgStore::connect(
            &url,
            &PgOptions {
                ca_file: Some(ca),
                ..PgOptions::default()
            },
        )
        .expect("a trusted certificate");
        let encrypted: bool = store
            .with_client(|client| async move {
                Ok(client
                    .query_one(
                        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                        &[],
                    )
                    .await
                    .map_err(db_error)?
                    .get(0))
            })
            .expect("query");
        assert!(encrypted, "the connection is TLS");
        let missing = PgStore::connect(
            &url,
            &PgOptions {
                ca_file: Some(dir.path().join("none.pem")),
                ..PgOptions::default()
            },
        );
        assert!(
            matches!(
                missing,
                Err(Error::Invalid {
                    field: "storage_ca",
                    ..
                })
            ),
            "{missing:?}"
        );
    }

    #[test]
    fn connecting_migrates_once_and_a_newer_schema_is_refused() {
        let Some(cluster) = PgCluster::start() else {
            eprintln!("PostgreSQL is not installed: skipped");
            return;
        };
        let url = cluster.new_database();
        // Replicas starting together: each migrates or finds it done.
        let stores: Vec<PgStore> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| PgStore::connect(&url, &PgOptions::default())))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread").expect("connect"))
                .collect()
        });
        let known = embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|m| i64::from(m.version()))
            .max()
            .expect("a migration");
        for store in &stores {
            assert_eq!(store.schema_version().expect("version"), known);
        }
        // A newer release's migration, as it would have recorded it.
        stores[0]
            .run(|pool| async move {
                let client = pool.get().await.map_err(db_error)?;
                client
                    .execute(
                        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
                         VALUES ($1, 'from_the_future', '2027-01-01T00:00:00Z', '0')",
                        &[&i32::try_from(known + 1).expect("small")],
                    )
                    .await
                    .map_err(db_error)?;
                Ok(())
            })
            .expect("insert");
        match PgStore::connect(&url, &PgOptions::default()) {
            Err(Error::SchemaTooNew { found, known: k }) => {
                assert_eq!((found, k), (known + 1, known));
            }
            other => panic!("{other:?}"),
        }
    }
}
