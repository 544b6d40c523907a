//! Teams, projects, users, memberships, invitations, sessions and the audit log on
//! PostgreSQL, with the sled store's validation, errors and audit events.
//!
//! Checks that need a team as a whole (its last owner, a project still in use) lock the
//! team's row (`SELECT … FOR UPDATE`) from the check to the commit, as sled's
//! team-structure lock does; creating a project-scoped key takes the same row `FOR SHARE`.

use deadpool_postgres::GenericClient;
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use tokio_postgres::Row;

use super::{Change, Event, PgStore, append_change, db_error, write_event};
use crate::audit::{ANONYMOUS, Actor, AuditPage, MAX_AUDIT_PAGE};
use crate::storage::*;
use crate::store::invitations::token_hash;
use crate::store::users::{
    dummy_password_hash, hash_password, password_matches, validate_email, validate_password,
};
use crate::store::{INVITATION_LIFETIME_MS, Invited, MAX_PASSWORD_LEN, NewUser};
use crate::{
    AuditEvent, Error, Member, Project, Result, Role, Session, Team, User, ids, invalid,
    validate_name,
};

const TEAM: &str = "SELECT id, name, created_at FROM teams";
const PROJECT: &str = "SELECT team_id, id, name, created_at FROM projects";
const USER: &str = "SELECT id, email, password_hash, created_at, admin FROM users";

fn team(row: &Row) -> Team {
    Team {
        id: row.get(0),
        name: row.get(1),
        created_at: row.get(2),
    }
}

fn project(row: &Row) -> Project {
    Project {
        team_id: row.get(0),
        id: row.get(1),
        name: row.get(2),
        created_at: row.get(3),
    }
}

fn user(row: &Row) -> User {
    User {
        id: row.get(0),
        email: row.get(1),
        password_hash: row.get(2),
        created_at: row.get(3),
        admin: row.get(4),
    }
}

fn role(text: &str) -> Result<Role> {
    text.parse()
        .map_err(|e: String| Error::Corruption { what: e })
}

fn team_not_found(id: &str) -> Error {
    Error::NotFound {
        kind: "team",
        id: id.to_owned(),
    }
}

fn last_owner(team_id: &str) -> Error {
    Error::Conflict {
        reason: "last_owner",
        message: format!("team {team_id} must keep at least one owner"),
    }
}

/// Locks the team's row for a change that needs the team as a whole; `NotFound` if none.
async fn lock_team(client: &impl GenericClient, team_id: &str) -> Result<()> {
    client
        .query_opt("SELECT 1 FROM teams WHERE id = $1 FOR UPDATE", &[&team_id])
        .await
        .map_err(db_error)?
        .map(drop)
        .ok_or_else(|| team_not_found(team_id))
}

async fn find_user(client: &impl GenericClient, id: &str) -> Result<Option<User>> {
    Ok(client
        .query_opt(&format!("{USER} WHERE id = $1"), &[&id])
        .await
        .map_err(db_error)?
        .as_ref()
        .map(user))
}

async fn find_user_by_email(client: &impl GenericClient, email: &str) -> Result<Option<User>> {
    Ok(client
        .query_opt(&format!("{USER} WHERE email = $1"), &[&email])
        .await
        .map_err(db_error)?
        .as_ref()
        .map(user))
}

async fn role_in(
    client: &impl GenericClient,
    team_id: &str,
    user_id: &str,
) -> Result<Option<Role>> {
    client
        .query_opt(
            "SELECT role FROM memberships WHERE team_id = $1 AND user_id = $2",
            &[&team_id, &user_id],
        )
        .await
        .map_err(db_error)?
        .map(|row| role(row.get(0)))
        .transpose()
}

