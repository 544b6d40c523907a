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
