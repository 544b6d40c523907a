//! The operator's commands (`billstack team|project|user|key …`) as data, so that one code
//! path runs them: in the CLI's own process when no server holds the data directory, or in
//! the server, sent over the control socket, when one does — so no change needs downtime.
//! Each answers the JSON the command prints.

use billstack_keystore::{NewUser, RateLimit, Role, clock};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::keys::KeyRequest;
use super::{App, AppResult, Caller};
use crate::views::{CreatedKey, KeyView};

/// One command of the operator (who can read the data directory, and so may act in any team).
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OperatorCommand {
    /// `team create`.
    TeamCreate {
        /// Display name.
        name: String,
        /// A chosen id.
        id: Option<String>,
    },
    /// `project create`.
    ProjectCreate {
        /// The team.
        team: String,
        /// Display name.
        name: String,
        /// A chosen id.
        id: Option<String>,
    },
    /// `user create`.
    UserCreate {
        /// Email address.
        email: String,
        /// The team they join.
        team: String,
        /// Their role there.
        role: Role,
        /// The password (travels only over the 0600 control socket; never logged).
        password: String,
        /// A deployment administrator.
        admin: bool,
    },
    /// `key create`.
    KeyCreate {
        /// The team.
        team: String,
        /// Label.
        name: String,
        /// One project, or all.
        project: Option<String>,
        /// Scopes.
        scopes: Vec<String>,
        /// Expiry (Unix ms).
        expires_at: Option<i64>,
        /// Budget.
        rate_limit: Option<RateLimit>,
    },
    /// `key rotate`.
    KeyRotate {
        /// The team.
        team: String,
        /// The key.
        key_id: String,
        /// Grace period in seconds.
        grace_period_seconds: u64,
    },
    /// `key list`.
    KeyList {
        /// The team.
        team: String,
    },
    /// `key revoke`.
    KeyRevoke {
        /// The team.
        team: String,
        /// The key.
        key_id: String,
    },
}

impl std::fmt::Debug for OperatorCommand {
    /// The command's name only: a `user create` carries a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl OperatorCommand {
    /// The command as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            OperatorCommand::TeamCreate { .. } => "team create",
            OperatorCommand::ProjectCreate { .. } => "project create",
            OperatorCommand::UserCreate { .. } => "user create",
            OperatorCommand::KeyCreate { .. } => "key create",
            OperatorCommand::KeyRotate { .. } => "key rotate",
            OperatorCommand::KeyList { .. } => "key list",
            OperatorCommand::KeyRevoke { .. } => "key revoke",
        }
    }

    /// The team whose policy the command needs loaded (a key with scopes is checked against
    /// it), if any.
    pub fn policy_team(&self) -> Option<&str> {
        match self {
            OperatorCommand::KeyCreate { team, scopes, .. } if !scopes.is_empty() => Some(team),
            _ => None,
        }
    }

    /// Whether the command may start a store in an empty data directory (only `team create`
    /// may: a team is where everything else begins).
    pub fn may_start_a_store(&self) -> bool {
        matches!(self, OperatorCommand::TeamCreate { .. })
    }

    /// Runs the command as the operator; answers what the CLI prints.
    pub fn execute(self, app: &App) -> AppResult<Value> {
        let op = Caller::Operator;
        Ok(match self {
            OperatorCommand::TeamCreate { name, id } => {
                let team = app.create_team(&op, id.as_deref(), &name)?;
                json!({"id": team.id, "name": team.name})
            }
            OperatorCommand::ProjectCreate { team, name, id } => {
                let p = app.create_project(&op, &team, id.as_deref(), &name)?;
                json!({"id": p.id, "name": p.name, "teamId": p.team_id})
            }
            OperatorCommand::UserCreate {
                email,
                team,
                role,
                password,
                admin,
            } => {
                let user = app.create_user(
                    &op,
                    &NewUser {
                        email,
                        password,
                        team_id: team,
                        role,
                    },
                    admin,
                )?;
                json!({"id": user.id, "email": user.email, "admin": user.admin})
            }
            OperatorCommand::KeyCreate {
                team,
                name,
                project,
                scopes,
                expires_at,
                rate_limit,
            } => {
                let (record, raw_key) = app.create_key(
                    &op,
                    &team,
                    KeyRequest {
                        name,
                        project_id: project,
                        scopes,
                        expires_at,
                        rate_limit,
                    },
                )?;
                serde_json::to_value(CreatedKey {
                    key: app.new_key_view(&record)?,
                    raw_key,
                })
                .map_err(|e| super::AppError::Internal(e.to_string()))?
            }
            OperatorCommand::KeyRotate {
                team,
                key_id,
                grace_period_seconds,
            } => {
                let grace = i64::try_from(grace_period_seconds).unwrap_or(i64::MAX);
                let rotated = app.rotate_key(&op, &team, &key_id, Some(grace))?;
                serde_json::to_value(CreatedKey {
                    key: app.new_key_view(&rotated.new)?,
                    raw_key: rotated.raw_key,
                })
                .map_err(|e| super::AppError::Internal(e.to_string()))?
            }
            OperatorCommand::KeyList { team } => {
                let keys: Vec<KeyView> = app.key_views(&app.list_keys(&op, &team)?)?;
                json!({"keys": keys})
            }
            OperatorCommand::KeyRevoke { team, key_id } => {
                let record = app.revoke_key(&op, &team, &key_id)?;
                json!({
                    "id": record.id,
                    "revokedAt": record.revoked_at.map(clock::format_rfc3339),
                })
            }
        })
    }
}