/// Inside a change's transaction: locks the team's row and reads `user_id`'s membership there
/// (role, since when, email); `NotFound` (`member`) when the team or the membership is missing.
async fn locked_member(
    client: &impl GenericClient,
    team_id: &str,
    user_id: &str,
) -> Result<(Role, i64, String)> {
    let not_member = || Error::NotFound {
        kind: "member",
        id: user_id.to_owned(),
    };
    lock_team(client, team_id).await.map_err(|e| match e {
        Error::NotFound { .. } => not_member(),
        other => other,
    })?;
    let row = client
        .query_opt(
            "SELECT m.role, m.added_at, u.email FROM memberships m \
             JOIN users u ON u.id = m.user_id WHERE m.team_id = $1 AND m.user_id = $2",
            &[&team_id, &user_id],
        )
        .await
        .map_err(db_error)?
        .ok_or_else(not_member)?;
    Ok((role(row.get(0))?, row.get(1), row.get(2)))
}

async fn owners(client: &impl GenericClient, team_id: &str) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM memberships WHERE team_id = $1 AND role = 'owner'",
            &[&team_id],
        )
        .await
        .map_err(db_error)?
        .get(0))
}

fn random_token() -> String {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut raw)
        .expect("the OS random number generator is unavailable");
    hex::encode(raw)
}

