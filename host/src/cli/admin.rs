//! `team`, `project` and `user` commands.

use super::*;

impl TeamCommand {
    pub(super) fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let TeamCommand::Create { name, id } = self;
        let team = open_store(settings, StoreUse::MayStart)?.create_team(
            id.as_deref(),
            &name,
            CLI_ACTOR.into(),
        )?;
        print_json(&json!({"id": team.id, "name": team.name}))
    }
}

impl ProjectCommand {
    pub(super) fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let ProjectCommand::Create { team, name, id } = self;
        let p = open_store(settings, StoreUse::Existing)?.create_project(
            &team,
            id.as_deref(),
            &name,
            CLI_ACTOR.into(),
        )?;
        print_json(&json!({"id": p.id, "name": p.name, "teamId": p.team_id}))
    }
}

pub(super) fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!(
            "no password on stdin (pipe it in: echo \"$PASSWORD\" | billstack user create … --password-stdin)"
        );
    }
    Ok(password.to_string())
}

impl UserCommand {
    pub(super) fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let UserCommand::Create {
            email,
            team,
            role,
            password_stdin: _,
        } = self;
        let role: Role = role.parse().map_err(anyhow::Error::msg)?;
        let password = read_password_line()?;
        let store = open_store(settings, StoreUse::Existing)?;
        let user = store.create_user(
            &NewUser {
                email,
                password,
                team_id: team,
                role,
            },
            CLI_ACTOR.into(),
        )?;
        print_json(&json!({"id": user.id, "email": user.email}))
    }
}
