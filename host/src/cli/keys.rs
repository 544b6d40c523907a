//! `key` commands: create, rotate, list, revoke.

use super::*;

impl KeyCommand {
    pub(super) fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let store = open_store(settings, StoreUse::Existing)?;
        match self {
            KeyCommand::Create {
                team,
                name,
                project,
                scopes,
                expires_at,
                rate_limit,
            } => {
                let expires_at = expires_at
                    .map(|t| {
                        clock::parse_rfc3339(&t)
                            .with_context(|| format!("--expires-at {t:?} is not an RFC 3339 time (e.g. 2027-01-31T00:00:00Z)"))
                    })
                    .transpose()?;
                if store.get_team(&team)?.is_none() {
                    bail!("team {team} not found");
                }
                if !scopes.is_empty() {
                    let engine = startup::engine_for(settings)?;
                    let policies = startup::load_policies(&engine, settings, &store)?;
                    let (policy, _) = policies.for_team(&team);
                    if let Some(error) = policy.load_error() {
                        bail!(
                            "the team's policy does not load, so scopes cannot be checked ({error}); upload a working policy or reset the team to the default first"
                        );
                    }
                    let known = policy.as_policy().scope_names();
                    if let Some(unknown) = scopes.iter().find(|s| !known.contains(s)) {
                        bail!(
                            "scope {unknown:?} is not defined by the team's policy (known: {})",
                            known.join(", ")
                        );
                    }
                }
                let (record, raw_key) = store.create_key(&NewApiKey {
                    team_id: team,
                    project_id: project,
                    name,
                    scopes,
                    expires_at,
                    actor: CLI_ACTOR.into(),
                    source: None,
                    rate_limit,
                })?;
                print_json(&CreatedKey {
                    key: KeyView::created(&record),
                    raw_key,
                })
            }
            KeyCommand::Rotate {
                team,
                key_id,
                grace_period_seconds,
            } => {
                let rotated =
                    store.rotate_key(&team, &key_id, grace_period_seconds, CLI_ACTOR.into())?;
                print_json(&CreatedKey {
                    key: KeyView::created(&rotated.new),
                    raw_key: rotated.raw_key,
                })
            }
            KeyCommand::List { team } => {
                if store.get_team(&team)?.is_none() {
                    bail!("team {team} not found");
                }
                let keys: Vec<KeyView> = store
                    .list_keys(&team)?
                    .iter()
                    .map(KeyView::listed)
                    .collect();
                print_json(&json!({"keys": keys}))
            }
            KeyCommand::Revoke { team, key_id } => {
                let record = store.revoke_key(&team, &key_id, CLI_ACTOR.into())?;
                print_json(&json!({
                    "id": record.id,
                    "revokedAt": record.revoked_at.map(clock::format_rfc3339),
                }))
            }
        }
    }
}
