//! Which policy decides for a team, and every way that changes: an owner's upload or reset,
//! the operator's reload of the deployment default. A change is validated completely and
//! stored before it is activated; activation ([`App::activate`]) is one pointer swap, so each
//! decision sees the old policy or the new one, never a mix, and it is the only place that
//! switches policies and prunes compiled code nobody uses any more.

use std::sync::Arc;

use billstack_keystore::KeyRecord;

use super::{App, AppError, AppResult, Caller, Need};
use crate::policy::{ActivePolicy, Plugin, PolicySource, ScopePolicy};

/// What only owners can do to a team's policy (completes "only team owners can …").
pub const UPLOAD: &str = "change the team's policy";

/// A change of the active policies.
pub enum Activation<'a> {
    /// A team's own, validated and stored, plugin.
    Team(&'a str, Arc<Plugin>),
    /// The team goes back to the deployment default.
    ResetTeam(&'a str),
    /// A new deployment default.
    Default(Arc<Plugin>),
}

/// The outcome of an upload.
pub struct Uploaded {
    /// The team's policy from now on.
    pub plugin: Arc<Plugin>,
    /// The team's keys holding scopes the new policy does not define, with those scopes.
    pub keys_with_undefined_scopes: Vec<(KeyRecord, Vec<String>)>,
}

/// The outcome of a reset.
pub struct Reset {
    /// The team's policy from now on (the deployment default).
    pub policy: ActivePolicy,
    /// Where it comes from.
    pub source: PolicySource,
    /// The team's keys holding scopes the default does not define, with those scopes.
    pub keys_with_undefined_scopes: Vec<(KeyRecord, Vec<String>)>,
}

/// The outcome of reloading the deployment default.
pub enum Reloaded {
    /// A different plugin is now the default.
    Changed(Arc<Plugin>),
    /// The file holds the active default already (its SHA-256).
    Unchanged(String),
}

impl App {
    /// Switches the active policies, then drops compiled code (in memory and on disk) that no
    /// active policy uses, so what a deployment keeps is bounded by its active policies, not by
    /// its upload history.
    pub fn activate(&self, change: Activation<'_>) {
        match change {
            Activation::Team(team_id, plugin) => self.policies.set_team(team_id, plugin),
            Activation::ResetTeam(team_id) => self.policies.clear_team(team_id),
            Activation::Default(plugin) => self.policies.set_default(plugin),
        }
        self.prune_compiled();
    }

    fn prune_compiled(&self) {
        self.engine.retain_compiled(&self.policies.loaded_sha256s());
    }

    /// The team's active policy and where it comes from.
    pub fn team_policy(
        &self,
        caller: &Caller,
        team_id: &str,
    ) -> AppResult<(ActivePolicy, PolicySource)> {
        self.authorize(caller, team_id, Need::Member)?;
        Ok(self.policies.for_team(team_id))
    }

    /// An owner's upload: validated (compiles, exports the world, `info()` answers within the
    /// limits), stored durably, then activated. A refused upload changes nothing and leaves
    /// nothing behind, not even its compiled code. Compiling takes up to seconds of CPU.
    pub fn upload_policy(
        &self,
        caller: &Caller,
        team_id: &str,
        bytes: &[u8],
    ) -> AppResult<Uploaded> {
        self.authorize(caller, team_id, Need::Owner(UPLOAD))?;
        let max = self.engine.limits().max_plugin_bytes;
        if bytes.len() > max {
            return Err(AppError::TooLarge(max));
        }
        let plugin = match self.engine.load_for_team(bytes) {
            Ok(plugin) => plugin,
            Err(e) => {
                self.prune_compiled();
                return Err(AppError::InvalidPolicy(e.to_string()));
            }
        };
        self.store.put_team_policy(team_id, bytes, caller.actor())?;
        self.activate(Activation::Team(team_id, Arc::clone(&plugin)));
        let keys_with_undefined_scopes =
            self.keys_with_undefined_scopes(team_id, plugin.scope_names())?;
        tracing::info!(team = %team_id, sha256 = %plugin.sha256_hex(), actor = %caller.id(), "team policy uploaded");
        Ok(Uploaded {
            plugin,
            keys_with_undefined_scopes,
        })
    }

    /// The team's keys holding scopes `catalogue` does not define, with those scopes: what an
    /// upload or a reset tells the owner, since such scopes now allow nothing.
    fn keys_with_undefined_scopes(
        &self,
        team_id: &str,
        catalogue: &[String],
    ) -> AppResult<Vec<(KeyRecord, Vec<String>)>> {
        Ok(self
            .store
            .list_keys(team_id)?
            .into_iter()
            .filter_map(|k| {
                let undefined: Vec<String> = k
                    .scopes
                    .iter()
                    .filter(|s| !catalogue.contains(s))
                    .cloned()
                    .collect();
                (!undefined.is_empty()).then_some((k, undefined))
            })
            .collect())
    }

    /// An owner's reset: the team goes back to the deployment default. Like an upload, it
    /// names the keys holding scopes the default does not define.
    pub fn reset_policy(&self, caller: &Caller, team_id: &str) -> AppResult<Reset> {
        self.authorize(caller, team_id, Need::Owner(UPLOAD))?;
        self.store.delete_team_policy(team_id, caller.actor())?;
        self.activate(Activation::ResetTeam(team_id));
        let (policy, source) = self.policies.for_team(team_id);
        let keys_with_undefined_scopes =
            self.keys_with_undefined_scopes(team_id, ScopePolicy::scope_names(policy.as_policy()))?;
        Ok(Reset {
            policy,
            source,
            keys_with_undefined_scopes,
        })
    }

    /// The operator's new deployment default (from the configured file), validated exactly
    /// like an upload; on failure the active default stays.
    pub fn reload_default_policy(&self, bytes: &[u8]) -> AppResult<Reloaded> {
        let plugin = self
            .engine
            .load(bytes)
            .map_err(|e| AppError::InvalidPolicy(format!("{e:#}")))?;
        let previous = self.policies.default_policy().sha256_hex();
        if previous == plugin.sha256_hex() {
            return Ok(Reloaded::Unchanged(previous));
        }
        self.activate(Activation::Default(Arc::clone(&plugin)));
        Ok(Reloaded::Changed(plugin))
    }
}

impl App {
    /// With replicas on PostgreSQL: a policy uploaded or reset through another replica becomes
    /// active here too. The feed's policy changes go to a worker thread that reads the team's
    /// stored policy, compiles it off the request path (or finds it already active) and swaps
    /// it in when ready; the compiled code stays in this replica's own compile cache. Changes
    /// are handled in feed order, each reading what is stored now, so the last one wins. A
    /// store that no other process writes (sled) sends no changes, and the worker ends.
    pub fn follow_policy_changes(&self) {
        use billstack_keystore::pg::FeedChange;

        let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
        let tx = std::sync::Mutex::new(tx);
        self.store.on_change(Arc::new(move |change: &FeedChange| {
            let team = match change {
                FeedChange::Policy { team_id } => Some(team_id.clone()),
                FeedChange::Everything => None,
                _ => return,
            };
            let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(team);
        }));
        let (store, policies, engine) = (
            Arc::clone(&self.store),
            Arc::clone(&self.policies),
            Arc::clone(&self.engine),
        );
        let worker = move || {
            while let Ok(first) = rx.recv() {
                let mut teams = std::collections::BTreeSet::new();
                let mut everything = false;
                for change in std::iter::once(first).chain(rx.try_iter()) {
                    match change {
                        Some(team) => {
                            teams.insert(team);
                        }
                        None => everything = true,
                    }
                }
                if everything {
                    teams.extend(policies.team_ids());
                    match store.list_team_policies() {
                        Ok(stored) => teams.extend(stored.into_iter().map(|p| p.team_id)),
                        Err(e) => {
                            tracing::warn!(error = %e, "policies: cannot list stored team policies")
                        }
                    }
                }
                let mut changed = false;
                for team in &teams {
                    changed |= sync_team_policy(&*store, &policies, &engine, team);
                }
                if changed {
                    engine.retain_compiled_older_than(&policies.loaded_sha256s(), PRUNE_GRACE);
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("policy-follower".into())
            .spawn(worker)
        {
            tracing::error!(error = %e, "policies: cannot start the thread that follows other replicas' policy changes");
        }
    }
}

/// Compiled code younger than this is kept by the follower's pruning: an upload on this
/// replica may have compiled it and not activated it yet.
const PRUNE_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// Makes `team`'s active policy what the store holds now, retrying while the store does not
/// answer (the replica refuses requests meanwhile, once its lease runs out). Whether it
/// changed the active policy.
fn sync_team_policy(
    store: &dyn billstack_keystore::Storage,
    policies: &crate::policy::PolicySet,
    engine: &Arc<crate::policy::PolicyEngine>,
    team: &str,
) -> bool {
    let mut wait = std::time::Duration::from_millis(50);
    loop {
        match store.get_team_policy(team) {
            Ok(Some((meta, _))) => {
                let (active, source) = policies.for_team(team);
                if source == PolicySource::Team && active.sha256_hex() == meta.sha256 {
                    return false;
                }
                crate::startup::load_team_policy(engine, policies, store, &meta);
                tracing::info!(team = %team, sha256 = %meta.sha256, "policies: activated the team's policy changed through another replica");
                return true;
            }
            Ok(None) => {
                if policies.for_team(team).1 == PolicySource::Team {
                    policies.clear_team(team);
                    tracing::info!(team = %team, "policies: the team went back to the deployment default through another replica");
                    return true;
                }
                return false;
            }
            Err(e) => {
                tracing::warn!(team = %team, error = %e, "policies: cannot read the team's policy; retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use billstack_keystore::{NewUser, Role};

    use super::*;
    use crate::app::keys::KeyRequest;
    use crate::app::testing::{app, options};

    #[test]
    fn an_upload_is_validated_stored_and_activated_and_a_refusal_changes_nothing() {
        let t = app(options());
        let op = Caller::Operator;
        let (_, before) = t.app.team_policy(&op, "team_a").expect("policy");
        assert_eq!(before, PolicySource::Default);
        let refused = t.app.upload_policy(&op, "team_a", b"not a component");
        assert!(
            matches!(refused, Err(AppError::InvalidPolicy(_))),
            "{:?}",
            refused.err()
        );
        assert!(
            t.app
                .store()
                .get_team_policy("team_a")
                .expect("get")
                .is_none()
        );
        assert_eq!(
            t.app.team_policy(&op, "team_a").expect("policy").1,
            PolicySource::Default
        );

        t.app
            .create_key(
                &op,
                "team_a",
                KeyRequest {
                    name: "writer".into(),
                    scopes: vec!["customers:write".into()],
                    ..KeyRequest::default()
                },
            )
            .expect("key");
        let bytes = billstack_test_artifacts::read(billstack_test_artifacts::EXAMPLE_READ_ONLY);
        let uploaded = t.app.upload_policy(&op, "team_a", &bytes).expect("upload");
        assert_eq!(
            t.app.team_policy(&op, "team_a").expect("policy").1,
            PolicySource::Team
        );
        assert_eq!(
            uploaded.keys_with_undefined_scopes.len(),
            1,
            "the read-only policy defines no write scope"
        );
        assert_eq!(
            t.app.team_policy(&op, "team_b").expect("policy").1,
            PolicySource::Default,
            "another team is untouched"
        );
        // A key made under the read-only policy may only hold its scopes; rotating the writer
        // is refused, since its successor would hold a scope that policy does not define.
        let writer = t.app.store().list_keys("team_a").expect("keys")[0]
            .id
            .clone();
        let refused = t.app.rotate_key(&op, "team_a", &writer, Some(0));
        assert!(
            matches!(&refused, Err(AppError::Invalid { field, message })
                if *field == "scopes" && message.contains("customers:write")),
            "{:?}",
            refused.err()
        );
        let reset = t.app.reset_policy(&op, "team_a").expect("reset");
        assert_eq!(reset.source, PolicySource::Default);
        assert!(
            reset.keys_with_undefined_scopes.is_empty(),
            "the default defines customers:write"
        );
        assert!(
            t.app
                .store()
                .get_team_policy("team_a")
                .expect("get")
                .is_none()
        );
        // Under the default again, the writer rotates.
        t.app
            .rotate_key(&op, "team_a", &writer, Some(0))
            .expect("rotates");

        // A key holding a scope only the team's policy defined is named by the reset.
        let invoices = billstack_test_artifacts::read(billstack_test_artifacts::EXAMPLE_INVOICES);
        t.app
            .upload_policy(&op, "team_a", &invoices)
            .expect("upload");
        t.app
            .create_key(
                &op,
                "team_a",
                KeyRequest {
                    name: "billing".into(),
                    scopes: vec!["invoices:read".into()],
                    ..KeyRequest::default()
                },
            )
            .expect("key");
        let reset = t.app.reset_policy(&op, "team_a").expect("reset");
        let named: Vec<(String, Vec<String>)> = reset
            .keys_with_undefined_scopes
            .into_iter()
            .map(|(k, scopes)| (k.name, scopes))
            .collect();
        assert_eq!(
            named,
            [("billing".to_string(), vec!["invoices:read".to_string()])]
        );
    }

    #[test]
    fn only_owners_change_a_policy_and_the_size_cap_holds_both_ways() {
        let t = app(options());
        let member = t
            .app
            .store()
            .create_user(
                &NewUser {
                    email: "m@a.test".into(),
                    password: "member-password-1".into(),
                    team_id: "team_a".into(),
                    role: Role::Member,
                },
                "test".into(),
            )
            .expect("member");
        let member = Caller::Account {
            user_id: member.id,
            source: "192.0.2.1".into(),
        };
        let bytes = billstack_test_artifacts::read(billstack_test_artifacts::EXAMPLE_INVOICES);
        assert!(
            t.app.team_policy(&member, "team_a").is_ok(),
            "members may read it"
        );
        assert!(matches!(
            t.app.upload_policy(&member, "team_a", &bytes),
            Err(AppError::OwnersOnly(UPLOAD))
        ));
        assert!(matches!(
            t.app.reset_policy(&member, "team_a"),
            Err(AppError::OwnersOnly(UPLOAD))
        ));
        let max = t.app.engine().limits().max_plugin_bytes;
        let over = vec![0u8; max + 1];
        assert!(matches!(
            t.app.upload_policy(&Caller::Operator, "team_a", &over),
            Err(AppError::TooLarge(m)) if m == max
        ));
        let at_cap = vec![0u8; max];
        assert!(
            matches!(
                t.app.upload_policy(&Caller::Operator, "team_a", &at_cap),
                Err(AppError::InvalidPolicy(_))
            ),
            "at the cap it is read, and refused for what it is"
        );
    }
}
