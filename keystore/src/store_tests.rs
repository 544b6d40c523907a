//! Behaviour of the store as a whole.

use crate::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    (dir, store)
}

fn team_and_project(store: &Store) -> (Team, Project) {
    let team = store
        .create_team(Some("team_a"), "Acme", "test")
        .expect("team");
    let project = store
        .create_project(&team.id, Some("proj_a"), "Web", "test")
        .expect("project");
    (team, project)
}

fn new_key(team: &str) -> NewApiKey {
    NewApiKey {
        team_id: team.into(),
        project_id: None,
        name: "ci".into(),
        scopes: vec![],
        expires_at: None,
        actor: "test".into(),
    }
}

#[test]
fn key_lifecycle_create_lookup_list_revoke() {
    let (_dir, store) = open();
    let (team, project) = team_and_project(&store);
    let (record, raw) = store
        .create_key(&NewApiKey {
            project_id: Some(project.id.clone()),
            scopes: vec![
                "customers:read".into(),
                "customers:read".into(),
                "products:write".into(),
            ],
            ..new_key(&team.id)
        })
        .expect("create");
    assert_eq!(apikey::check_format(&raw), Ok(()));
    assert_eq!(record.prefix, &raw[..7]);
    assert_eq!(record.hash, hex::encode(apikey::hash(&raw)));
    assert_eq!(
        record.scopes,
        vec!["customers:read", "products:write"],
        "deduplicated, order kept"
    );
    assert_eq!(
        store.lookup_key(&raw).expect("lookup").as_deref(),
        Some(&record)
    );
    assert_eq!(
        store.list_keys(&team.id).expect("list"),
        vec![record.clone()]
    );

    // The raw key is stored nowhere: scan every tree for it.
    for name in store.tree_names() {
        for entry in store
            .raw_tree(std::str::from_utf8(&name).expect("utf8"))
            .iter()
        {
            let (k, v) = entry.expect("entry");
            let needle = &raw.as_bytes()[3..];
            assert!(!k.windows(needle.len()).any(|w| w == needle));
            assert!(!v.windows(needle.len()).any(|w| w == needle));
        }
    }

    let revoked = store
        .revoke_key(&team.id, &record.id, "test")
        .expect("revoke");
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.lookup_key(&raw).expect("lookup"), None);
    assert!(store.list_keys(&team.id).expect("list").is_empty());
    assert!(matches!(
        store.revoke_key(&team.id, &record.id, "test"),
        Err(Error::NotFound { .. })
    ));
    let actions: Vec<String> = store
        .list_audit(Some(&team.id), 10)
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            "key.revoked",
            "key.created",
            "project.created",
            "team.created"
        ]
    );
}

#[test]
fn revoke_is_refused_for_another_teams_key_and_unknown_ids() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    let other = store.create_team(None, "Other", "test").expect("team");
    let (record, raw) = store.create_key(&new_key(&team.id)).expect("create");
    assert!(matches!(
        store.revoke_key(&other.id, &record.id, "test"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.revoke_key(&team.id, "key_nope", "test"),
        Err(Error::NotFound { .. })
    ));
    assert!(store.get_key(&other.id, &record.id).expect("get").is_none());
    assert!(
        store.lookup_key(&raw).expect("lookup").is_some(),
        "still active"
    );
}