impl TeamStore for PgStore {
    fn create_team(&self, id: Option<&str>, name: &str, actor: Actor<'_>) -> Result<Team> {
        let name = validate_name("name", name)?;
        let id = match id {
            Some(id) => {
                crate::store::check_id("team", id)?;
                id.to_owned()
            }
            None => ids::new_id("team"),
        };
        let created = Team {
            id: id.clone(),
            name,
            created_at: self.now(),
        };
        let event = Event::new(Some(&id), actor, "team.created", &id)
            .with(serde_json::json!({ "name": created.name }));
        let (at, out) = (self.now(), created.clone());
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            let inserted = tx
                .execute(
                    "INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO NOTHING",
                    &[&created.id, &created.name, &created.created_at],
                )
                .await
                .map_err(db_error)?;
            if inserted == 0 {
                return Err(Error::AlreadyExists {
                    kind: "team",
                    id: created.id,
                });
            }
            write_event(&tx, at, &event).await?;
            tx.commit().await.map_err(db_error)
        })?;
        Ok(out)
    }

    fn get_team(&self, id: &str) -> Result<Option<Team>> {
        let id = id.to_owned();
        self.with_client(move |client| async move {
            Ok(client
                .query_opt(&format!("{TEAM} WHERE id = $1"), &[&id])
                .await
                .map_err(db_error)?
                .as_ref()
                .map(team))
        })
    }

    fn list_teams(&self) -> Result<Vec<Team>> {
        self.with_client(move |client| async move {
            Ok(client
                .query(&format!("{TEAM} ORDER BY id"), &[])
                .await
                .map_err(db_error)?
                .iter()
                .map(team)
                .collect())
        })
    }

    fn create_project(
        &self,
        team_id: &str,
        id: Option<&str>,
        name: &str,
        actor: Actor<'_>,
    ) -> Result<Project> {
        let name = validate_name("name", name)?;
        let id = match id {
            Some(id) => {
                crate::store::check_id("project", id)?;
                id.to_owned()
            }
            None => ids::new_id("proj"),
        };
        let created = Project {
            id: id.clone(),
            team_id: team_id.to_owned(),
            name,
            created_at: self.now(),
        };
        let event = Event::new(Some(team_id), actor, "project.created", &id)
            .with(serde_json::json!({ "name": created.name }));
        let (at, out) = (self.now(), created.clone());
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            tx.query_opt(
                "SELECT 1 FROM teams WHERE id = $1 FOR SHARE",
                &[&created.team_id],
            )
            .await
            .map_err(db_error)?
            .ok_or_else(|| team_not_found(&created.team_id))?;
            let inserted = tx
                .execute(
                    "INSERT INTO projects (team_id, id, name, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (team_id, id) DO NOTHING",
                    &[
                        &created.team_id,
                        &created.id,
                        &created.name,
                        &created.created_at,
                    ],
                )
                .await
                .map_err(db_error)?;
            if inserted == 0 {
                return Err(Error::AlreadyExists {
                    kind: "project",
                    id: created.id,
                });
            }
            write_event(&tx, at, &event).await?;
            tx.commit().await.map_err(db_error)
        })?;
        Ok(out)
    }

    fn get_project(&self, team_id: &str, project_id: &str) -> Result<Option<Project>> {
        let (team_id, project_id) = (team_id.to_owned(), project_id.to_owned());
        self.with_client(move |client| async move {
            Ok(client
                .query_opt(
                    &format!("{PROJECT} WHERE team_id = $1 AND id = $2"),
                    &[&team_id, &project_id],
                )
                .await
                .map_err(db_error)?
                .as_ref()
                .map(project))
        })
    }

    fn list_projects(&self, team_id: &str) -> Result<Vec<Project>> {
        let team_id = team_id.to_owned();
        self.with_client(move |client| async move {
            Ok(client
                .query(
                    &format!("{PROJECT} WHERE team_id = $1 ORDER BY id"),
                    &[&team_id],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(project)
                .collect())
        })
    }

    fn rename_project(
        &self,
        team_id: &str,
        project_id: &str,
        name: &str,
        actor: Actor<'_>,
    ) -> Result<Project> {
        let name = validate_name("name", name)?;
        let (team_id, project_id) = (team_id.to_owned(), project_id.to_owned());
        let actor = Event::new(Some(&team_id), actor, "project.renamed", &project_id);
        let at = self.now();
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            let row = tx
                .query_opt(
                    &format!("{PROJECT} WHERE team_id = $1 AND id = $2 FOR UPDATE"),
                    &[&team_id, &project_id],
                )
                .await
                .map_err(db_error)?
                .ok_or_else(|| Error::NotFound {
                    kind: "project",
                    id: project_id.clone(),
                })?;
            let mut renamed = project(&row);
            let event = actor.with(serde_json::json!({ "from": renamed.name, "name": name }));
            tx.execute(
                "UPDATE projects SET name = $3 WHERE team_id = $1 AND id = $2",
                &[&team_id, &project_id, &name],
            )
            .await
            .map_err(db_error)?;
            write_event(&tx, at, &event).await?;
            tx.commit().await.map_err(db_error)?;
            renamed.name = name;
            Ok(renamed)
        })
    }

    fn delete_project(&self, team_id: &str, project_id: &str, actor: Actor<'_>) -> Result<()> {
        let (team_id, project_id) = (team_id.to_owned(), project_id.to_owned());
        let event = Event::new(Some(&team_id), actor, "project.deleted", &project_id);
        let at = self.now();
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            // The team's row, so that no key scoped to the project is created meanwhile.
            lock_team(&tx, &team_id).await?;
            let row = tx
                .query_opt(
                    "SELECT name FROM projects WHERE team_id = $1 AND id = $2",
                    &[&team_id, &project_id],
                )
                .await
                .map_err(db_error)?
                .ok_or_else(|| Error::NotFound {
                    kind: "project",
                    id: project_id.clone(),
                })?;
            let name: String = row.get(0);
            let in_use: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM api_keys WHERE team_id = $1 \
                     AND project_id = $2 AND revoked_at IS NULL)",
                    &[&team_id, &project_id],
                )
                .await
                .map_err(db_error)?
                .get(0);
            if in_use {
                return Err(Error::Conflict {
                    reason: "project_in_use",
                    message: format!(
                        "project {project_id} still has keys scoped to it; revoke them first"
                    ),
                });
            }
            tx.execute(
                "DELETE FROM projects WHERE team_id = $1 AND id = $2",
                &[&team_id, &project_id],
            )
            .await
            .map_err(db_error)?;
            write_event(&tx, at, &event.with(serde_json::json!({ "name": name }))).await?;
            tx.commit().await.map_err(db_error)
        })
    }
}

