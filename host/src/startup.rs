//! Start-up wiring shared by the server and the offline commands: open the store, build the
//! policy engine, load the deployment default and the teams' uploaded policies, and put the
//! services ([`App`]) together.

use std::sync::Arc;

use anyhow::Context;
use billstack_keystore::pg::{PgOptions, PgStore, ReplicaOptions, redact_url};
use billstack_keystore::{Storage, Store, StoreOptions, TeamPolicy};

use crate::app::{App, AppOptions};
use crate::config::{Settings, StorageChoice};
use crate::plugins::DEFAULT_PLUGIN;
use crate::policy::{BrokenPolicy, Plugin, PolicyEngine, PolicySet};

/// The name that stands for the embedded default plugin wherever a plugin path is taken.
pub const DEFAULT_PLUGIN_NAME: &str = "default";

/// Reads a plugin argument: `default` is the embedded plugin, anything else a file path.
pub fn read_plugin_arg(arg: &str) -> anyhow::Result<Vec<u8>> {
    if arg == DEFAULT_PLUGIN_NAME {
        return Ok(DEFAULT_PLUGIN.to_vec());
    }
    std::fs::read(arg).with_context(|| format!("cannot read plugin {arg}"))
}

/// The policy engine for a data directory (its compile cache lives in `plugin-cache/`).
pub fn engine_for(settings: &Settings) -> anyhow::Result<Arc<PolicyEngine>> {
    PolicyEngine::new(
        settings.limits.clone(),
        Some(settings.data_dir.join("plugin-cache")),
    )
}

/// Loads the deployment default: the configured file, or the embedded plugin.
pub fn load_default_policy(
    engine: &Arc<PolicyEngine>,
    settings: &Settings,
) -> anyhow::Result<Arc<Plugin>> {
    match &settings.policy {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| {
                format!(
                    "cannot read policy {} (a relative `policy` in the config file is relative \
                     to the file's directory; BILLSTACK_POLICY, to the working directory)",
                    path.display()
                )
            })?;
            engine
                .load(&bytes)
                .with_context(|| format!("the configured policy {} was refused", path.display()))
        }
        None => engine
            .load(DEFAULT_PLUGIN)
            .context("the embedded default policy failed to load"),
    }
}

/// Builds the active policy set: the default plus every team upload in the store.
///
/// A stored team policy that no longer loads (say, after a limit was lowered, or its bytes
/// are damaged) fails closed for that team alone: its SaaS requests get 503 `policy_error`
/// until an owner uploads, resets or rolls back. It is logged, shown by `GET …/policy` and
/// `/readyz`, and never replaced by the deployment default, which may allow what it refused.
/// The rest of the server starts as usual. Compiled code no loaded policy uses is pruned.
pub fn load_policies(
    engine: &Arc<PolicyEngine>,
    settings: &Settings,
    store: &dyn Storage,
) -> anyhow::Result<PolicySet> {
    let set = PolicySet::new(load_default_policy(engine, settings)?);
    load_team_policies(engine, &set, store)?;
    Ok(set)
}

/// Adds every team upload in the store to `set` (see [`load_policies`]).
pub fn load_team_policies(
    engine: &Arc<PolicyEngine>,
    set: &PolicySet,
    store: &dyn Storage,
) -> anyhow::Result<()> {
    for meta in store.list_team_policies()? {
        load_team_policy(engine, set, store, &meta);
    }
    engine.retain_compiled(&set.loaded_sha256s());
    Ok(())
}

/// Adds one team's stored upload to `set`; one that does not load (or whose bytes cannot be
/// read) fails closed, as [`load_policies`] says.
pub fn load_team_policy(
    engine: &Arc<PolicyEngine>,
    set: &PolicySet,
    store: &dyn Storage,
    meta: &TeamPolicy,
) {
    let loaded = match store.get_team_policy(&meta.team_id) {
        Ok(Some((_, bytes))) => engine.load_for_team(&bytes).map_err(|e| e.to_string()),
        Ok(None) => return, // reset since the listing
        Err(e) => Err(e.to_string()),
    };
    match loaded {
        Ok(plugin) => set.set_team(&meta.team_id, plugin),
        Err(error) => {
            tracing::error!(
                team = %meta.team_id,
                sha256 = %meta.sha256,
                error = %error,
                "the team's stored policy does not load; its requests fail closed (503 policy_error) until an owner uploads, resets or rolls back"
            );
            set.set_team_broken(&meta.team_id, BrokenPolicy::new(meta.sha256.clone(), error));
        }
    }
}