#[test]
fn key_validation_changes_nothing_on_bad_input() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    let other = store
        .create_team(Some("team_b"), "B", "test")
        .expect("team");
    store
        .create_project(&other.id, Some("proj_b"), "B", "test")
        .expect("project");
    let cases: Vec<(NewApiKey, &str)> = vec![
        (
            NewApiKey {
                name: " ".into(),
                ..new_key(&team.id)
            },
            "name",
        ),
        (
            NewApiKey {
                name: "x".repeat(MAX_NAME_CHARS + 1),
                ..new_key(&team.id)
            },
            "name",
        ),
        (
            NewApiKey {
                project_id: Some("proj_b".into()),
                ..new_key(&team.id)
            },
            "projectId",
        ),
        (
            NewApiKey {
                scopes: vec!["Not A Scope".into()],
                ..new_key(&team.id)
            },
            "scopes",
        ),
        (
            NewApiKey {
                scopes: (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect(),
                ..new_key(&team.id)
            },
            "scopes",
        ),
        (
            NewApiKey {
                expires_at: Some(clock::now_ms() - 1),
                ..new_key(&team.id)
            },
            "expiresAt",
        ),
    ];
    for (new, field) in cases {
        match store.create_key(&new) {
            Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
    assert!(matches!(
        store.create_key(&new_key("team_nope")),
        Err(Error::NotFound { .. })
    ));
    assert!(store.list_keys(&team.id).expect("list").is_empty());
    // Within the limits: exactly MAX_SCOPES scopes and a 100-character name are fine.
    let ok = NewApiKey {
        name: "x".repeat(MAX_NAME_CHARS),
        scopes: (0..MAX_SCOPES).map(|i| format!("s{i}")).collect(),
        expires_at: Some(clock::now_ms() + 60_000),
        ..new_key(&team.id)
    };
    store.create_key(&ok).expect("within limits");
}

#[test]
fn expiry_is_reported_by_the_record() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    let at = clock::now_ms() + 60_000;
    let (record, _) = store
        .create_key(&NewApiKey {
            expires_at: Some(at),
            ..new_key(&team.id)
        })
        .expect("create");
    assert!(!record.is_expired(at - 1));
    assert!(record.is_expired(at));
}

#[test]
fn usage_batches_update_last_used_but_never_resurrect() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    let (a, raw_a) = store.create_key(&new_key(&team.id)).expect("a");
    let (b, _) = store.create_key(&new_key(&team.id)).expect("b");
    store.revoke_key(&team.id, &b.id, "test").expect("revoke");
    store
        .record_key_usage(&[
            (a.id.clone(), 500),
            (b.id.clone(), 500),
            ("key_gone".into(), 1),
        ])
        .expect("usage");
    store
        .record_key_usage(&[(a.id.clone(), 100)])
        .expect("older use");
    assert_eq!(
        store
            .lookup_key(&raw_a)
            .expect("lookup")
            .expect("active")
            .last_used_at,
        Some(500)
    );
    let b_after = store
        .get_key(&team.id, &b.id)
        .expect("get")
        .expect("exists");
    assert_eq!(b_after.last_used_at, None);
    assert!(b_after.revoked_at.is_some());
}

#[test]
fn teams_projects_and_ids() {
    let (_dir, store) = open();
    assert!(store.is_empty().expect("empty"));
    let (team, project) = team_and_project(&store);
    assert!(!store.is_empty().expect("not empty"));
    assert!(matches!(
        store.create_team(Some("team_a"), "Again", "t"),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.create_team(Some("team/../x"), "Bad", "t"),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        store.create_project("team_nope", None, "P", "t"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.create_project(&team.id, Some("proj_a"), "P", "t"),
        Err(Error::AlreadyExists { .. })
    ));
    let generated = store
        .create_project(&team.id, None, "Second", "t")
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
    let t2 = store.create_team(Some("team_a2"), "A2", "t").expect("team");
    assert!(store.list_projects(&t2.id).expect("list").is_empty());
}

#[test]
fn users_passwords_memberships_sessions() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    let new = NewUser {
        email: "Ada@Example.com".into(),
        password: "correct horse".into(),
        team_id: team.id.clone(),
        role: Role::Owner,
    };
    let user = store.create_user(&new, "test").expect("user");
    assert_eq!(user.email, "ada@example.com");
    assert!(user.password_hash.starts_with("$argon2id$"));
    assert!(matches!(
        store.create_user(&new, "test"),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.create_user(
            &NewUser {
                email: "b@x.io".into(),
                password: "short".into(),
                ..new.clone()
            },
            "t"
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
            "t"
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
    let other = store.create_team(None, "Other", "t").expect("team");
    assert_eq!(store.membership(&other.id, &user.id).expect("m"), None);
    store
        .set_membership(&other.id, &user.id, Role::Member, "t")
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
    assert_eq!(store.purge_sessions(|_| true).expect("purge"), 1);
}

#[test]
fn team_policies_are_stored_by_hash_and_collected() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    assert!(store.get_team_policy(&team.id).expect("get").is_none());
    let meta = store.put_team_policy(&team.id, b"first", "t").expect("put");
    assert_eq!(
        store.get_team_policy(&team.id).expect("get"),
        Some((meta, b"first".to_vec()))
    );
    store
        .put_team_policy(&team.id, b"second", "t")
        .expect("put");
    assert_eq!(
        store.raw_tree("policy_blobs").len(),
        1,
        "the replaced blob is collected"
    );
    assert!(store.delete_team_policy(&team.id, "t").expect("delete"));
    assert!(
        !store
            .delete_team_policy(&team.id, "t")
            .expect("delete again")
    );
    assert!(store.get_team_policy(&team.id).expect("get").is_none());
    assert_eq!(store.raw_tree("policy_blobs").len(), 0);
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    let (record, raw) = store.create_key(&new_key(&team.id)).expect("create");
    let keys = store.raw_tree("keys");
    let good = keys
        .get(record.id.as_bytes())
        .expect("get")
        .expect("present");
    for cut in [0, 1, good.len() / 2, good.len() - 1] {
        keys.insert(record.id.as_bytes(), &good[..cut])
            .expect("insert");
        assert!(
            matches!(store.lookup_key(&raw), Err(Error::Corruption { .. })),
            "cut {cut}"
        );
        assert!(matches!(
            store.list_keys(&team.id),
            Err(Error::Corruption { .. })
        ));
        assert!(matches!(
            store.revoke_key(&team.id, &record.id, "t"),
            Err(Error::Corruption { .. })
        ));
    }
    keys.remove(record.id.as_bytes()).expect("remove");
    assert!(
        matches!(store.lookup_key(&raw), Err(Error::Corruption { .. })),
        "dangling index"
    );
    store
        .raw_tree("teams")
        .insert("team_x", &b"\x01not json"[..])
        .expect("insert");
    assert!(matches!(
        store.get_team("team_x"),
        Err(Error::Corruption { .. })
    ));
    assert!(matches!(store.list_teams(), Err(Error::Corruption { .. })));
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_clearly() {
    let (dir, _store) = open();
    match Store::open(dir.path()) {
        Err(e @ Error::Locked(_)) => assert!(
            e.to_string()
                .contains("in use by another billstack process")
        ),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn the_lookup_cache_never_outlives_a_revocation() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    let (record, raw) = store.create_key(&new_key(&team.id)).expect("create");
    // Warm the cache, then revoke: the next lookup must miss.
    assert!(store.lookup_key(&raw).expect("lookup").is_some());
    assert!(store.lookup_key(&raw).expect("cached lookup").is_some());
    store
        .revoke_key(&team.id, &record.id, "test")
        .expect("revoke");
    assert!(store.lookup_key(&raw).expect("lookup").is_none());

    // Lookups racing revocations from other threads: once revoke_key has returned, no lookup
    // that starts afterwards may find the key.
    let keys: Vec<(KeyRecord, String)> = (0..50)
        .map(|_| store.create_key(&new_key(&team.id)).expect("create"))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..20 {
                    for (_, raw) in &keys {
                        let _ = store.lookup_key(raw).expect("lookup");
                    }
                }
            });
        }
        for (record, raw) in &keys {
            store
                .revoke_key(&team.id, &record.id, "test")
                .expect("revoke");
            assert!(
                store.lookup_key(raw).expect("lookup").is_none(),
                "{} found after revocation",
                record.id
            );
        }
    });
    for (_, raw) in &keys {
        assert!(store.lookup_key(raw).expect("lookup").is_none());
    }
}

