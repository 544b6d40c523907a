//! The audit log: a team's events, newest first, and sign-in attempts.

use super::*;

impl AuditStore for Store {
    fn list_audit(&self, team_id: &str, before: Option<u64>, limit: usize) -> Result<AuditPage> {
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let start = event_key(Some(team_id), 0);
        let end = event_key(Some(team_id), before.unwrap_or(u64::MAX));
        let mut events = Vec::with_capacity(limit);
        let mut next_before = None;
        // `end` itself is excluded: with `before` it is the last event already shown, and
        // sequence number u64::MAX is never generated.
        for entry in self.audit.range(start..end).rev() {
            let (_, v) = entry?;
            let event: AuditEvent = decode("audit event", &v)?;
            if events.len() == limit {
                next_before = events.last().map(|e: &AuditEvent| e.seq);
                break;
            }
            events.push(event);
        }
        Ok(AuditPage {
            events,
            next_before,
        })
    }

    fn record_sign_in(&self, email: &str, succeeded: bool, source: &str) -> Result<()> {
        let _writing = self.writing();
        let user = match validate_email(email) {
            Ok(email) => self.find_user_by_email(&email)?,
            Err(_) => None,
        };
        let (action, actor_id) = match (&user, succeeded) {
            (Some(user), true) => ("auth.signed_in", user.id.as_str()),
            _ => ("auth.sign_in_failed", ANONYMOUS),
        };
        let actor = Actor::from_address(actor_id, source);
        let mut batch = sled::Batch::default();
        match &user {
            Some(user) => {
                for (team, _) in self.user_teams(&user.id)? {
                    let (k, v) = self.audit_event(Some(&team.id), actor, action, &user.id)?;
                    batch.insert(k, v);
                }
            }
            None => {
                let (k, v) = self.audit_event(None, actor, action, "unknown-account")?;
                batch.insert(k, v);
            }
        }
        self.audit.apply_batch(batch)?;
        self.durable(())
    }
}