impl UserStore for PgStore {
    fn create_user(&self, new: &NewUser, actor: Actor<'_>) -> Result<User> {
        let email = validate_email(&new.email)?;
        validate_password("password", &new.password)?;
        let created = User {
            id: ids::new_id("user"),
            email,
            password_hash: hash_password(&new.password)?,
            created_at: self.now(),
            admin: false,
        };
        let team_id = new.team_id.clone();
        let role = new.role;
        let event = Event::new(Some(&team_id), actor, "user.created", &created.id);
        let (at, out) = (self.now(), created.clone());
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            tx.query_opt("SELECT 1 FROM teams WHERE id = $1 FOR SHARE", &[&team_id])
                .await
                .map_err(db_error)?
                .ok_or_else(|| team_not_found(&team_id))?;
            let inserted = tx
                .execute(
                    "INSERT INTO users (id, email, password_hash, created_at, admin) \
                     VALUES ($1, $2, $3, $4, false) ON CONFLICT (email) DO NOTHING",
                    &[
                        &created.id,
                        &created.email,
                        &created.password_hash,
                        &created.created_at,
                    ],
                )
                .await
                .map_err(db_error)?;
            if inserted == 0 {
                return Err(Error::AlreadyExists {
                    kind: "user",
                    id: created.email,
                });
            }
            tx.execute(
                "INSERT INTO memberships (team_id, user_id, role, added_at) VALUES ($1, $2, $3, $4)",
                &[&team_id, &created.id, &role.as_str(), &at],
            )
            .await
            .map_err(db_error)?;
            write_event(&tx, at, &event).await?;
            append_change(&tx, at, Change::Membership, &team_id, &created.id).await?;
            tx.commit().await.map_err(db_error)
        })?;
        Ok(out)
    }

    fn set_membership(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        actor: Actor<'_>,
    ) -> Result<()> {
        let (team_id, user_id) = (team_id.to_owned(), user_id.to_owned());
        let event = Event::new(Some(&team_id), actor, "member.set", &user_id);
        let at = self.now();
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            lock_team(&tx, &team_id).await?;
            if find_user(&tx, &user_id).await?.is_none() {
                return Err(Error::NotFound {
                    kind: "user",
                    id: user_id,
                });
            }
            tx.execute(
                "INSERT INTO memberships (team_id, user_id, role, added_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (team_id, user_id) DO UPDATE SET role = EXCLUDED.role, \
                 added_at = EXCLUDED.added_at",
                &[&team_id, &user_id, &role.as_str(), &at],
            )
            .await
            .map_err(db_error)?;
            write_event(&tx, at, &event).await?;
            append_change(&tx, at, Change::Membership, &team_id, &user_id).await?;
            tx.commit().await.map_err(db_error)
        })
    }

    fn get_user(&self, id: &str) -> Result<Option<User>> {
        let id = id.to_owned();
        self.with_client(move |client| async move { find_user(&client, &id).await })
    }

    fn find_user_by_email(&self, email: &str) -> Result<Option<User>> {
        let email = email.trim().to_lowercase();
        self.with_client(move |client| async move { find_user_by_email(&client, &email).await })
    }

    fn verify_password(&self, email: &str, password: &str) -> Result<Option<User>> {
        if password.len() > MAX_PASSWORD_LEN {
            return Ok(None);
        }
        match UserStore::find_user_by_email(self, email)? {
            Some(user) => {
                // An invited user with no password yet costs the same hashing as anyone.
                let has_password = !user.password_hash.is_empty();
                let phc = if has_password {
                    user.password_hash.as_str()
                } else {
                    dummy_password_hash()
                };
                Ok((password_matches(password, phc) && has_password).then_some(user))
            }
            None => {
                let _ = password_matches(password, dummy_password_hash());
                Ok(None)
            }
        }
    }

    fn set_password(&self, user_id: &str, password: &str, actor: Actor<'_>) -> Result<usize> {
        validate_password("new_password", password)?;
        let hash = hash_password(password)?;
        let user_id = user_id.to_owned();
        let event = Event::new(None, actor, "user.password_changed", &user_id);
        let at = self.now();
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            let updated = tx
                .execute(
                    "UPDATE users SET password_hash = $2 WHERE id = $1",
                    &[&user_id, &hash],
                )
                .await
                .map_err(db_error)?;
            if updated == 0 {
                return Err(Error::NotFound {
                    kind: "user",
                    id: user_id,
                });
            }
            write_event(&tx, at, &event).await?;
            // Every session of theirs ends with the same commit.
            let ended = tx
                .execute("DELETE FROM sessions WHERE user_id = $1", &[&user_id])
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(usize::try_from(ended).unwrap_or(usize::MAX))
        })
    }

    fn set_admin(&self, user_id: &str, admin: bool, actor: Actor<'_>) -> Result<User> {
        let user_id = user_id.to_owned();
        let action = if admin {
            "user.admin_granted"
        } else {
            "user.admin_revoked"
        };
        let event = Event::new(None, actor, action, &user_id);
        let at = self.now();
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            let row = tx
                .query_opt(
                    "UPDATE users SET admin = $2 WHERE id = $1 \
                     RETURNING id, email, password_hash, created_at, admin",
                    &[&user_id, &admin],
                )
                .await
                .map_err(db_error)?
                .ok_or_else(|| Error::NotFound {
                    kind: "user",
                    id: user_id.clone(),
                })?;
            write_event(&tx, at, &event).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(user(&row))
        })
    }

    fn invite(&self, team_id: &str, email: &str, role: Role, actor: Actor<'_>) -> Result<Invited> {
        let email = validate_email(email)?;
        let team_id = team_id.to_owned();
        let actor = (actor.id.to_owned(), actor.source.map(str::to_owned));
        let now = self.now();
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            lock_team(&tx, &team_id).await?;
            let existing = find_user_by_email(&tx, &email).await?;
            if let Some(user) = &existing
                && role_in(&tx, &team_id, &user.id).await?.is_some()
            {
                return Err(Error::AlreadyExists {
                    kind: "member",
                    id: email,
                });
            }
            let user = match existing {
                Some(user) => user,
                None => {
                    let user = User {
                        id: ids::new_id("user"),
                        email: email.clone(),
                        password_hash: String::new(),
                        created_at: now,
                        admin: false,
                    };
                    let inserted = tx
                        .execute(
                            "INSERT INTO users (id, email, password_hash, created_at, admin) \
                             VALUES ($1, $2, '', $3, false) ON CONFLICT (email) DO NOTHING",
                            &[&user.id, &user.email, &now],
                        )
                        .await
                        .map_err(db_error)?;
                    if inserted == 0 {
                        return Err(Error::AlreadyExists {
                            kind: "user",
                            id: email,
                        });
                    }
                    user
                }
            };
            // One live invitation per user: a fresh token replaces any earlier one.
            let token = if user.password_hash.is_empty() {
                let token = random_token();
                tx.execute("DELETE FROM invitations WHERE user_id = $1", &[&user.id])
                    .await
                    .map_err(db_error)?;
                tx.execute(
                    "INSERT INTO invitations (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
                    &[
                        &&token_hash(&token)[..],
                        &user.id,
                        &(now + INVITATION_LIFETIME_MS),
                    ],
                )
                .await
                .map_err(db_error)?;
                Some(token)
            } else {
                None
            };
            tx.execute(
                "INSERT INTO memberships (team_id, user_id, role, added_at) VALUES ($1, $2, $3, $4)",
                &[&team_id, &user.id, &role.as_str(), &now],
            )
            .await
            .map_err(db_error)?;
            let actor = Actor {
                id: &actor.0,
                source: actor.1.as_deref(),
            };
            write_event(
                &tx,
                now,
                &Event::new(Some(&team_id), actor, "member.invited", &user.id),
            )
            .await?;
            append_change(&tx, now, Change::Membership, &team_id, &user.id).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(Invited {
                member: Member {
                    user_id: user.id,
                    email: user.email,
                    role,
                    added_at: now,
                },
                token,
            })
        })
    }

    fn accept_invitation(&self, token: &str, password: &str) -> Result<User> {
        let bad = || invalid("token", "the invitation is unknown, used or expired");
        validate_password("password", password)?;
        let hash = hash_password(password)?;
        let key = token_hash(token).to_vec();
        let now = self.now();
        let accepted = self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            // Used once: a second acceptance racing this one finds it gone.
            let Some(row) = tx
                .query_opt(
                    "DELETE FROM invitations WHERE token_hash = $1 RETURNING user_id, expires_at",
                    &[&key],
                )
                .await
                .map_err(db_error)?
            else {
                return Ok(None);
            };
            let (user_id, expires_at): (String, i64) = (row.get(0), row.get(1));
            if expires_at <= now {
                // Expired: it is gone, and nothing else changes.
                tx.commit().await.map_err(db_error)?;
                return Ok(None);
            }
            let Some(row) = tx
                .query_opt(
                    "UPDATE users SET password_hash = $2 WHERE id = $1 \
                     RETURNING id, email, password_hash, created_at, admin",
                    &[&user_id, &hash],
                )
                .await
                .map_err(db_error)?
            else {
                return Ok(None);
            };
            let accepted = user(&row);
            write_event(
                &tx,
                now,
                &Event::new(
                    None,
                    Actor::from(accepted.id.as_str()),
                    "invitation.accepted",
                    &accepted.id,
                ),
            )
            .await?;
            tx.commit().await.map_err(db_error)?;
            Ok(Some(accepted))
        })?;
        accepted.ok_or_else(bad)
    }

    fn membership(&self, team_id: &str, user_id: &str) -> Result<Option<Role>> {
        let (team_id, user_id) = (team_id.to_owned(), user_id.to_owned());
        self.with_client(move |client| async move { role_in(&client, &team_id, &user_id).await })
    }

    fn user_teams(&self, user_id: &str) -> Result<Vec<(Team, Role)>> {
        let user_id = user_id.to_owned();
        self.with_client(move |client| async move {
            client
                .query(
                    "SELECT t.id, t.name, t.created_at, m.role FROM memberships m \
                     JOIN teams t ON t.id = m.team_id WHERE m.user_id = $1 ORDER BY t.id",
                    &[&user_id],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(|row| Ok((team(row), role(row.get(3))?)))
                .collect()
        })
    }
}

