//! The application layer: every business rule, once, with no HTTP in it. The HTTP handlers
//! (`server`) and the offline commands (`cli`) both call these services; neither reaches the
//! store or the policy set on its own.
//!
//! [`App`] owns the store (through the [`Storage`] seam), the active policies, the plugin
//! engine, the limiters, the usage tracker, the metrics and the clock. The services are
//! `impl App` blocks by subject: [`accounts`] (sign-in, sessions, membership), [`keys`],
//! [`policies`], [`verify`] (the front doors' decision), [`admin`] (projects, audit log,
//! readiness, bootstrap). Each returns a domain value or an [`AppError`]; how that becomes an
//! HTTP answer is decided in `server::respond` alone.
//!
//! The one rule for blocking work: a store call never runs on an async executor thread (the
//! store may wait for the disk, and every write waits while a backup holds the write gate),
//! and neither does compiling a plugin. So every service that may block is a plain synchronous
//! function: the CLI calls it directly, and async code calls it through [`App::run`], which
//! runs it on the blocking pool. The one async service, [`App::verify`], makes memory-only
//! decisions in place ([`billstack_keystore::KeyStore::cached_key`]) and sends the rest to the
//! pool itself.

use std::sync::Arc;
use std::time::Duration;

use billstack_keystore::clock::SharedClock;
use billstack_keystore::{Actor, Storage};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::policy::{PolicyEngine, PolicySet};
use crate::ratelimit::{AddressThrottle, KeyLimiter};

pub mod accounts;
pub mod admin;
mod error;
pub mod keys;
pub mod members;
pub mod operator;
pub mod policies;
pub mod usage;
pub mod verify;

pub use accounts::{LoginLimiter, Need};
pub use error::{AppError, AppResult};
use usage::UsageTracker;

/// Most decisions that need the blocking pool run at once; the rest queue.
pub const MAX_CONCURRENT_DECISIONS: usize = 64;

/// Tunables of the services (from the configuration).
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Failed keys allowed per client address per window before it is throttled.
    pub unknown_keys_per_address: u32,
    /// The address throttle's window.
    pub throttle_window: Duration,
}

/// Who is acting: an account signed in from an address, or the operator on the command line
/// (who can read the data directory, and so may act in any team).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The offline command line (`cli` in the audit log).
    Operator,
    /// A signed-in account.
    Account {
        /// `user_…`
        user_id: String,
        /// The client's address.
        source: String,
    },
}

impl Caller {
    /// The borrowed form the store's audit log takes.
    pub fn actor(&self) -> Actor<'_> {
        match self {
            Caller::Operator => Actor {
                id: "cli",
                source: None,
            },
            Caller::Account { user_id, source } => Actor::from_address(user_id, source),
        }
    }

    /// The id recorded as the actor (`user_…` or `cli`).
    pub fn id(&self) -> &str {
        self.actor().id
    }
}

/// The services and everything they share. Cheap to share behind an `Arc`.
pub struct App {
    store: Arc<dyn Storage>,
    policies: Arc<PolicySet>,
    engine: Arc<PolicyEngine>,
    clock: SharedClock,
    usage: Arc<UsageTracker>,
    key_limiter: KeyLimiter,
    /// Per-key budgets among replicas, when the store is shared (PostgreSQL).
    shared_budgets: Arc<crate::ratelimit::SharedKeyBudgets>,
    address_throttle: AddressThrottle,
    login_limiter: LoginLimiter,
    metrics: Metrics,
    decisions: Semaphore,
}

impl App {
    /// The services over a store and the policies loaded from it. The clock is the store's.
    pub fn new(
        store: Arc<dyn Storage>,
        policies: Arc<PolicySet>,
        engine: Arc<PolicyEngine>,
        options: &AppOptions,
    ) -> App {
        let metrics = if store.replica_status().is_some() {
            Metrics::for_replica()
        } else {
            Metrics::default()
        };
        App {
            clock: store.clock(),
            store,
            policies,
            engine,
            usage: Arc::new(UsageTracker::default()),
            key_limiter: KeyLimiter::default(),
            shared_budgets: Arc::default(),
            address_throttle: AddressThrottle::new(
                options.unknown_keys_per_address,
                options.throttle_window,
            ),
            login_limiter: LoginLimiter::default(),
            metrics,
            decisions: Semaphore::new(MAX_CONCURRENT_DECISIONS),
        }
    }

