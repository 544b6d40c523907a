//! `team`, `project` and `user` commands.

use super::*;

impl TeamCommand {
    pub(super) fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let TeamCommand::Create { name, id } = self;
        let team = open_app(settings, StoreUse::MayStart, None)?.create_team(
            &Caller::Operator,
            id.as_deref(),
            &name,
        )?;
        print_json(&json!({"id": team.id, "name": team.name}))
    }
}

impl ProjectCommand {
    pub(super) fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let ProjectCommand::Create { team, name, id } = self;
        let p = open_app(settings, StoreUse::Existing, None)?.create_project(
            &Caller::Operator,
            &team,
            id.as_deref(),
            &name,
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
            admin,
        } = self;
        let role: Role = role.parse().map_err(anyhow::Error::msg)?;
        let password = read_password_line()?;
        let app = open_app(settings, StoreUse::Existing, None)?;
        let user = app.create_user(
            &Caller::Operator,
            &NewUser {
                email,
                password,
                team_id: team,
                role,
            },
            admin,
        )?;
        print_json(&json!({"id": user.id, "email": user.email, "admin": user.admin}))
    }
}