impl MemberStore for PgStore {
    fn list_members(&self, team_id: &str) -> Result<Vec<Member>> {
        let team_id = team_id.to_owned();
        self.with_client(move |client| async move {
            client
                .query_opt("SELECT 1 FROM teams WHERE id = $1", &[&team_id])
                .await
                .map_err(db_error)?
                .ok_or_else(|| team_not_found(&team_id))?;
            client
                .query(
                    "SELECT m.user_id, u.email, m.role, m.added_at FROM memberships m \
                     JOIN users u ON u.id = m.user_id WHERE m.team_id = $1 \
                     ORDER BY m.added_at, u.email",
                    &[&team_id],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(|row| {
                    Ok(Member {
                        user_id: row.get(0),
                        email: row.get(1),
                        role: role(row.get(2))?,
                        added_at: row.get(3),
                    })
                })
                .collect()
        })
    }

    fn add_member(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        actor: Actor<'_>,
    ) -> Result<Member> {
        let (team_id, user_id) = (team_id.to_owned(), user_id.to_owned());
        let actor = Event::new(Some(&team_id), actor, "member.added", &user_id);
        let at = self.now();
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            lock_team(&tx, &team_id).await?;
            let Some(added) = find_user(&tx, &user_id).await? else {
                return Err(Error::NotFound {
                    kind: "user",
                    id: user_id,
                });
            };
            if role_in(&tx, &team_id, &user_id).await?.is_some() {
                return Err(Error::AlreadyExists {
                    kind: "member",
                    id: added.email,
                });
            }
            tx.execute(
                "INSERT INTO memberships (team_id, user_id, role, added_at) VALUES ($1, $2, $3, $4)",
                &[&team_id, &user_id, &role.as_str(), &at],
            )
            .await
            .map_err(db_error)?;
            let event =
                actor.with(serde_json::json!({ "email": added.email, "role": role.as_str() }));
            write_event(&tx, at, &event).await?;
            append_change(&tx, at, Change::Membership, &team_id, &user_id).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(Member {
                user_id: added.id,
                email: added.email,
                role,
                added_at: at,
            })
        })
    }

    fn change_role(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        actor: Actor<'_>,
    ) -> Result<Member> {
        let (team_id, user_id) = (team_id.to_owned(), user_id.to_owned());
        let actor = Event::new(Some(&team_id), actor, "member.role_changed", &user_id);
        let at = self.now();
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            let (current, added_at, email) = locked_member(&tx, &team_id, &user_id).await?;
            if current == Role::Owner && role != Role::Owner && owners(&tx, &team_id).await? <= 1 {
                return Err(last_owner(&team_id));
            }
            tx.execute(
                "UPDATE memberships SET role = $3 WHERE team_id = $1 AND user_id = $2",
                &[&team_id, &user_id, &role.as_str()],
            )
            .await
            .map_err(db_error)?;
            let event = actor.with(serde_json::json!({
                "email": email,
                "from": current.as_str(),
                "role": role.as_str(),
            }));
            write_event(&tx, at, &event).await?;
            append_change(&tx, at, Change::Membership, &team_id, &user_id).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(Member {
                user_id,
                email,
                role,
                added_at,
            })
        })
    }

    fn remove_member(&self, team_id: &str, user_id: &str, actor: Actor<'_>) -> Result<()> {
        let (team_id, user_id) = (team_id.to_owned(), user_id.to_owned());
        let actor = Event::new(Some(&team_id), actor, "member.removed", &user_id);
        let at = self.now();
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            let (current, _, email) = locked_member(&tx, &team_id, &user_id).await?;
            if current == Role::Owner && owners(&tx, &team_id).await? <= 1 {
                return Err(last_owner(&team_id));
            }
            tx.execute(
                "DELETE FROM memberships WHERE team_id = $1 AND user_id = $2",
                &[&team_id, &user_id],
            )
            .await
            .map_err(db_error)?;
            write_event(&tx, at, &actor.with(serde_json::json!({ "email": email }))).await?;
            append_change(&tx, at, Change::Membership, &team_id, &user_id).await?;
            tx.commit().await.map_err(db_error)
        })
    }
}