    /// The metrics the services and the HTTP layer record into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The active policies.
    pub fn policies(&self) -> &Arc<PolicySet> {
        &self.policies
    }

    /// The plugin engine (its limits bound uploads).
    pub fn engine(&self) -> &Arc<PolicyEngine> {
        &self.engine
    }

    /// The current time in Unix milliseconds, by the app's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The store, for start-up wiring (background flushers, the control socket).
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// Runs a service on the blocking pool: how async code (the HTTP handlers) calls every
    /// service but [`App::verify`] (see the module's rule for blocking work).
    pub async fn run<T>(
        self: &Arc<Self>,
        service: impl FnOnce(&App) -> AppResult<T> + Send + 'static,
    ) -> AppResult<T>
    where
        T: Send + 'static,
    {
        let app = Arc::clone(self);
        // What the service logs stays inside the caller's span (the request and its id).
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| service(&app)))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
    }

    /// Writes pending usage and makes every write durable (at shutdown).
    pub fn shut_down(&self) -> AppResult<()> {
        self.usage.flush(&*self.store)?;
        self.store.flush()?;
        self.store.leave();
        Ok(())
    }

    /// Starts the background work the services need while a server runs: writing noted usage
    /// every few seconds.
    pub fn spawn_background(&self) {
        usage::spawn_flusher(Arc::clone(&self.usage), Arc::clone(&self.store));
        if self.store.shared_counters().is_some() {
            let (budgets, store) = (Arc::clone(&self.shared_budgets), Arc::clone(&self.store));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::ratelimit::SHARED_SYNC_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let (b, s) = (Arc::clone(&budgets), Arc::clone(&store));
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Some(counters) = s.shared_counters() {
                            b.sync(counters, s.clock().now_ms());
                        }
                    })
                    .await;
                }
            });
        }
    }
}

/// Test support: an `App` over a fresh store on a manual clock, with teams `team_a` (project
/// `proj_a`) and `team_b` (project `proj_b`) and the embedded default policy.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;
    use std::time::Duration;

    use billstack_keystore::clock::ManualClock;
    use billstack_keystore::{Store, StoreOptions, TeamStore};

    use super::{App, AppOptions};
    use crate::policy::{PolicyEngine, PolicyLimits, PolicySet};

    pub(crate) struct TestApp {
        pub app: Arc<App>,
        pub clock: Arc<ManualClock>,
        pub _dir: tempfile::TempDir,
    }

    pub(crate) fn app(options: AppOptions) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::starting_now();
        let store = Store::open_with(
            dir.path().join("data"),
            &StoreOptions {
                clock: clock.clone(),
                ..StoreOptions::default()
            },
        )
        .expect("store");
        for (team, project) in [("team_a", "proj_a"), ("team_b", "proj_b")] {
            store
                .create_team(Some(team), team, "test".into())
                .expect("team");
            store
                .create_project(team, Some(project), project, "test".into())
                .expect("project");
        }
        let engine = PolicyEngine::new(
            PolicyLimits {
                deadline: Duration::from_secs(5),
                ..PolicyLimits::default()
            },
            Some(dir.path().join("cache")),
        )
        .expect("engine");
        let policies = PolicySet::new(
            engine
                .load(crate::plugins::DEFAULT_PLUGIN)
                .expect("default"),
        );
        TestApp {
            app: Arc::new(App::new(
                Arc::new(store),
                Arc::new(policies),
                engine,
                &options,
            )),
            clock,
            _dir: dir,
        }
    }

    /// Default options: 100 failed keys per address per minute.
    pub(crate) fn options() -> AppOptions {
        AppOptions {
            unknown_keys_per_address: 100,
            throttle_window: Duration::from_secs(60),
        }
    }
}
