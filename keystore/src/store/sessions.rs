//! Dashboard sessions: random tokens stored by their SHA-256.

use super::*;

impl SessionStore for Store {
    fn create_session(&self, user_id: &str) -> Result<(String, Session)> {
        let _writing = self.writing();
        let mut raw = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut raw)
            .expect("the OS random number generator is unavailable");
        let token = hex::encode(raw);
        let now = self.clock.now_ms();
        let session = Session {
            user_id: user_id.to_owned(),
            created_at: now,
            last_seen_at: now,
        };
        self.sessions.insert(
            Sha256::digest(token.as_bytes()).as_slice(),
            encode(&session),
        )?;
        self.durable((token, session))
    }

    fn get_session(&self, token: &str) -> Result<Option<Session>> {
        let k = Sha256::digest(token.as_bytes());
        self.sessions
            .get(k.as_slice())?
            .map(|v| decode("session", &v))
            .transpose()
    }

    fn touch_session(&self, token: &str, now_ms: i64) -> Result<()> {
        let _writing = self.writing();
        let k = Sha256::digest(token.as_bytes());
        if let Some(v) = self.sessions.get(k.as_slice())? {
            let mut session: Session = decode("session", &v)?;
            session.last_seen_at = now_ms;
            // Only update if it still holds what we read, so a concurrent logout wins.
            let _ =
                self.sessions
                    .compare_and_swap(k.as_slice(), Some(v), Some(encode(&session)))?;
        }
        Ok(())
    }

    fn delete_session(&self, token: &str) -> Result<()> {
        let _writing = self.writing();
        let k = Sha256::digest(token.as_bytes());
        self.sessions.remove(k.as_slice())?;
        self.durable(())
    }

    fn purge_sessions(&self, expired: &dyn Fn(&Session) -> bool) -> Result<usize> {
        let _writing = self.writing();
        let mut n = 0;
        for entry in self.sessions.iter() {
            let (k, v) = entry?;
            let gone = match decode::<Session>("session", &v) {
                Ok(s) => expired(&s),
                Err(_) => true,
            };
            if gone {
                self.sessions.remove(k)?;
                n += 1;
            }
        }
        self.durable(n)
    }
}
