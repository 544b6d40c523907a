//! Invitations: a one-time token, stored by its SHA-256, that lets an invited user choose
//! their password (and so sign in for the first time).

use super::users::{hash_password, validate_password};
use super::*;
use crate::Member;
use crate::records::StoredMembership;

/// How long an invitation's token works: 7 days.
pub const INVITATION_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;

/// The outcome of an invitation.
#[derive(Debug, Clone)]
pub struct Invited {
    /// The new membership.
    pub member: Member,
    /// The one-time token, when the user has no password yet (shown once, never stored).
    pub token: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Invitation {
    pub(crate) user_id: String,
    pub(crate) expires_at: i64,
}

pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Store {
    /// A fresh token for `user_id`, replacing any earlier one: the key of the stored
    /// invitation, its value, and the token.
    fn new_invitation(&self, user_id: &str) -> Result<([u8; 32], Vec<u8>, String)> {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut raw)
            .expect("the OS random number generator is unavailable");
        let token = hex::encode(raw);
        // One live invitation per user: drop the ones before.
        for entry in self.invitations.iter() {
            let (k, v) = entry?;
            let old: Invitation = decode("invitation", &v)?;
            if old.user_id == user_id {
                self.invitations.remove(k)?;
            }
        }
        let value = encode(&Invitation {
            user_id: user_id.to_owned(),
            expires_at: self.clock.now_ms() + INVITATION_LIFETIME_MS,
        });
        Ok((token_hash(&token), value, token))
    }
}

impl Store {
    pub(super) fn invite_user(
        &self,
        team_id: &str,
        email: &str,
        role: Role,
        actor: Actor<'_>,
    ) -> Result<Invited> {
        let email = validate_email(email)?;
        let _writing = self.writing();
        let _structure = self.team_structure();
        self.require_team(team_id)?;
        let existing = self.find_user_by_email(&email)?;
        if let Some(user) = &existing
            && self.membership(team_id, &user.id)?.is_some()
        {
            return Err(Error::AlreadyExists {
                kind: "member",
                id: email,
            });
        }
        let now = self.clock.now_ms();
        let user = existing.clone().unwrap_or_else(|| User {
            id: ids::new_id("user"),
            email: email.clone(),
            password_hash: String::new(),
            created_at: now,
            admin: false,
        });
        let invitation = if user.password_hash.is_empty() {
            Some(self.new_invitation(&user.id)?)
        } else {
            None
        };
        let membership = encode(&StoredMembership::Full {
            role,
            added_at: now,
        });
        let (ak, av) = self.audit_event(Some(team_id), actor, "member.invited", &user.id)?;
        let create = existing.is_none();
        (
            &self.users,
            &self.user_email,
            &self.members,
            &self.user_teams,
            &self.invitations,
            &self.audit,
        )
            .transaction(
                |(users, user_email, members, user_teams, invitations, audit)| {
                    if create {
                        if user_email.get(email.as_bytes())?.is_some() {
                            return abort(Error::AlreadyExists {
                                kind: "user",
                                id: email.clone(),
                            });
                        }
                        users.insert(user.id.as_bytes(), encode(&user))?;
                        user_email.insert(email.as_bytes(), user.id.as_bytes())?;
                    }
                    members.insert(join(team_id, &user.id), membership.as_slice())?;
                    user_teams.insert(join(&user.id, team_id), membership.as_slice())?;
                    if let Some((key, value, _)) = &invitation {
                        invitations.insert(&key[..], value.as_slice())?;
                    }
                    audit.insert(ak.as_slice(), av.as_slice())?;
                    Ok(())
                },
            )
            .map_err(tx_err)?;
        drop(_structure);
        self.durable(Invited {
            member: Member {
                user_id: user.id,
                email: user.email,
                role,
                added_at: now,
            },
            token: invitation.map(|(_, _, token)| token),
        })
    }

    pub(super) fn accept(&self, token: &str, password: &str) -> Result<User> {
        let bad = || invalid("token", "the invitation is unknown, used or expired");
        validate_password("password", password)?;
        let _writing = self.writing();
        let key = token_hash(token);
        let Some(value) = self.invitations.get(key)? else {
            return Err(bad());
        };
        let invitation: Invitation = decode("invitation", &value)?;
        if invitation.expires_at <= self.clock.now_ms() {
            self.invitations.remove(key)?;
            return Err(bad());
        }
        let mut user = self.get_user(&invitation.user_id)?.ok_or_else(bad)?;
        user.password_hash = hash_password(password)?;
        let (ak, av) = self.audit_event(
            None,
            Actor::from(user.id.as_str()),
            "invitation.accepted",
            &user.id,
        )?;
        (&self.users, &self.invitations, &self.audit)
            .transaction(|(users, invitations, audit)| {
                // Used once: a second acceptance racing this one finds it gone.
                if invitations.remove(&key[..])?.is_none() {
                    return abort(bad());
                }
                users.insert(user.id.as_bytes(), encode(&user))?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.durable(user)
    }
}
