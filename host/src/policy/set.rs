//! Which policy decides for which team: the deployment default, unless the team uploaded its own.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::Plugin;

/// Where a team's active policy comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicySource {
    /// The deployment default (embedded, or the operator's configured file).
    Default,
    /// The team's own upload.
    Team,
}

/// The active policies. Swapping one is a single pointer replacement under a write lock, so
/// every decision sees either the old or the new policy, never a mix.
#[derive(Debug)]
pub struct PolicySet {
    default: RwLock<Arc<Plugin>>,
    teams: RwLock<HashMap<String, Arc<Plugin>>>,
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
    pub fn for_team(&self, team_id: &str) -> (Arc<Plugin>, PolicySource) {
        if let Some(p) = self
            .teams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(team_id)
        {
            return (Arc::clone(p), PolicySource::Team);
        }
        (
            Arc::clone(&self.default.read().unwrap_or_else(|e| e.into_inner())),
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
        self.teams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(team_id.to_owned(), plugin);
    }

    /// Returns the team to the deployment default.
    pub fn clear_team(&self, team_id: &str) {
        self.teams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(team_id);
    }
}
