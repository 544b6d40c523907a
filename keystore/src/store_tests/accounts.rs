//! Teams, projects, users, memberships and sessions.

use super::*;

#[test]
fn teams_projects_and_ids() {
    let (_dir, store) = open();
    assert!(store.is_empty().expect("empty"));
    let (team, project) = team_and_project(&*store);
    assert!(!store.is_empty().expect("not empty"));
    assert!(matches!(
        store.create_team(Some("team_a"), "Again", "t".into()),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.create_team(Some("team/../x"), "Bad", "t".into()),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        store.create_project("team_nope", None, "P", "t".into()),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.create_project(&team.id, Some("proj_a"), "P", "t".into()),
        Err(Error::AlreadyExists { .. })
    ));
    let generated = store
        .create_project(&team.id, None, "Second", "t".into())
        .expect("project");
    assert!(generated.id.starts_with("proj_"));
    let listed: Vec<String> = store
        .list_projects(&team.id)
        .expect("list")
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&project.id));
    // A team whose id is a prefix of another's does not see its projects.
    let t2 = store
        .create_team(Some("team_a2"), "A2", "t".into())
        .expect("team");
    assert!(store.list_projects(&t2.id).expect("list").is_empty());
}

#[test]
fn users_passwords_memberships_sessions() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
    let new = NewUser {
        email: "Ada@Example.com".into(),
        password: "correct horse".into(),
        team_id: team.id.clone(),
        role: Role::Owner,
    };
    let user = store.create_user(&new, "test".into()).expect("user");
    assert_eq!(user.email, "ada@example.com");
    assert!(user.password_hash.starts_with("$argon2id$"));
    assert!(matches!(
        store.create_user(&new, "test".into()),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.create_user(
            &NewUser {
                email: "b@x.io".into(),
                password: "short".into(),
                ..new.clone()
            },
            "t".into()
        ),
        Err(Error::Invalid {
            field: "password",
            ..
        })
    ));
    assert!(matches!(
        store.create_user(
            &NewUser {
                email: "no-at-sign".into(),
                ..new.clone()
            },
            "t".into()
        ),
        Err(Error::Invalid { field: "email", .. })
    ));
    assert_eq!(
        store
            .verify_password("ADA@example.com", "correct horse")
            .expect("verify")
            .map(|u| u.id),
        Some(user.id.clone())
    );
    assert!(
        store
            .verify_password("ada@example.com", "wrong")
            .expect("verify")
            .is_none()
    );
    assert!(
        store
            .verify_password("nobody@example.com", "correct horse")
            .expect("verify")
            .is_none()
    );
    assert_eq!(
        store.membership(&team.id, &user.id).expect("m"),
        Some(Role::Owner)
    );
    let other = store.create_team(None, "Other", "t".into()).expect("team");
    assert_eq!(store.membership(&other.id, &user.id).expect("m"), None);
    store
        .set_membership(&other.id, &user.id, Role::Member, "t".into())
        .expect("join");
    assert_eq!(store.user_teams(&user.id).expect("teams").len(), 2);

    let (token, session) = store.create_session(&user.id).expect("session");
    assert_eq!(
        store.get_session(&token).expect("get"),
        Some(session.clone())
    );
    assert!(store.get_session("not-a-token").expect("get").is_none());
    store
        .touch_session(&token, session.created_at + 5)
        .expect("touch");
    assert_eq!(
        store
            .get_session(&token)
            .expect("get")
            .expect("s")
            .last_seen_at,
        session.created_at + 5
    );
    store.delete_session(&token).expect("logout");
    assert!(store.get_session(&token).expect("get").is_none());
    let (_t, _) = store.create_session(&user.id).expect("session");
    assert_eq!(store.purge_sessions(&|_| true).expect("purge"), 1);
}

fn user(store: &dyn Storage, email: &str, team: &str, role: Role) -> User {
    store
        .create_user(
            &NewUser {
                email: email.into(),
                password: "a-long-password-1".into(),
                team_id: team.into(),
                role,
            },
            "test".into(),
        )
        .expect("user")
}

