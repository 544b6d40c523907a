//! `key` commands: create, rotate, list, revoke, through the same services as the HTTP API.

use super::*;

impl KeyCommand {
    pub(super) fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let operator = Caller::Operator;
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
                let app = open_app(settings, StoreUse::Existing, Some(&team))?;
                let (record, raw_key) = app.create_key(
                    &operator,
                    &team,
                    KeyRequest {
                        name,
                        project_id: project,
                        scopes,
                        expires_at,
                        rate_limit,
                    },
                )?;
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
                let app = open_app(settings, StoreUse::Existing, None)?;
                let grace = i64::try_from(grace_period_seconds).unwrap_or(i64::MAX);
                let rotated = app.rotate_key(&operator, &team, &key_id, Some(grace))?;
                print_json(&CreatedKey {
                    key: KeyView::created(&rotated.new),
                    raw_key: rotated.raw_key,
                })
            }
            KeyCommand::List { team } => {
                let app = open_app(settings, StoreUse::Existing, None)?;
                let keys: Vec<KeyView> = app
                    .list_keys(&operator, &team)?
                    .iter()
                    .map(KeyView::listed)
                    .collect();
                print_json(&json!({"keys": keys}))
            }
            KeyCommand::Revoke { team, key_id } => {
                let app = open_app(settings, StoreUse::Existing, None)?;
                let record = app.revoke_key(&operator, &team, &key_id)?;
                print_json(&json!({
                    "id": record.id,
                    "revokedAt": record.revoked_at.map(clock::format_rfc3339),
                }))
            }
        }
    }
}
