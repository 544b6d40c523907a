//! The audit log: paging, sign-ins, and the migration to per-team keys.

use super::*;

#[test]
fn the_audit_log_pages_one_teams_events_newest_first() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
    let other = store
        .create_team(Some("team_ab"), "Other", "test".into())
        .expect("team");
    let from = Actor::from_address("user_1", "192.0.2.7");
    let mut created = Vec::new();
    for _ in 0..5 {
        let (record, _) = store.create_key(&new_key(&team.id), from).expect("create");
        created.push(record.id);
        // Another team's events in between must never show up in team_a's pages.
        store
            .create_key(&new_key(&other.id), "test".into())
            .expect("create");
    }
    store
        .revoke_key(&team.id, &created[0], from)
        .expect("revoke");

    // team_a: team.created, project.created, 5 × key.created, key.revoked = 8 events.
    let first = store.list_audit(&team.id, None, 3).expect("page");
    assert_eq!(first.events.len(), 3);
    assert_eq!(first.events[0].action, "key.revoked");
    assert_eq!(first.events[0].target, created[0]);
    assert_eq!(first.events[0].actor, "user_1");
    assert_eq!(first.events[0].source.as_deref(), Some("192.0.2.7"));
    let mut all = first.events.clone();
    let mut before = first.next_before;
    while let Some(cursor) = before {
        let page = store.list_audit(&team.id, Some(cursor), 3).expect("page");
        assert!(page.events.len() <= 3);
        all.extend(page.events);
        before = page.next_before;
    }
    assert_eq!(all.len(), 8, "every event exactly once: {all:?}");
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    assert!(all.iter().all(|e| e.team_id.as_deref() == Some("team_a")));
    assert_eq!(all.last().map(|e| e.action.as_str()), Some("team.created"));
    // The offline (CLI-style) events have no source.
    assert_eq!(all.last().and_then(|e| e.source.clone()), None);

    // A page of exactly the rest has no next cursor; limits are clamped to 1..=MAX_AUDIT_PAGE.
    let whole = store.list_audit(&team.id, None, 8).expect("page");
    assert_eq!((whole.events.len(), whole.next_before), (8, None));
    assert_eq!(
        store
            .list_audit(&team.id, None, 0)
            .expect("page")
            .events
            .len(),
        1
    );
    assert_eq!(
        store
            .list_audit(&team.id, None, 10_000)
            .expect("page")
            .events
            .len(),
        8
    );
    assert!(
        store
            .list_audit("team_none", None, 10)
            .expect("page")
            .events
            .is_empty()
    );
}

#[test]
fn sign_ins_are_recorded_in_each_of_the_accounts_teams_without_the_password() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
    let second = store
        .create_team(Some("team_b"), "Second", "test".into())
        .expect("team");
    let user = store
        .create_user(
            &NewUser {
                email: "ann@example.com".into(),
                password: "correct horse battery".into(),
                team_id: team.id.clone(),
                role: Role::Owner,
            },
            "test".into(),
        )
        .expect("user");
    store
        .set_membership(&second.id, &user.id, Role::Member, "test".into())
        .expect("member");

    store
        .record_sign_in("Ann@Example.com ", true, "198.51.100.1")
        .expect("record");
    store
        .record_sign_in("ann@example.com", false, "198.51.100.2")
        .expect("record");
    // An unknown account (or a password typed into the email field) is kept out of every team.
    store
        .record_sign_in("correct horse battery", false, "198.51.100.3")
        .expect("record");

    for team_id in [&team.id, &second.id] {
        let events = store.list_audit(team_id, None, 2).expect("page").events;
        let summary: Vec<(&str, &str, &str, Option<&str>)> = events
            .iter()
            .map(|e| {
                (
                    e.action.as_str(),
                    e.actor.as_str(),
                    e.target.as_str(),
                    e.source.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "auth.sign_in_failed",
                    ANONYMOUS,
                    user.id.as_str(),
                    Some("198.51.100.2")
                ),
                (
                    "auth.signed_in",
                    user.id.as_str(),
                    user.id.as_str(),
                    Some("198.51.100.1")
                ),
            ]
        );
    }
    let stored = String::from_utf8_lossy(&everything_stored(&*store)).into_owned();
    assert!(
        stored.contains("auth.signed_in"),
        "the scan sees the audit log"
    );
    assert!(
        !stored.contains("correct horse"),
        "a password is stored in clear"
    );
}

#[test]
fn events_carry_what_changed_and_the_names_of_what_they_touched() {
    let (_dir, store) = open();
    let (team, project) = team_and_project(&*store);
    let (key, raw) = store
        .create_key(&NewApiKey::new(&team.id, "ci"), "user_a".into())
        .expect("create");
    store
        .update_key(
            &team.id,
            &key.id,
            &KeyChanges {
                name: Some("ci (old)".into()),
                rate_limit: Some(Some(RateLimit {
                    limit: 10,
                    window_seconds: 60,
                })),
                expires_at: Some(None),
                enabled: Some(false),
                ..KeyChanges::default()
            },
            "user_a".into(),
        )
        .expect("update");
    let rotated = store
        .rotate_key(&team.id, &key.id, 600, "user_a".into())
        .expect("rotate");
    store
        .revoke_key(&team.id, &rotated.new.id, "user_a".into())
        .expect("revoke");
    store
        .rename_project(&team.id, &project.id, "Shop", "user_a".into())
        .expect("rename");

    let events = store.list_audit(&team.id, None, 50).expect("audit").events;
    let details = |action: &str, target: &str| {
        events
            .iter()
            .find(|e| e.action == action && e.target == target)
            .unwrap_or_else(|| panic!("no {action} of {target}"))
            .details
            .clone()
            .unwrap_or_else(|| panic!("{action} has no details"))
    };
    assert_eq!(
        details("key.created", &key.id),
        serde_json::json!({"name": "ci", "prefix": key.prefix})
    );
    assert_eq!(
        details("key.updated", &key.id),
        serde_json::json!({"changed": {
            "name": "ci (old)",
            "expiresAt": null,
            "rateLimit": {"limit": 10, "windowSeconds": 60},
            "enabled": false,
        }})
    );
    assert_eq!(
        details("key.rotated", &key.id),
        serde_json::json!({"newKeyId": rotated.new.id, "gracePeriodSeconds": 600})
    );
    assert_eq!(
        details("key.created", &rotated.new.id),
        serde_json::json!({"prefix": rotated.new.prefix, "rotatedFrom": key.id})
    );
    assert_eq!(
        details("key.revoked", &rotated.new.id),
        serde_json::json!({"name": "ci (old)"})
    );
    assert_eq!(
        details("project.renamed", &project.id),
        serde_json::json!({"from": "Web", "name": "Shop"})
    );
    // No secret in any of it.
    let all = serde_json::to_string(&events.iter().map(|e| &e.details).collect::<Vec<_>>())
        .expect("json");
    assert!(!all.contains(&raw[3..]) && !all.contains(&rotated.raw_key[3..]));
    assert!(!all.contains(&key.hash));
}
