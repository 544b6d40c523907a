//! A team's members (owners manage them), invitations, and each user's own password.

use billstack_keystore::{Member, Project, Role, Team, User};

use super::accounts::SignedIn;
use super::{App, AppError, AppResult, Caller, Need};

/// What only owners can do to a team's members.
pub const MANAGE_MEMBERS: &str = "manage the team's members";
/// What only owners can do to a team's projects.
pub const MANAGE_PROJECTS: &str = "manage the team's projects";

/// A new member, and the invitation token when they have no password yet (shown once).
pub struct Added {
    /// The membership.
    pub member: Member,
    /// The one-time token for `POST /api/auth/invitations/accept`.
    pub invitation: Option<String>,
}

impl App {
    /// The team's members (any member may see them).
    pub fn list_members(&self, caller: &Caller, team_id: &str) -> AppResult<Vec<Member>> {
        self.authorize(caller, team_id, Need::Member)?;
        Ok(self.store.list_members(team_id)?)
    }

    /// An owner adds someone by email: an existing account joins at once; an unknown email
    /// gets an account with no password and a one-time invitation.
    pub fn add_member(
        &self,
        caller: &Caller,
        team_id: &str,
        email: &str,
        role: Role,
    ) -> AppResult<Added> {
        self.authorize(caller, team_id, Need::Owner(MANAGE_MEMBERS))?;
        let invited = self.store.invite(team_id, email, role, caller.actor())?;
        tracing::info!(team = %team_id, user = %invited.member.user_id, role = role.as_str(), invited = invited.token.is_some(), actor = %caller.id(), "member added");
        Ok(Added {
            member: invited.member,
            invitation: invited.token,
        })
    }

    /// An owner changes a member's role (a team keeps at least one owner).
    pub fn change_role(
        &self,
        caller: &Caller,
        team_id: &str,
        user_id: &str,
        role: Role,
    ) -> AppResult<Member> {
        self.authorize(caller, team_id, Need::Owner(MANAGE_MEMBERS))?;
        let member = self
            .store
            .change_role(team_id, user_id, role, caller.actor())?;
        tracing::info!(team = %team_id, user = %user_id, role = role.as_str(), actor = %caller.id(), "member role changed");
        Ok(member)
    }

    /// An owner removes a member (not the last owner); their sessions lose the team at once.
    pub fn remove_member(&self, caller: &Caller, team_id: &str, user_id: &str) -> AppResult<()> {
        self.authorize(caller, team_id, Need::Owner(MANAGE_MEMBERS))?;
        self.store.remove_member(team_id, user_id, caller.actor())?;
        tracing::info!(team = %team_id, user = %user_id, actor = %caller.id(), "member removed");
        Ok(())
    }

    /// Accepts an invitation: sets the password and signs the user in.
    pub fn accept_invitation(&self, token: &str, password: &str) -> AppResult<SignedIn> {
        let user = match self.store.accept_invitation(token, password) {
            Ok(user) => user,
            Err(billstack_keystore::Error::Invalid { field: "token", .. }) => {
                return Err(AppError::InvalidInvitation);
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(user = %user.id, "invitation accepted");
        self.start_session(user)
    }

    /// A user changes their own password: the current one must match; every session of theirs
    /// ends, and the caller gets a new one.
    pub fn change_password(
        &self,
        user: &User,
        source: &str,
        current: &str,
        new: &str,
    ) -> AppResult<SignedIn> {
        if self.store.verify_password(&user.email, current)?.is_none() {
            return Err(AppError::invalid(
                "currentPassword",
                "the current password is not right",
            ));
        }
        let actor = Caller::Account {
            user_id: user.id.clone(),
            source: source.to_owned(),
        };
        let ended = self.store.set_password(&user.id, new, actor.actor())?;
        tracing::info!(user = %user.id, sessions_ended = ended, "password changed");
        self.start_session(user.clone())
    }

    /// An admin creates a team and becomes its owner.
    pub fn create_team_as(&self, caller: &Caller, name: &str) -> AppResult<Team> {
        let Caller::Account { user_id, .. } = caller else {
            return Ok(self.store.create_team(None, name, caller.actor())?);
        };
        let is_admin = self.store.get_user(user_id)?.is_some_and(|u| u.admin);
        if !is_admin {
            return Err(AppError::AdminsOnly("create teams"));
        }
        let team = self.store.create_team(None, name, caller.actor())?;
        self.store
            .add_member(&team.id, user_id, Role::Owner, caller.actor())?;
        tracing::info!(team = %team.id, actor = %caller.id(), "team created");
        Ok(team)
    }

    /// An owner creates a project in the team.
    pub fn create_project_as(
        &self,
        caller: &Caller,
        team_id: &str,
        name: &str,
    ) -> AppResult<Project> {
        self.authorize(caller, team_id, Need::Owner(MANAGE_PROJECTS))?;
        Ok(self
            .store
            .create_project(team_id, None, name, caller.actor())?)
    }

    /// An owner renames a project.
    pub fn rename_project(
        &self,
        caller: &Caller,
        team_id: &str,
        project_id: &str,
        name: &str,
    ) -> AppResult<Project> {
        self.authorize(caller, team_id, Need::Owner(MANAGE_PROJECTS))?;
        Ok(self
            .store
            .rename_project(team_id, project_id, name, caller.actor())?)
    }

    /// An owner deletes a project no key is scoped to.
    pub fn delete_project(
        &self,
        caller: &Caller,
        team_id: &str,
        project_id: &str,
    ) -> AppResult<()> {
        self.authorize(caller, team_id, Need::Owner(MANAGE_PROJECTS))?;
        Ok(self
            .store
            .delete_project(team_id, project_id, caller.actor())?)
    }
}