#[test]
fn without_the_lookup_cache_lookups_and_revocation_still_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(
        dir.path(),
        &StoreOptions {
            key_cache_capacity: 0,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let (team, _) = team_and_project(&store);
    let (record, raw) = store.create_key(&new_key(&team.id)).expect("create");
    for _ in 0..3 {
        assert_eq!(
            store.lookup_key(&raw).expect("lookup").as_deref(),
            Some(&record)
        );
    }
    store
        .revoke_key(&team.id, &record.id, "test")
        .expect("revoke");
    assert_eq!(store.lookup_key(&raw).expect("lookup"), None);
}

#[test]
fn a_bulk_load_without_durable_writes_is_kept_after_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raws: Vec<String> = {
        let store = Store::open_with(
            dir.path(),
            &StoreOptions {
                durable_writes: false,
                ..StoreOptions::default()
            },
        )
        .expect("open");
        let (team, _) = team_and_project(&store);
        let raws = (0..100)
            .map(|_| store.create_key(&new_key(&team.id)).expect("create").1)
            .collect();
        store.flush().expect("flush");
        raws
    };
    let store = Store::open(dir.path()).expect("reopen");
    for raw in &raws {
        assert!(store.lookup_key(raw).expect("lookup").is_some());
    }
}

#[test]
fn rotation_copies_the_key_and_ends_the_old_one_after_the_grace_period() {
    let (_dir, store) = open();
    let (team, project) = team_and_project(&store);
    let expires_at = Some(clock::now_ms() + 10 * 24 * 3600 * 1000);
    let (old, old_raw) = store
        .create_key(&NewApiKey {
            project_id: Some(project.id.clone()),
            scopes: vec!["customers:read".into()],
            expires_at,
            ..new_key(&team.id)
        })
        .expect("create");
    // Cached before the rotation, so the test also covers the cache's copy.
    assert!(store.lookup_key(&old_raw).expect("lookup").is_some());

    let before = clock::now_ms();
    let rotated = store
        .rotate_key(&team.id, &old.id, 3600, "user_1")
        .expect("rotate");
    let new = &rotated.new;
    assert_ne!(new.id, old.id);
    assert_ne!(rotated.raw_key, old_raw);
    assert_eq!(apikey::check_format(&rotated.raw_key), Ok(()));
    assert_eq!(
        (&new.name, &new.project_id, &new.scopes, new.expires_at),
        (&old.name, &old.project_id, &old.scopes, old.expires_at)
    );
    // The old key now ends an hour from now (sooner than its own expiry), and still works.
    let ends = rotated.old.expires_at.expect("old key ends");
    assert!(ends >= before + 3_600_000 && ends <= clock::now_ms() + 3_600_000);
    let looked_up = store
        .lookup_key(&old_raw)
        .expect("lookup")
        .expect("old works");
    assert_eq!(
        looked_up.expires_at,
        Some(ends),
        "the cache holds the new end"
    );
    assert_eq!(
        store
            .lookup_key(&rotated.raw_key)
            .expect("lookup")
            .expect("new works")
            .id,
        new.id
    );
    // Both are listed until the old one is revoked; the audit log has both events.
    assert_eq!(store.list_keys(&team.id).expect("list").len(), 2);
    let actions: Vec<(String, String)> = store
        .list_audit(Some(&team.id), 2)
        .expect("audit")
        .into_iter()
        .map(|e| (e.action, e.target))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("key.created".to_string(), new.id.clone()),
            ("key.rotated".to_string(), old.id.clone())
        ]
    );

    // The old key now ends with the grace period, which is not its own expiry to hand on:
    // it cannot be rotated again, and its replacement can, keeping the original expiry.
    assert_eq!(rotated.old.rotated_to.as_deref(), Some(new.id.as_str()));
    assert!(matches!(
        store.rotate_key(&team.id, &old.id, 3600, "user_1"),
        Err(Error::Invalid { field: "keyId", .. })
    ));
    let again = store
        .rotate_key(&team.id, &new.id, 3600, "user_1")
        .expect("rotate the replacement");
    assert_eq!(again.new.expires_at, expires_at);

    // An old key that expires sooner than the grace period keeps its own expiry.
    let soon = clock::now_ms() + 60_000;
    let (short, _) = store
        .create_key(&NewApiKey {
            expires_at: Some(soon),
            ..new_key(&team.id)
        })
        .expect("create");
    let rotated = store
        .rotate_key(&team.id, &short.id, 3600, "user_1")
        .expect("rotate");
    assert_eq!(rotated.old.expires_at, Some(soon));
}

