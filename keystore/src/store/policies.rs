//! Per-team policy plugins: records in sled, bytes in [`crate::blobs`] files.

use super::*;

impl PolicyStore for Store {
    fn put_team_policy(&self, team_id: &str, bytes: &[u8], actor: Actor<'_>) -> Result<TeamPolicy> {
        let _writing = self.writing();
        let _policies = self
            .policy_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.require_team(team_id)?;
        // The bytes are on disk before the record that names them commits.
        let sha = self.policy_files.put(bytes)?;
        let meta = TeamPolicy {
            team_id: team_id.to_owned(),
            sha256: sha.clone(),
            size: bytes.len() as u64,
            uploaded_at: self.clock.now_ms(),
            uploaded_by: actor.id.to_owned(),
        };
        let (ak, av) = self.audit_event(Some(team_id), actor, "policy.uploaded", &sha)?;
        (&self.team_policy, &self.audit)
            .transaction(|(team_policy, audit)| {
                team_policy.insert(team_id.as_bytes(), encode(&meta))?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        let meta = self.durable(meta)?;
        // Only once the new record is durable may the blob it replaced go.
        self.gc_policy_blobs_locked()?;
        Ok(meta)
    }

    fn get_team_policy(&self, team_id: &str) -> Result<Option<(TeamPolicy, Vec<u8>)>> {
        let Some(meta) = self.team_policy.get(team_id.as_bytes())? else {
            return Ok(None);
        };
        let meta: TeamPolicy = decode("team policy", &meta)?;
        let Some(bytes) = self.policy_files.get(&meta.sha256)? else {
            return Err(Error::Corruption {
                what: format!("policy blob {} of team {team_id} is missing", meta.sha256),
            });
        };
        Ok(Some((meta, bytes)))
    }

    fn list_team_policies(&self) -> Result<Vec<TeamPolicy>> {
        self.team_policy
            .iter()
            .values()
            .map(|v| decode("team policy", &v?))
            .collect()
    }

    fn stored_policy_blobs(&self) -> Result<Vec<String>> {
        self.policy_files.list()
    }

    fn delete_team_policy(&self, team_id: &str, actor: Actor<'_>) -> Result<bool> {
        let _writing = self.writing();
        let _policies = self
            .policy_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (ak, av) = self.audit_event(Some(team_id), actor, "policy.reset", team_id)?;
        let removed = (&self.team_policy, &self.audit)
            .transaction(|(team_policy, audit)| {
                let had = team_policy.remove(team_id.as_bytes())?.is_some();
                if had {
                    audit.insert(ak.as_slice(), av.as_slice())?;
                }
                Ok(had)
            })
            .map_err(tx_err)?;
        let removed = self.durable(removed)?;
        self.gc_policy_blobs_locked()?;
        Ok(removed)
    }
}

impl Store {
    /// Deletes the blobs no team policy names (and files a crash left half-written).
    pub(super) fn gc_policy_blobs(&self) -> Result<()> {
        let _policies = self
            .policy_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.gc_policy_blobs_locked()
    }

    pub(super) fn gc_policy_blobs_locked(&self) -> Result<()> {
        let live: std::collections::HashSet<String> = self
            .list_team_policies()?
            .into_iter()
            .map(|meta| meta.sha256)
            .collect();
        self.policy_files.retain(&live)?;
        Ok(())
    }

    /// Stores of earlier versions kept policy bytes in a sled tree, whose space sled never
    /// returns: move them to files, then drop the tree. Safe to repeat after a crash (a file
    /// written twice is the same file; the tree goes only once all are written).
    pub(super) fn migrate_policy_blobs(&self) -> Result<()> {
        if !self
            .db
            .tree_names()
            .iter()
            .any(|n| &n[..] == LEGACY_POLICY_BLOBS.as_bytes())
        {
            return Ok(());
        }
        let tree = self.db.open_tree(LEGACY_POLICY_BLOBS)?;
        for entry in tree.iter() {
            let (k, v) = entry?;
            let sha = self.policy_files.put(&v)?;
            if sha.as_bytes() != &k[..] {
                return Err(Error::Corruption {
                    what: format!(
                        "policy blob {} does not match its hash",
                        String::from_utf8_lossy(&k)
                    ),
                });
            }
        }
        drop(tree);
        self.db.drop_tree(LEGACY_POLICY_BLOBS)?;
        self.db.flush()?;
        Ok(())
    }

    /// The directory of policy blob files, for backup and restore.
    pub(crate) fn policy_files(&self) -> &BlobDir {
        &self.policy_files
    }
}
