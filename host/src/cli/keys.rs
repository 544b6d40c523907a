//! `key` commands: create, rotate, list, revoke, through the same services as the HTTP API
//! (in this process, or in the running server: see `operate`).

use super::*;

impl KeyCommand {
    pub(super) fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let command = match self {
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
                OperatorCommand::KeyCreate {
                    team,
                    name,
                    project,
                    scopes,
                    expires_at,
                    rate_limit,
                }
            }
            KeyCommand::Rotate {
                team,
                key_id,
                grace_period_seconds,
            } => OperatorCommand::KeyRotate {
                team,
                key_id,
                grace_period_seconds,
            },
            KeyCommand::List { team } => OperatorCommand::KeyList { team },
            KeyCommand::Revoke { team, key_id } => OperatorCommand::KeyRevoke { team, key_id },
        };
        operate(settings, command)
    }
}
