//! Dashboard users, their passwords (Argon2id) and their team memberships.

use super::invitations::Invited;
use super::*;
use crate::records::StoredMembership;

/// What [`Store::create_user`] needs.
#[derive(Clone)]
pub struct NewUser {
    /// Email address (case-insensitive, unique).
    pub email: String,
    /// The password, hashed with Argon2id before it is stored.
    pub password: String,
    /// The team the user joins.
    pub team_id: String,
    /// Their role in it.
    pub role: Role,
}

/// Shortest accepted dashboard password.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest accepted dashboard password (bytes); bounds the hashing cost.
pub const MAX_PASSWORD_LEN: usize = 1024;

pub(crate) fn dummy_password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::generate(&mut PhOsRng);
        Argon2::default()
            .hash_password(b"not a real password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Hashes a password with Argon2id (the crate's defaults: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut PhOsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::PasswordHash(e.to_string()))
}

pub(crate) fn password_matches(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Checks a new password's length: [`MIN_PASSWORD_LEN`] characters to [`MAX_PASSWORD_LEN`]
/// bytes.
pub(crate) fn validate_password(field: &'static str, password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(invalid(
            field,
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(invalid(
            field,
            format!("must be at most {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    Ok(())
}

pub(crate) fn validate_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if valid {
        Ok(email)
    } else {
        Err(invalid(
            "email",
            format!("{email:?} is not an email address"),
        ))
    }
}

impl UserStore for Store {
    fn create_user(&self, new: &NewUser, actor: Actor<'_>) -> Result<User> {
        let _writing = self.writing();
        let email = validate_email(&new.email)?;
        validate_password("password", &new.password)?;
        self.require_team(&new.team_id)?;
        let user = User {
            id: ids::new_id("user"),
            email: email.clone(),
            password_hash: hash_password(&new.password)?,
            created_at: self.clock.now_ms(),
            admin: false,
        };
        let role = self.membership_value(new.role);
        let (ak, av) = self.audit_event(Some(&new.team_id), actor, "user.created", &user.id)?;
        let team_id = new.team_id.as_str();
        (
            &self.users,
            &self.user_email,
            &self.members,
            &self.user_teams,
            &self.teams,
            &self.audit,
        )
            .transaction(|(users, user_email, members, user_teams, teams, audit)| {
                if teams.get(team_id.as_bytes())?.is_none() {
                    return abort(Error::NotFound {
                        kind: "team",
                        id: team_id.to_owned(),
                    });
                }
                if user_email.get(email.as_bytes())?.is_some() {
                    return abort(Error::AlreadyExists {
                        kind: "user",
                        id: email.clone(),
                    });
                }
                users.insert(user.id.as_bytes(), encode(&user))?;
                user_email.insert(email.as_bytes(), user.id.as_bytes())?;
                members.insert(join(team_id, &user.id), role.as_slice())?;
                user_teams.insert(join(&user.id, team_id), role.as_slice())?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.durable(user)
    }

    fn set_membership(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        actor: Actor<'_>,
    ) -> Result<()> {
        let _writing = self.writing();
        self.require_team(team_id)?;
        if self.get_user(user_id)?.is_none() {
            return Err(Error::NotFound {
                kind: "user",
                id: user_id.to_owned(),
            });
        }
        let role = self.membership_value(role);
        let (ak, av) = self.audit_event(Some(team_id), actor, "member.set", user_id)?;
        (&self.members, &self.user_teams, &self.audit)
            .transaction(|(members, user_teams, audit)| {
                members.insert(join(team_id, user_id), role.as_slice())?;
                user_teams.insert(join(user_id, team_id), role.as_slice())?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.durable(())
    }

    fn get_user(&self, id: &str) -> Result<Option<User>> {
        self.users
            .get(id.as_bytes())?
            .map(|v| decode("user", &v))
            .transpose()
    }

    fn find_user_by_email(&self, email: &str) -> Result<Option<User>> {
        let email = email.trim().to_lowercase();
        match self.user_email.get(email.as_bytes())? {
            Some(id) => self.get_user(&decode_str("user email index", &id)?),
            None => Ok(None),
        }
    }

    fn verify_password(&self, email: &str, password: &str) -> Result<Option<User>> {
        if password.len() > MAX_PASSWORD_LEN {
            return Ok(None);
        }
        match self.find_user_by_email(email)? {
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
        let _writing = self.writing();
        let mut user = self.get_user(user_id)?.ok_or_else(|| Error::NotFound {
            kind: "user",
            id: user_id.to_owned(),
        })?;
        user.password_hash = hash_password(password)?;
        let (ak, av) = self.audit_event(None, actor, "user.password_changed", user_id)?;
        (&self.users, &self.audit)
            .transaction(|(users, audit)| {
                users.insert(user.id.as_bytes(), encode(&user))?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        drop(_writing);
        let ended = self.purge_sessions(&|s| s.user_id == user_id)?;
        self.durable(ended)
    }

    fn set_admin(&self, user_id: &str, admin: bool, actor: Actor<'_>) -> Result<User> {
        let _writing = self.writing();
        let mut user = self.get_user(user_id)?.ok_or_else(|| Error::NotFound {
            kind: "user",
            id: user_id.to_owned(),
        })?;
        user.admin = admin;
        let action = if admin {
            "user.admin_granted"
        } else {
            "user.admin_revoked"
        };
        let (ak, av) = self.audit_event(None, actor, action, user_id)?;
        (&self.users, &self.audit)
            .transaction(|(users, audit)| {
                users.insert(user.id.as_bytes(), encode(&user))?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.durable(user)
    }

    fn invite(&self, team_id: &str, email: &str, role: Role, actor: Actor<'_>) -> Result<Invited> {
        self.invite_user(team_id, email, role, actor)
    }

    fn accept_invitation(&self, token: &str, password: &str) -> Result<User> {
        self.accept(token, password)
    }

    fn membership(&self, team_id: &str, user_id: &str) -> Result<Option<Role>> {
        Ok(self
            .members
            .get(join(team_id, user_id))?
            .map(|v| decode::<StoredMembership>("membership", &v))
            .transpose()?
            .map(StoredMembership::role))
    }

    fn user_teams(&self, user_id: &str) -> Result<Vec<(Team, Role)>> {
        let mut out = Vec::new();
        for entry in self.user_teams.scan_prefix(prefix(user_id)) {
            let (k, v) = entry?;
            let team_id = decode_str("user team index", &k[user_id.len() + 1..])?;
            let role = decode::<StoredMembership>("membership", &v)?.role();
            if let Some(team) = self.get_team(&team_id)? {
                out.push((team, role));
            }
        }
        Ok(out)
    }
}