/// The services' options from the configuration.
pub fn app_options(settings: &Settings) -> AppOptions {
    AppOptions {
        unknown_keys_per_address: settings.unknown_keys_per_address,
        throttle_window: settings.throttle_window,
    }
}

/// What `billstack serve` runs on: the deployment default (checked first, so a refused policy
/// leaves no store behind), then the store (created and bootstrapped when empty), every team's
/// policy, and the services over them. Blocking: compiles plugins and opens the store.
pub fn serving_app(settings: &Settings) -> anyhow::Result<App> {
    use crate::policy::ScopePolicy as _;
    let engine = engine_for(settings)?;
    let default_policy = load_default_policy(&engine, settings)?;
    let store = open_storage_as(settings, Opened::Serving)?;
    crate::app::admin::bootstrap(&*store)?;
    let source = settings
        .policy
        .as_ref()
        .map_or_else(|| "embedded".to_string(), |path| path.display().to_string());
    tracing::info!(
        name = %default_policy.info().name,
        version = %default_policy.info().version,
        sha256 = %default_policy.sha256_hex(),
        source = %source,
        "policy: deployment default {} {} from {source}",
        default_policy.info().name,
        default_policy.info().version,
    );
    let policies = PolicySet::new(default_policy);
    load_team_policies(&engine, &policies, &*store)?;
    let teams = policies.team_ids().len();
    if teams > 0 {
        tracing::info!(teams, "policy: {teams} team(s) with a policy of their own");
    }
    let app = App::new(store, Arc::new(policies), engine, &app_options(settings));
    app.follow_policy_changes();
    Ok(app)
}

/// Who opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// `billstack serve`: on PostgreSQL, a replica following the change feed, with a key
    /// cache bounded by its lease.
    Serving,
    /// A command that reads or writes and exits: no cache, no replica row.
    Command,
}

/// The configured store for a command (see [`open_storage_as`]).
pub fn open_storage(settings: &Settings) -> anyhow::Result<Arc<dyn Storage>> {
    open_storage_as(settings, Opened::Command)
}

/// The configured store: sled in the data directory (created if missing), or a connection to
/// PostgreSQL (its schema migrated if needed).
pub fn open_storage_as(settings: &Settings, opened: Opened) -> anyhow::Result<Arc<dyn Storage>> {
    match &settings.storage {
        StorageChoice::Sled => tracing::info!(dir = %settings.data_dir.display(), "storage: sled"),
        StorageChoice::Postgres(url) => tracing::info!(url = %redact_url(url), "storage: postgres"),
    }
    Ok(match &settings.storage {
        StorageChoice::Sled => Arc::new(Store::open_with(
            &settings.data_dir,
            &StoreOptions::default(),
        )?),
        StorageChoice::Postgres(url) => Arc::new(
            PgStore::connect(
                url,
                &PgOptions {
                    ca_file: settings.storage_ca.clone(),
                    replica: (opened == Opened::Serving).then(|| ReplicaOptions {
                        lease: settings.replica_lease,
                        ..ReplicaOptions::default()
                    }),
                    ..PgOptions::default()
                },
            )
            .with_context(|| format!("storage {}", redact_url(url)))?,
        ),
    })
}

/// The services for a command acting as the operator on an opened store: the deployment
/// default, plus the stored policy of `team` when one is named (to check scopes against it);
/// no other team's plugin is compiled.
pub fn operator_app(
    settings: &Settings,
    store: Arc<dyn Storage>,
    team: Option<&str>,
) -> anyhow::Result<App> {
    let engine = engine_for(settings)?;
    let policies = PolicySet::new(load_default_policy(&engine, settings)?);
    if let Some(team) = team
        && let Some(meta) = store
            .list_team_policies()?
            .into_iter()
            .find(|m| m.team_id == team)
    {
        load_team_policy(&engine, &policies, &*store, &meta);
    }
    Ok(App::new(
        store,
        Arc::new(policies),
        engine,
        &app_options(settings),
    ))
}
