//! Teams and their projects.

use super::*;

impl TeamStore for Store {
    fn create_team(&self, id: Option<&str>, name: &str, actor: Actor<'_>) -> Result<Team> {
        let _writing = self.writing();
        let name = validate_name("name", name)?;
        let id = match id {
            Some(id) => {
                check_id("team", id)?;
                id.to_owned()
            }
            None => ids::new_id("team"),
        };
        let team = Team {
            id: id.clone(),
            name,
            created_at: self.clock.now_ms(),
        };
        let (ak, av) = self.audit_event_with(
            Some(&id),
            actor,
            "team.created",
            &id,
            Some(serde_json::json!({ "name": team.name })),
        )?;
        (&self.teams, &self.audit)
            .transaction(|(teams, audit)| {
                if teams.get(id.as_bytes())?.is_some() {
                    return abort(Error::AlreadyExists {
                        kind: "team",
                        id: id.clone(),
                    });
                }
                teams.insert(id.as_bytes(), encode(&team))?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.durable(team)
    }

    fn get_team(&self, id: &str) -> Result<Option<Team>> {
        self.teams
            .get(id.as_bytes())?
            .map(|v| decode("team", &v))
            .transpose()
    }

    fn list_teams(&self) -> Result<Vec<Team>> {
        self.teams
            .iter()
            .values()
            .map(|v| decode("team", &v?))
            .collect()
    }

    fn create_project(
        &self,
        team_id: &str,
        id: Option<&str>,
        name: &str,
        actor: Actor<'_>,
    ) -> Result<Project> {
        let _writing = self.writing();
        let name = validate_name("name", name)?;
        self.require_team(team_id)?;
        let id = match id {
            Some(id) => {
                check_id("project", id)?;
                id.to_owned()
            }
            None => ids::new_id("proj"),
        };
        let project = Project {
            id: id.clone(),
            team_id: team_id.to_owned(),
            name,
            created_at: self.clock.now_ms(),
        };
        let key = join(team_id, &id);
        let (ak, av) = self.audit_event_with(
            Some(team_id),
            actor,
            "project.created",
            &id,
            Some(serde_json::json!({ "name": project.name })),
        )?;
        (&self.teams, &self.projects, &self.audit)
            .transaction(|(teams, projects, audit)| {
                // Re-read the team inside the transaction so a concurrent delete cannot race us.
                if teams.get(team_id.as_bytes())?.is_none() {
                    return abort(Error::NotFound {
                        kind: "team",
                        id: team_id.to_owned(),
                    });
                }
                if projects.get(key.as_slice())?.is_some() {
                    return abort(Error::AlreadyExists {
                        kind: "project",
                        id: id.clone(),
                    });
                }
                projects.insert(key.as_slice(), encode(&project))?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.durable(project)
    }

    fn get_project(&self, team_id: &str, project_id: &str) -> Result<Option<Project>> {
        self.projects
            .get(join(team_id, project_id))?
            .map(|v| decode("project", &v))
            .transpose()
    }

    fn rename_project(
        &self,
        team_id: &str,
        project_id: &str,
        name: &str,
        actor: Actor<'_>,
    ) -> Result<Project> {
        let _writing = self.writing();
        let name = validate_name("name", name)?;
        let _structure = self.team_structure();
        let mut project =
            self.get_project(team_id, project_id)?
                .ok_or_else(|| Error::NotFound {
                    kind: "project",
                    id: project_id.to_owned(),
                })?;
        let details = serde_json::json!({ "from": project.name, "name": name });
        project.name = name;
        let (ak, av) = self.audit_event_with(
            Some(team_id),
            actor,
            "project.renamed",
            project_id,
            Some(details),
        )?;
        let key = join(team_id, project_id);
        (&self.projects, &self.audit)
            .transaction(|(projects, audit)| {
                projects.insert(key.as_slice(), encode(&project))?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        drop(_structure);
        self.durable(project)
    }

    fn delete_project(&self, team_id: &str, project_id: &str, actor: Actor<'_>) -> Result<()> {
        let _writing = self.writing();
        let _structure = self.team_structure();
        let Some(project) = self.get_project(team_id, project_id)? else {
            return Err(Error::NotFound {
                kind: "project",
                id: project_id.to_owned(),
            });
        };
        if self.project_in_use(team_id, project_id)? {
            return Err(Error::Conflict {
                reason: "project_in_use",
                message: format!(
                    "project {project_id} still has keys scoped to it; revoke them first"
                ),
            });
        }
        let (ak, av) = self.audit_event_with(
            Some(team_id),
            actor,
            "project.deleted",
            project_id,
            Some(serde_json::json!({ "name": project.name })),
        )?;
        let key = join(team_id, project_id);
        (&self.projects, &self.audit)
            .transaction(|(projects, audit)| {
                projects.remove(key.as_slice())?;
                audit.insert(ak.as_slice(), av.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        drop(_structure);
        self.durable(())
    }

    fn list_projects(&self, team_id: &str) -> Result<Vec<Project>> {
        self.projects
            .scan_prefix(prefix(team_id))
            .values()
            .map(|v| decode("project", &v?))
            .collect()
    }
}

impl Store {
    /// Whether an unrevoked key of the team is scoped to the project.
    fn project_in_use(&self, team_id: &str, project_id: &str) -> Result<bool> {
        for key in self.team_keys.scan_prefix(prefix(team_id)).keys() {
            let key = key?;
            let key_id = decode_str("team key index", &key[team_id.len() + 1..])?;
            if let Some(record) = self.get_key(team_id, &key_id)?
                && record.revoked_at.is_none()
                && record.project_id.as_deref() == Some(project_id)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(super) fn require_team(&self, id: &str) -> Result<Team> {
        self.get_team(id)?.ok_or_else(|| Error::NotFound {
            kind: "team",
            id: id.to_owned(),
        })
    }
}