fn session_key(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl SessionStore for PgStore {
    fn create_session(&self, user_id: &str) -> Result<(String, Session)> {
        let token = random_token();
        let now = self.now();
        let session = Session {
            user_id: user_id.to_owned(),
            created_at: now,
            last_seen_at: now,
        };
        let (key, stored) = (session_key(&token), session.clone());
        self.with_client(move |client| async move {
            client
                .execute(
                    "INSERT INTO sessions (token_hash, user_id, created_at, last_seen_at) \
                     VALUES ($1, $2, $3, $3)",
                    &[&key, &stored.user_id, &stored.created_at],
                )
                .await
                .map_err(|e| {
                    if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
                        Error::NotFound {
                            kind: "user",
                            id: stored.user_id.clone(),
                        }
                    } else {
                        db_error(e)
                    }
                })?;
            Ok(())
        })?;
        Ok((token, session))
    }

    fn get_session(&self, token: &str) -> Result<Option<Session>> {
        let key = session_key(token);
        self.with_client(move |client| async move {
            Ok(client
                .query_opt(
                    "SELECT user_id, created_at, last_seen_at FROM sessions WHERE token_hash = $1",
                    &[&key],
                )
                .await
                .map_err(db_error)?
                .map(|row| Session {
                    user_id: row.get(0),
                    created_at: row.get(1),
                    last_seen_at: row.get(2),
                }))
        })
    }

    fn touch_session(&self, token: &str, now_ms: i64) -> Result<()> {
        let key = session_key(token);
        // A concurrent logout wins: an update of a deleted row changes nothing.
        self.with_client(move |client| async move {
            client
                .execute(
                    "UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1",
                    &[&key, &now_ms],
                )
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn delete_session(&self, token: &str) -> Result<()> {
        let key = session_key(token);
        self.with_client(move |client| async move {
            client
                .execute("DELETE FROM sessions WHERE token_hash = $1", &[&key])
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn purge_sessions(&self, expired: &dyn Fn(&Session) -> bool) -> Result<usize> {
        let all: Vec<(Vec<u8>, Session)> = self.with_client(move |client| async move {
            Ok(client
                .query(
                    "SELECT token_hash, user_id, created_at, last_seen_at FROM sessions",
                    &[],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(|row| {
                    (
                        row.get(0),
                        Session {
                            user_id: row.get(1),
                            created_at: row.get(2),
                            last_seen_at: row.get(3),
                        },
                    )
                })
                .collect())
        })?;
        let gone: Vec<Vec<u8>> = all
            .into_iter()
            .filter(|(_, s)| expired(s))
            .map(|(k, _)| k)
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        self.with_client(move |client| async move {
            let n = client
                .execute("DELETE FROM sessions WHERE token_hash = ANY($1)", &[&gone])
                .await
                .map_err(db_error)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}

fn audit_event(row: &Row) -> AuditEvent {
    AuditEvent {
        seq: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        at: row.get(1),
        team_id: row.get(2),
        actor: row.get(3),
        action: row.get(4),
        target: row.get(5),
        source: row.get(6),
        details: row.get(7),
    }
}

impl AuditStore for PgStore {
    fn list_audit(&self, team_id: &str, before: Option<u64>, limit: usize) -> Result<AuditPage> {
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let team_id = team_id.to_owned();
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let mut events: Vec<AuditEvent> = self.with_client(move |client| async move {
            Ok(client
                .query(
                    "SELECT seq, at, team_id, actor, action, target, source, details \
                     FROM audit_log WHERE team_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
                    &[&team_id, &before, &fetch],
                )
                .await
                .map_err(db_error)?
                .iter()
                .map(audit_event)
                .collect())
        })?;
        let next_before = if events.len() > limit {
            events.truncate(limit);
            events.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(AuditPage {
            events,
            next_before,
        })
    }

    fn record_sign_in(&self, email: &str, succeeded: bool, source: &str) -> Result<()> {
        let found = match validate_email(email) {
            Ok(email) => UserStore::find_user_by_email(self, &email)?,
            Err(_) => None,
        };
        let (action, actor_id) = match (&found, succeeded) {
            (Some(user), true) => ("auth.signed_in", user.id.clone()),
            _ => ("auth.sign_in_failed", ANONYMOUS.to_owned()),
        };
        let events: Vec<Event> = match &found {
            Some(user) => self
                .user_teams(&user.id)?
                .iter()
                .map(|(team, _)| {
                    Event::new(
                        Some(&team.id),
                        Actor::from_address(&actor_id, source),
                        action,
                        &user.id,
                    )
                })
                .collect(),
            None => vec![Event::new(
                None,
                Actor::from_address(&actor_id, source),
                action,
                "unknown-account",
            )],
        };
        let at = self.now();
        self.with_client(move |mut client| async move {
            let tx = client.transaction().await.map_err(db_error)?;
            for event in &events {
                write_event(&tx, at, event).await?;
            }
            tx.commit().await.map_err(db_error)
        })
    }
}
