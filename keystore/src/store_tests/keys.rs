//! API keys: the life cycle, validation, expiry, usage batches and the lookup cache.

use super::*;

#[test]
fn key_lifecycle_create_lookup_list_revoke() {
    let (_dir, store) = open();
    let (team, project) = team_and_project(&*store);
    let (record, raw) = store
        .create_key(
            &NewApiKey {
                project_id: Some(project.id.clone()),
                scopes: vec![
                    "customers:read".into(),
                    "customers:read".into(),
                    "products:write".into(),
                ],
                ..new_key(&team.id)
            },
            "test".into(),
        )
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

    // The raw key is stored nowhere: scan a copy of every record for it.
    let needle = &raw.as_bytes()[3..];
    let stored = everything_stored(&*store);
    assert!(
        stored
            .windows(record.id.len())
            .any(|w| w == record.id.as_bytes()),
        "the scan sees the keys"
    );
    assert!(!stored.windows(needle.len()).any(|w| w == needle));

    let revoked = store
        .revoke_key(&team.id, &record.id, "test".into())
        .expect("revoke");
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.lookup_key(&raw).expect("lookup"), None);
    assert!(store.list_keys(&team.id).expect("list").is_empty());
    assert!(matches!(
        store.revoke_key(&team.id, &record.id, "test".into()),
        Err(Error::NotFound { .. })
    ));
    let actions: Vec<String> = store
        .list_audit(&team.id, None, 10)
        .expect("audit")
        .events
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
    let (team, _) = team_and_project(&*store);
    let other = store
        .create_team(None, "Other", "test".into())
        .expect("team");
    let (record, raw) = store
        .create_key(&new_key(&team.id), "test".into())
        .expect("create");
    assert!(matches!(
        store.revoke_key(&other.id, &record.id, "test".into()),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.revoke_key(&team.id, "key_nope", "test".into()),
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
    let (team, _) = team_and_project(&*store);
    let other = store
        .create_team(Some("team_b"), "B", "test".into())
        .expect("team");
    store
        .create_project(&other.id, Some("proj_b"), "B", "test".into())
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
            "project_id",
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
            "expires_at",
        ),
    ];
    for (new, field) in cases {
        match store.create_key(&new, "test".into()) {
            Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
    assert!(matches!(
        store.create_key(&new_key("team_nope"), "test".into()),
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
    store.create_key(&ok, "test".into()).expect("within limits");
}

#[test]
fn expiry_is_reported_by_the_record() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
    let at = clock::now_ms() + 60_000;
    let (record, _) = store
        .create_key(
            &NewApiKey {
                expires_at: Some(at),
                ..new_key(&team.id)
            },
            "test".into(),
        )
        .expect("create");
    assert!(!record.is_expired(at - 1));
    assert!(record.is_expired(at));
}

#[test]
fn usage_batches_update_last_used_but_never_resurrect() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
    let (a, raw_a) = store
        .create_key(&new_key(&team.id), "test".into())
        .expect("a");
    let (b, _) = store
        .create_key(&new_key(&team.id), "test".into())
        .expect("b");
    store
        .revoke_key(&team.id, &b.id, "test".into())
        .expect("revoke");
    let used = |key_id: &str, at| KeyUsage {
        key_id: key_id.into(),
        last_used_at: Some(at),
        days: vec![],
    };
    store
        .record_key_usage(&[used(&a.id, 500), used(&b.id, 500), used("key_gone", 1)])
        .expect("usage");
    store
        .record_key_usage(&[used(&a.id, 100)])
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
fn the_lookup_cache_never_outlives_a_revocation() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
    let (record, raw) = store
        .create_key(&new_key(&team.id), "test".into())
        .expect("create");
    // Warm the cache, then revoke: the next lookup must miss.
    assert!(store.lookup_key(&raw).expect("lookup").is_some());
    assert!(store.lookup_key(&raw).expect("cached lookup").is_some());
    store
        .revoke_key(&team.id, &record.id, "test".into())
        .expect("revoke");
    assert!(store.lookup_key(&raw).expect("lookup").is_none());

    // Lookups racing revocations from other threads: once revoke_key has returned, no lookup
    // that starts afterwards may find the key.
    let keys: Vec<(KeyRecord, String)> = (0..50)
        .map(|_| {
            store
                .create_key(&new_key(&team.id), "test".into())
                .expect("create")
        })
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
                .revoke_key(&team.id, &record.id, "test".into())
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
fn an_update_changes_only_what_it_names_and_every_lookup_sees_it_at_once() {
    let (_dir, store, clock) = open_at_manual_time();
    let (team, _) = team_and_project(&*store);
    let (key, raw) = store
        .create_key(
            &NewApiKey {
                scopes: vec!["customers:read".into()],
                ..new_key(&team.id)
            },
            "user_1".into(),
        )
        .expect("create");
    assert_eq!(key.created_by.as_deref(), Some("user_1"));
    // Warm the cache, then change the key: the next lookup must not see the old record.
    assert_eq!(
        store
            .lookup_key(&raw)
            .expect("lookup")
            .expect("key")
            .scopes
            .len(),
        1
    );
    let changes = KeyChanges {
        name: Some(" renamed ".into()),
        scopes: Some(vec!["a:b".into(), "a:b".into(), "c".into()]),
        rate_limit: Some(Some(RateLimit {
            limit: 5,
            window_seconds: 60,
        })),
        enabled: Some(false),
        ..KeyChanges::default()
    };
    let updated = store
        .update_key(&team.id, &key.id, &changes, "user_1".into())
        .expect("update");
    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.scopes, ["a:b", "c"]);
    assert!(updated.disabled);
    assert_eq!(updated.expires_at, None, "untouched");
    let seen = store.lookup_key(&raw).expect("lookup").expect("key");
    assert_eq!(*seen, updated, "no stale cache entry");
    // Bad input changes nothing.
    for (bad, field) in [
        (
            KeyChanges {
                name: Some(" ".into()),
                ..KeyChanges::default()
            },
            "name",
        ),
        (
            KeyChanges {
                expires_at: Some(Some(clock.now_ms())),
                ..KeyChanges::default()
            },
            "expires_at",
        ),
        (
            KeyChanges {
                scopes: Some(vec!["Not A Scope".into()]),
                ..KeyChanges::default()
            },
            "scopes",
        ),
        (
            KeyChanges {
                rate_limit: Some(Some(RateLimit {
                    limit: 0,
                    window_seconds: 1,
                })),
                ..KeyChanges::default()
            },
            "rate_limit",
        ),
    ] {
        match store.update_key(&team.id, &key.id, &bad, "u".into()) {
            Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(
        *store.lookup_key(&raw).expect("lookup").expect("key"),
        updated
    );
    // Clearing: `Some(None)` removes the budget; switching back on.
    let cleared = store
        .update_key(
            &team.id,
            &key.id,
            &KeyChanges {
                rate_limit: Some(None),
                enabled: Some(true),
                expires_at: Some(Some(clock.now_ms() + 1)),
                ..KeyChanges::default()
            },
            "u".into(),
        )
        .expect("clear");
    assert_eq!(cleared.rate_limit, None);
    assert!(!cleared.disabled);
    // Another team's, unknown and revoked keys are not found.
    assert!(matches!(
        store.update_key("team_nope", &key.id, &KeyChanges::default(), "u".into()),
        Err(Error::NotFound { .. })
    ));
    store
        .revoke_key(&team.id, &key.id, "u".into())
        .expect("revoke");
    assert!(matches!(
        store.update_key(&team.id, &key.id, &KeyChanges::default(), "u".into()),
        Err(Error::NotFound { .. })
    ));
}
