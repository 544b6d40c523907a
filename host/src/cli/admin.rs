//! `team`, `project` and `user` commands.

use super::*;

impl TeamCommand {
    pub(super) fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let TeamCommand::Create { name, id } = self;
        operate(settings, OperatorCommand::TeamCreate { name, id })
    }
}

impl ProjectCommand {
    pub(super) fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let ProjectCommand::Create { team, name, id } = self;
        operate(settings, OperatorCommand::ProjectCreate { team, name, id })
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
        operate(
            settings,
            OperatorCommand::UserCreate {
                email,
                team,
                role,
                password,
                admin,
            },
        )
    }
}