#[test]
fn rotation_with_no_grace_revokes_the_old_key_at_once() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    let (old, old_raw) = store.create_key(&new_key(&team.id)).expect("create");
    assert!(store.lookup_key(&old_raw).expect("lookup").is_some());
    let rotated = store
        .rotate_key(&team.id, &old.id, 0, "user_1")
        .expect("rotate");
    assert!(rotated.old.revoked_at.is_some());
    assert_eq!(store.lookup_key(&old_raw).expect("lookup"), None);
    assert!(
        store
            .lookup_key(&rotated.raw_key)
            .expect("lookup")
            .is_some()
    );
    let listed: Vec<String> = store
        .list_keys(&team.id)
        .expect("list")
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, vec![rotated.new.id.clone()]);
    // A revoked key cannot be rotated again.
    assert!(matches!(
        store.rotate_key(&team.id, &old.id, 0, "user_1"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn rotation_refuses_bad_requests_and_changes_nothing() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    store
        .create_team(Some("team_b"), "Other", "test")
        .expect("team b");
    let (key, raw) = store.create_key(&new_key(&team.id)).expect("create");
    let unchanged = |store: &Store| {
        assert_eq!(store.list_keys(&team.id).expect("list"), vec![key.clone()]);
        assert_eq!(
            store.lookup_key(&raw).expect("lookup").as_deref(),
            Some(&key)
        );
    };
    // The longest grace period is accepted; one second more is not.
    assert!(matches!(
        store.rotate_key(&team.id, &key.id, MAX_ROTATION_GRACE_SECONDS + 1, "u"),
        Err(Error::Invalid {
            field: "gracePeriodSeconds",
            ..
        })
    ));
    unchanged(&store);
    assert!(matches!(
        store.rotate_key("team_b", &key.id, 60, "u"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.rotate_key(&team.id, "key_missing", 60, "u"),
        Err(Error::NotFound { .. })
    ));
    unchanged(&store);
    let rotated = store
        .rotate_key(&team.id, &key.id, MAX_ROTATION_GRACE_SECONDS, "u")
        .expect("the longest grace period");
    assert!(rotated.old.expires_at.is_some());

    // An expired key has nothing left to keep working.
    let (expired, _) = store
        .create_key(&NewApiKey {
            expires_at: Some(clock::now_ms() + 50),
            ..new_key(&team.id)
        })
        .expect("create");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while clock::now_ms() <= expired.expires_at.expect("expiry") {
        assert!(std::time::Instant::now() < deadline, "the clock stopped");
        std::thread::yield_now();
    }
    assert!(matches!(
        store.rotate_key(&team.id, &expired.id, 60, "u"),
        Err(Error::Invalid { field: "keyId", .. })
    ));
}
