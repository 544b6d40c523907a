//! Which policy decides for which team: the deployment default, unless the team uploaded its own.
//!
//! A team's own policy that no longer loads (a limit was lowered, a plugin whose `info` now
//! fails) is kept as a [`BrokenPolicy`]: the team fails closed (503 `policy_error`) until an
//! owner uploads, resets or rolls back. It never falls back to the deployment default, which
//! may allow what the team's policy refused.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use super::Plugin;
use super::{PluginError, PolicyDecision, PolicyInfo, PolicyRequest, ScopePolicy};

/// Where a team's active policy comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicySource {
    /// The deployment default (embedded, or the operator's configured file).
    Default,
    /// The team's own upload.
    Team,
}

/// A team's stored policy that did not load. As a [`ScopePolicy`] it defines no scope and
/// refuses every request with [`PluginError::NotLoaded`], which the decision turns into 503
/// `policy_error`.
#[derive(Debug)]
pub struct BrokenPolicy {
    sha256: String,
    error: String,
    info: PolicyInfo,
}

impl BrokenPolicy {
    /// The stored policy `sha256` (hex), which failed to load with `error`.
    pub fn new(sha256: impl Into<String>, error: impl Into<String>) -> BrokenPolicy {
        BrokenPolicy {
            sha256: sha256.into(),
            error: error.into(),
            info: PolicyInfo {
                name: String::new(),
                version: String::new(),
                scopes: Vec::new(),
            },
        }
    }

    /// Hex SHA-256 of the stored component.
    pub fn sha256_hex(&self) -> &str {
        &self.sha256
    }

    /// Why it did not load.
    pub fn error(&self) -> &str {
        &self.error
    }
}

impl ScopePolicy for BrokenPolicy {
    fn info(&self) -> &PolicyInfo {
        &self.info
    }

    fn scope_names(&self) -> &[String] {
        &[]
    }

    fn authorize(&self, _request: &PolicyRequest<'_>) -> Result<PolicyDecision, PluginError> {
        Err(PluginError::NotLoaded(self.error.clone()))
    }
}

/// The policy that decides for a team right now.
#[derive(Debug, Clone)]
pub enum ActivePolicy {
    /// A loaded plugin.
    Loaded(Arc<Plugin>),
    /// The team's stored policy, which did not load: the team fails closed.
    Broken(Arc<BrokenPolicy>),
}

impl ActivePolicy {
    /// The policy as the decision function asks it.
    pub fn as_policy(&self) -> &dyn ScopePolicy {
        match self {
            ActivePolicy::Loaded(p) => &**p,
            ActivePolicy::Broken(b) => &**b,
        }
    }

    /// Hex SHA-256 of the component.
    pub fn sha256_hex(&self) -> String {
        match self {
            ActivePolicy::Loaded(p) => p.sha256_hex(),
            ActivePolicy::Broken(b) => b.sha256_hex().to_owned(),
        }
    }

    /// Why the policy did not load, when it did not.
    pub fn load_error(&self) -> Option<&str> {
        match self {
            ActivePolicy::Loaded(_) => None,
            ActivePolicy::Broken(b) => Some(b.error()),
        }
    }
}

/// The active policies. Swapping one is a single pointer replacement under a write lock, so
/// every decision sees either the old or the new policy, never a mix.
#[derive(Debug)]
pub struct PolicySet {
    default: RwLock<Arc<Plugin>>,
    teams: RwLock<HashMap<String, ActivePolicy>>,
}

impl PolicySet {
    /// A set where every team uses `default`.
    pub fn new(default: Arc<Plugin>) -> PolicySet {
        PolicySet {
            default: RwLock::new(default),
            teams: RwLock::new(HashMap::new()),
        }
    }

    /// The policy deciding for `team_id`, and where it comes from.
    pub fn for_team(&self, team_id: &str) -> (ActivePolicy, PolicySource) {
        if let Some(p) = self
            .teams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(team_id)
        {
            return (p.clone(), PolicySource::Team);
        }
        (
            ActivePolicy::Loaded(self.default_policy()),
            PolicySource::Default,
        )
    }

    /// The deployment default.
    pub fn default_policy(&self) -> Arc<Plugin> {
        Arc::clone(&self.default.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the deployment default.
    pub fn set_default(&self, plugin: Arc<Plugin>) {
        *self.default.write().unwrap_or_else(|e| e.into_inner()) = plugin;
    }

    /// Makes `plugin` the team's policy. The plugin should be the team's own [`Plugin`] (from
    /// [`crate::policy::PolicyEngine::load_for_team`]) so its instances serve no other team.
    pub fn set_team(&self, team_id: &str, plugin: Arc<Plugin>) {
        self.set_team_entry(team_id, ActivePolicy::Loaded(plugin));
    }

    /// Records that the team's stored policy did not load: its requests fail closed.
    pub fn set_team_broken(&self, team_id: &str, broken: BrokenPolicy) {
        self.set_team_entry(team_id, ActivePolicy::Broken(Arc::new(broken)));
    }

    fn set_team_entry(&self, team_id: &str, entry: ActivePolicy) {
        self.teams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(team_id.to_owned(), entry);
    }

    /// Returns the team to the deployment default.
    pub fn clear_team(&self, team_id: &str) {
        self.teams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(team_id);
    }

    /// The teams whose stored policy did not load, sorted by team id.
    pub fn broken_teams(&self) -> Vec<(String, Arc<BrokenPolicy>)> {
        let mut out: Vec<_> = self
            .teams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(team, p)| match p {
                ActivePolicy::Broken(b) => Some((team.clone(), Arc::clone(b))),
                ActivePolicy::Loaded(_) => None,
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The teams with a policy of their own (loaded or broken).
    pub fn team_ids(&self) -> Vec<String> {
        self.teams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The SHA-256 of every loaded plugin (the default's and the teams'): what the compile
    /// cache must keep.
    pub fn loaded_sha256s(&self) -> HashSet<[u8; 32]> {
        let mut live: HashSet<[u8; 32]> = self
            .teams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|p| match p {
                ActivePolicy::Loaded(p) => Some(p.sha256()),
                ActivePolicy::Broken(_) => None,
            })
            .collect();
        live.insert(self.default_policy().sha256());
        live
    }
}
