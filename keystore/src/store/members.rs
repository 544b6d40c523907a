//! Team memberships: who is in a team, with which role, since when. A team always keeps at
//! least one owner: the checks that need the team's members as a whole run under
//! `Store::team_structure`, so two owners cannot demote each other at once.

use super::*;
use crate::Member;
use crate::records::StoredMembership;

impl Store {
    /// The membership record for a role granted now.
    pub(super) fn membership_value(&self, role: Role) -> Vec<u8> {
        encode(&StoredMembership::Full {
            role,
            added_at: self.clock.now_ms(),
        })
    }

    fn stored_membership(&self, team_id: &str, user_id: &str) -> Result<Option<StoredMembership>> {
        self.members
            .get(join(team_id, user_id))?
            .map(|v| decode("membership", &v))
            .transpose()
    }

    fn owners(&self, team_id: &str) -> Result<usize> {
        let mut n = 0;
        for value in self.members.scan_prefix(prefix(team_id)).values() {
            let m: StoredMembership = decode("membership", &value?)?;
            n += usize::from(m.role() == Role::Owner);
        }
        Ok(n)
    }

    /// Writes (or, with `None`, removes) a membership in both indexes with its audit event.
    fn write_membership(
        &self,
        team_id: &str,
        user_id: &str,
        value: Option<&[u8]>,
        audit: (Vec<u8>, Vec<u8>),
    ) -> Result<()> {
        let (ak, av) = audit;
        (&self.members, &self.user_teams, &self.audit)
            .transaction(|(members, user_teams, log)| {
                match value {
                    Some(v) => {
                        members.insert(join(team_id, user_id), v)?;
                        user_teams.insert(join(user_id, team_id), v)?;
                    }
                    None => {
                        members.remove(join(team_id, user_id))?;
                        user_teams.remove(join(user_id, team_id))?;
                    }
                }
                log.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)
    }

    fn last_owner(team_id: &str) -> Error {
        Error::Conflict {
            reason: "last_owner",
            message: format!("team {team_id} must keep at least one owner"),
        }
    }
}

impl MemberStore for Store {
    fn list_members(&self, team_id: &str) -> Result<Vec<Member>> {
        self.require_team(team_id)?;
        let mut out = Vec::new();
        for entry in self.members.scan_prefix(prefix(team_id)) {
            let (k, v) = entry?;
            let user_id = decode_str("member index", &k[team_id.len() + 1..])?;
            let m: StoredMembership = decode("membership", &v)?;
            if let Some(user) = self.get_user(&user_id)? {
                out.push(Member {
                    added_at: m.added_at().unwrap_or(user.created_at),
                    user_id,
                    email: user.email,
                    role: m.role(),
                });
            }
        }
        out.sort_by(|a, b| (a.added_at, &a.email).cmp(&(b.added_at, &b.email)));
        Ok(out)
    }

    fn add_member(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        actor: Actor<'_>,
    ) -> Result<Member> {
        let _writing = self.writing();
        let _structure = self.team_structure();
        self.require_team(team_id)?;
        let Some(user) = self.get_user(user_id)? else {
            return Err(Error::NotFound {
                kind: "user",
                id: user_id.to_owned(),
            });
        };
        if self.stored_membership(team_id, user_id)?.is_some() {
            return Err(Error::AlreadyExists {
                kind: "member",
                id: user.email,
            });
        }
        let value = self.membership_value(role);
        let audit = self.audit_event_with(
            Some(team_id),
            actor,
            "member.added",
            user_id,
            Some(serde_json::json!({ "email": user.email, "role": role.as_str() })),
        )?;
        self.write_membership(team_id, user_id, Some(&value), audit)?;
        let added_at = self.clock.now_ms();
        drop(_structure);
        self.durable(Member {
            user_id: user.id,
            email: user.email,
            role,
            added_at,
        })
    }

    fn change_role(
        &self,
        team_id: &str,
        user_id: &str,
        role: Role,
        actor: Actor<'_>,
    ) -> Result<Member> {
        let _writing = self.writing();
        let _structure = self.team_structure();
        let not_member = || Error::NotFound {
            kind: "member",
            id: user_id.to_owned(),
        };
        let current = self
            .stored_membership(team_id, user_id)?
            .ok_or_else(not_member)?;
        let user = self.get_user(user_id)?.ok_or_else(not_member)?;
        if current.role() == Role::Owner && role != Role::Owner && self.owners(team_id)? <= 1 {
            return Err(Store::last_owner(team_id));
        }
        let added_at = current.added_at().unwrap_or(user.created_at);
        let value = encode(&StoredMembership::Full { role, added_at });
        let audit = self.audit_event_with(
            Some(team_id),
            actor,
            "member.role_changed",
            user_id,
            Some(serde_json::json!({
                "email": user.email,
                "from": current.role().as_str(),
                "role": role.as_str(),
            })),
        )?;
        self.write_membership(team_id, user_id, Some(&value), audit)?;
        drop(_structure);
        self.durable(Member {
            user_id: user.id,
            email: user.email,
            role,
            added_at,
        })
    }

    fn remove_member(&self, team_id: &str, user_id: &str, actor: Actor<'_>) -> Result<()> {
        let _writing = self.writing();
        let _structure = self.team_structure();
        let current = self
            .stored_membership(team_id, user_id)?
            .ok_or_else(|| Error::NotFound {
                kind: "member",
                id: user_id.to_owned(),
            })?;
        if current.role() == Role::Owner && self.owners(team_id)? <= 1 {
            return Err(Store::last_owner(team_id));
        }
        let email = self.get_user(user_id)?.map(|u| u.email);
        let audit = self.audit_event_with(
            Some(team_id),
            actor,
            "member.removed",
            user_id,
            email.map(|email| serde_json::json!({ "email": email })),
        )?;
        self.write_membership(team_id, user_id, None, audit)?;
        drop(_structure);
        self.durable(())
    }
}