#[test]
fn members_are_listed_added_re_roled_and_removed_and_a_team_keeps_an_owner() {
    let (_dir, store, clock) = open_at_manual_time();
    let (team, _) = team_and_project(&*store);
    let other = store
        .create_team(Some("team_b"), "Other", "test".into())
        .expect("team");
    let ada = user(&*store, "ada@example.com", &team.id, Role::Owner);
    clock.advance(std::time::Duration::from_secs(1));
    let bo = user(&*store, "bo@example.com", &other.id, Role::Member);
    // An existing user joins a second team.
    let joined = store
        .add_member(&team.id, &bo.id, Role::Member, "test".into())
        .expect("join");
    assert_eq!(joined.added_at, clock.now_ms());
    assert!(matches!(
        store.add_member(&team.id, &bo.id, Role::Owner, "test".into()),
        Err(Error::AlreadyExists { .. })
    ));
    let listed = store.list_members(&team.id).expect("members");
    assert_eq!(
        listed
            .iter()
            .map(|m| (m.email.as_str(), m.role))
            .collect::<Vec<_>>(),
        [
            ("ada@example.com", Role::Owner),
            ("bo@example.com", Role::Member)
        ]
    );
    assert_eq!(store.user_teams(&bo.id).expect("teams").len(), 2);
    // The last owner can be neither demoted nor removed; with a second owner, both work.
    for refused in [
        store
            .change_role(&team.id, &ada.id, Role::Member, "test".into())
            .map(drop),
        store.remove_member(&team.id, &ada.id, "test".into()),
    ] {
        assert!(
            matches!(
                refused,
                Err(Error::Conflict {
                    reason: "last_owner",
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    assert_eq!(
        store.membership(&team.id, &ada.id).expect("role"),
        Some(Role::Owner)
    );
    let promoted = store
        .change_role(&team.id, &bo.id, Role::Owner, "test".into())
        .expect("promote");
    assert_eq!(
        promoted.added_at, joined.added_at,
        "a new role keeps the join time"
    );
    store
        .change_role(&team.id, &ada.id, Role::Member, "test".into())
        .expect("demote, with another owner");
    store
        .remove_member(&team.id, &ada.id, "test".into())
        .expect("remove");
    assert_eq!(store.membership(&team.id, &ada.id).expect("role"), None);
    assert!(store.user_teams(&ada.id).expect("teams").is_empty());
    assert!(matches!(
        store.remove_member(&team.id, &ada.id, "test".into()),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.list_members("team_nope"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn two_owners_demoting_each_other_at_once_leave_one_owner() {
    for _ in 0..20 {
        let (_dir, store) = open();
        let (team, _) = team_and_project(&*store);
        let a = user(&*store, "a@example.com", &team.id, Role::Owner);
        let b = user(&*store, "b@example.com", &team.id, Role::Member);
        store
            .change_role(&team.id, &b.id, Role::Owner, "test".into())
            .expect("second owner");
        let store: &dyn Storage = &*store;
        let outcomes: Vec<bool> = std::thread::scope(|s| {
            let ha = s.spawn(|| {
                store
                    .change_role(&team.id, &b.id, Role::Member, "a".into())
                    .is_ok()
            });
            let hb = s.spawn(|| {
                store
                    .change_role(&team.id, &a.id, Role::Member, "b".into())
                    .is_ok()
            });
            vec![ha.join().expect("a"), hb.join().expect("b")]
        });
        assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{outcomes:?}");
        let owners = store
            .list_members(&team.id)
            .expect("members")
            .iter()
            .filter(|m| m.role == Role::Owner)
            .count();
        assert_eq!(owners, 1);
    }
}

#[test]
fn projects_are_renamed_and_deleted_only_when_no_key_uses_them() {
    let (_dir, store) = open();
    let (team, project) = team_and_project(&*store);
    let renamed = store
        .rename_project(&team.id, &project.id, "  Storefront ", "test".into())
        .expect("rename");
    assert_eq!(renamed.name, "Storefront");
    assert!(matches!(
        store.rename_project(&team.id, &project.id, " ", "test".into()),
        Err(Error::Invalid { field: "name", .. })
    ));
    let (key, _) = store
        .create_key(
            &NewApiKey {
                project_id: Some(project.id.clone()),
                ..new_key(&team.id)
            },
            "test".into(),
        )
        .expect("scoped key");
    assert!(matches!(
        store.delete_project(&team.id, &project.id, "test".into()),
        Err(Error::Conflict {
            reason: "project_in_use",
            ..
        })
    ));
    assert!(
        store
            .get_project(&team.id, &project.id)
            .expect("get")
            .is_some()
    );
    store
        .revoke_key(&team.id, &key.id, "test".into())
        .expect("revoke");
    store
        .delete_project(&team.id, &project.id, "test".into())
        .expect("delete once unused");
    assert!(
        store
            .get_project(&team.id, &project.id)
            .expect("get")
            .is_none()
    );
    assert!(matches!(
        store.delete_project(&team.id, &project.id, "test".into()),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.create_key(
            &NewApiKey {
                project_id: Some(project.id.clone()),
                ..new_key(&team.id)
            },
            "test".into(),
        ),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn a_new_password_replaces_the_old_and_ends_every_session() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
    let ada = user(&*store, "ada@example.com", &team.id, Role::Owner);
    let (first, _) = store.create_session(&ada.id).expect("session");
    let (second, _) = store.create_session(&ada.id).expect("session");
    for (short, ok) in [
        ("x".repeat(MIN_PASSWORD_LEN - 1), false),
        ("x".repeat(MIN_PASSWORD_LEN), true),
    ] {
        let changed = store.set_password(&ada.id, &short, "test".into());
        assert_eq!(changed.is_ok(), ok, "{} characters", short.len());
        if !ok {
            assert!(matches!(
                changed,
                Err(Error::Invalid {
                    field: "new_password",
                    ..
                })
            ));
            assert!(
                store.get_session(&first).expect("get").is_some(),
                "nothing changed"
            );
        }
    }
    assert!(store.get_session(&first).expect("get").is_none());
    assert!(store.get_session(&second).expect("get").is_none());
    assert!(
        store
            .verify_password("ada@example.com", "a-long-password-1")
            .expect("verify")
            .is_none()
    );
    assert!(
        store
            .verify_password("ada@example.com", &"x".repeat(MIN_PASSWORD_LEN))
            .expect("verify")
            .is_some()
    );
    assert!(
        store
            .set_password(&ada.id, &"y".repeat(MAX_PASSWORD_LEN + 1), "test".into())
            .is_err()
    );
}

#[test]
fn an_invitation_works_once_within_its_lifetime_and_only_then_gives_a_password() {
    let (_dir, store, clock) = open_at_manual_time();
    let (team, _) = team_and_project(&*store);
    let invited = store
        .invite(&team.id, "New@Example.com", Role::Member, "test".into())
        .expect("invite");
    let token = invited.token.clone().expect("a new user gets a token");
    assert_eq!(invited.member.email, "new@example.com");
    assert_eq!(
        store
            .membership(&team.id, &invited.member.user_id)
            .expect("role"),
        Some(Role::Member)
    );
    assert!(
        store
            .verify_password("new@example.com", "")
            .expect("verify")
            .is_none(),
        "no password works before acceptance"
    );
    assert!(matches!(
        store.invite(&team.id, "new@example.com", Role::Owner, "test".into()),
        Err(Error::AlreadyExists { .. })
    ));
    // Too short a password: refused, and the token still works.
    assert!(matches!(
        store.accept_invitation(&token, "short"),
        Err(Error::Invalid {
            field: "password",
            ..
        })
    ));
    assert!(matches!(
        store.accept_invitation("0".repeat(64).as_str(), "a-long-password-1"),
        Err(Error::Invalid { field: "token", .. })
    ));
    clock.advance(std::time::Duration::from_millis(
        u64::try_from(INVITATION_LIFETIME_MS - 1).expect("ms"),
    ));
    let user = store
        .accept_invitation(&token, "a-long-password-1")
        .expect("accept within the lifetime");
    assert_eq!(user.id, invited.member.user_id);
    assert!(
        store
            .verify_password("new@example.com", "a-long-password-1")
            .expect("verify")
            .is_some()
    );
    assert!(
        matches!(
            store.accept_invitation(&token, "another-password-2"),
            Err(Error::Invalid { field: "token", .. })
        ),
        "used once"
    );
    // An invitation that runs out cannot be used; a fresh one replaces it.
    let other = store
        .create_team(Some("team_b"), "B", "test".into())
        .expect("team");
    let late = store
        .invite(&other.id, "late@example.com", Role::Member, "test".into())
        .expect("invite");
    let stale = late.token.expect("token");
    clock.advance(std::time::Duration::from_millis(
        u64::try_from(INVITATION_LIFETIME_MS).expect("ms"),
    ));
    assert!(
        store
            .accept_invitation(&stale, "a-long-password-1")
            .is_err()
    );
    let again = store
        .invite(&team.id, "late@example.com", Role::Member, "test".into())
        .expect("re-invite to another team");
    let fresh = again.token.expect("still no password: a fresh token");
    store
        .accept_invitation(&fresh, "a-long-password-1")
        .expect("the fresh token works");
    // A user with a password is simply added, with no token.
    let third = store
        .create_team(Some("team_c"), "C", "test".into())
        .expect("team");
    let added = store
        .invite(&third.id, "late@example.com", Role::Owner, "test".into())
        .expect("add");
    assert!(added.token.is_none());
}

#[test]
fn the_admin_flag_is_granted_and_kept() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
    let ada = user(&*store, "ada@example.com", &team.id, Role::Owner);
    assert!(!ada.admin);
    assert!(
        store
            .set_admin(&ada.id, true, "test".into())
            .expect("grant")
            .admin
    );
    assert!(store.get_user(&ada.id).expect("get").expect("user").admin);
    assert!(matches!(
        store.set_admin("user_nope", true, "test".into()),
        Err(Error::NotFound { .. })
    ));
}
