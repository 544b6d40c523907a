//! Rotation, rate limits and daily usage counts.

use super::*;

#[test]
fn rotation_copies_the_key_and_ends_the_old_one_after_the_grace_period() {
    let (_dir, store) = open();
    let (team, project) = team_and_project(&*store);
    let expires_at = Some(clock::now_ms() + 10 * 24 * 3600 * 1000);
    let (old, old_raw) = store
        .create_key(
            &NewApiKey {
                project_id: Some(project.id.clone()),
                scopes: vec!["customers:read".into()],
                expires_at,
                ..new_key(&team.id)
            },
            "test".into(),
        )
        .expect("create");
    // Cached before the rotation, so the test also covers the cache's copy.
    assert!(store.lookup_key(&old_raw).expect("lookup").is_some());

    let before = clock::now_ms();
    let rotated = store
        .rotate_key(&team.id, &old.id, 3600, "user_1".into())
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
        .list_audit(&team.id, None, 2)
        .expect("audit")
        .events
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
        store.rotate_key(&team.id, &old.id, 3600, "user_1".into()),
        Err(Error::Invalid {
            field: "key_id",
            ..
        })
    ));
    let again = store
        .rotate_key(&team.id, &new.id, 3600, "user_1".into())
        .expect("rotate the replacement");
    assert_eq!(again.new.expires_at, expires_at);

    // An old key that expires sooner than the grace period keeps its own expiry.
    let soon = clock::now_ms() + 60_000;
    let (short, _) = store
        .create_key(
            &NewApiKey {
                expires_at: Some(soon),
                ..new_key(&team.id)
            },
            "test".into(),
        )
        .expect("create");
    let rotated = store
        .rotate_key(&team.id, &short.id, 3600, "user_1".into())
        .expect("rotate");
    assert_eq!(rotated.old.expires_at, Some(soon));
}

#[test]
fn rotation_with_no_grace_revokes_the_old_key_at_once() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
    let (old, old_raw) = store
        .create_key(&new_key(&team.id), "test".into())
        .expect("create");
    assert!(store.lookup_key(&old_raw).expect("lookup").is_some());
    let rotated = store
        .rotate_key(&team.id, &old.id, 0, "user_1".into())
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
        store.rotate_key(&team.id, &old.id, 0, "user_1".into()),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn rotation_refuses_bad_requests_and_changes_nothing() {
    let (_dir, store, clock) = open_at_manual_time();
    let (team, _) = team_and_project(&*store);
    store
        .create_team(Some("team_b"), "Other", "test".into())
        .expect("team b");
    let (key, raw) = store
        .create_key(&new_key(&team.id), "test".into())
        .expect("create");
    let unchanged = |store: &dyn Storage| {
        assert_eq!(store.list_keys(&team.id).expect("list"), vec![key.clone()]);
        assert_eq!(
            store.lookup_key(&raw).expect("lookup").as_deref(),
            Some(&key)
        );
    };
    // The longest grace period is accepted; one second more is not.
    assert!(matches!(
        store.rotate_key(
            &team.id,
            &key.id,
            MAX_ROTATION_GRACE_SECONDS + 1,
            "u".into()
        ),
        Err(Error::Invalid {
            field: "grace_seconds",
            ..
        })
    ));
    unchanged(&*store);
    assert!(matches!(
        store.rotate_key("team_b", &key.id, 60, "u".into()),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.rotate_key(&team.id, "key_missing", 60, "u".into()),
        Err(Error::NotFound { .. })
    ));
    unchanged(&*store);
    let rotated = store
        .rotate_key(&team.id, &key.id, MAX_ROTATION_GRACE_SECONDS, "u".into())
        .expect("the longest grace period");
    assert!(rotated.old.expires_at.is_some());

    // An expired key has nothing left to keep working.
    let (expired, _) = store
        .create_key(
            &NewApiKey {
                expires_at: Some(clock.now_ms() + 50),
                ..new_key(&team.id)
            },
            "test".into(),
        )
        .expect("create");
    clock.advance(std::time::Duration::from_millis(49));
    store
        .rotate_key(&team.id, &expired.id, 60, "u".into())
        .expect("a millisecond before its expiry it can still rotate");
    let (expired, _) = store
        .create_key(
            &NewApiKey {
                expires_at: Some(clock.now_ms() + 50),
                ..new_key(&team.id)
            },
            "test".into(),
        )
        .expect("create");
    clock.advance(std::time::Duration::from_millis(50));
    assert!(matches!(
        store.rotate_key(&team.id, &expired.id, 60, "u".into()),
        Err(Error::Invalid {
            field: "key_id",
            ..
        })
    ));
}

#[test]
fn rate_limits_are_checked_stored_and_kept_by_rotation() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
    let limited = |limit, window_seconds| NewApiKey {
        rate_limit: Some(RateLimit {
            limit,
            window_seconds,
        }),
        ..new_key(&team.id)
    };
    for (limit, window) in [
        (0, 60),
        (RateLimit::MAX_LIMIT + 1, 60),
        (10, 0),
        (10, RateLimit::MAX_WINDOW_SECONDS + 1),
    ] {
        assert!(
            matches!(
                store.create_key(&limited(limit, window), "test".into()),
                Err(Error::Invalid {
                    field: "rate_limit",
                    ..
                })
            ),
            "{limit}/{window}s"
        );
    }
    assert!(store.list_keys(&team.id).expect("list").is_empty());
    for (limit, window) in [
        (1, 1),
        (RateLimit::MAX_LIMIT, RateLimit::MAX_WINDOW_SECONDS),
    ] {
        let (record, raw) = store
            .create_key(&limited(limit, window), "test".into())
            .expect("create");
        let expected = Some(RateLimit {
            limit,
            window_seconds: window,
        });
        assert_eq!(record.rate_limit, expected);
        assert_eq!(
            store
                .lookup_key(&raw)
                .expect("lookup")
                .expect("found")
                .rate_limit,
            expected
        );
        let rotated = store
            .rotate_key(&team.id, &record.id, 0, "u".into())
            .expect("rotate");
        assert_eq!(rotated.new.rate_limit, expected);
    }
}

#[test]
fn daily_usage_adds_up_per_key_and_day_with_zeros_between() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
    let (a, _) = store
        .create_key(&new_key(&team.id), "test".into())
        .expect("a");
    let (b, _) = store
        .create_key(&new_key(&team.id), "test".into())
        .expect("b");
    let counts = |allowed, denied| DailyUsage {
        allowed,
        denied,
        ..DailyUsage::default()
    };
    let today = 20_000;
    store
        .record_key_usage(&[
            KeyUsage {
                key_id: a.id.clone(),
                last_used_at: None,
                days: vec![(today - 2, counts(5, 1)), (today, counts(2, 0))],
            },
            KeyUsage {
                key_id: b.id.clone(),
                last_used_at: None,
                days: vec![(today, counts(100, 100))],
            },
            // A key that does not exist leaves nothing behind.
            KeyUsage {
                key_id: "key_gone".into(),
                last_used_at: None,
                days: vec![(today, counts(1, 1))],
            },
        ])
        .expect("usage");
    store
        .record_key_usage(&[KeyUsage {
            key_id: a.id.clone(),
            last_used_at: None,
            days: vec![(today, counts(3, 4))],
        }])
        .expect("more usage");
    assert_eq!(
        store.key_usage(&a.id, today, 4).expect("usage"),
        [
            (today - 3, counts(0, 0)),
            (today - 2, counts(5, 1)),
            (today - 1, counts(0, 0)),
            (today, counts(5, 4)),
        ]
    );
    // The window ends where asked: yesterday's view has no trace of today.
    assert_eq!(
        store.key_usage(&a.id, today - 1, 1).expect("usage"),
        [(today - 1, counts(0, 0))]
    );
    assert_eq!(
        store.key_usage(&b.id, today, 1).expect("usage"),
        [(today, counts(100, 100))]
    );
    assert_eq!(
        store.key_usage("key_gone", today, 1).expect("usage"),
        [(today, counts(0, 0))]
    );
    // Revoked keys keep their history.
    store
        .revoke_key(&team.id, &a.id, "test".into())
        .expect("revoke");
    assert_eq!(
        store.key_usage(&a.id, today, 1).expect("usage")[0].1,
        counts(5, 4)
    );

    // Pruning drops the days before the cut and keeps the rest.
    assert_eq!(store.prune_key_usage(today - 1).expect("prune"), 1);
    assert_eq!(
        store.key_usage(&a.id, today, 3).expect("usage")[0].1,
        counts(0, 0)
    );
    assert_eq!(
        store.key_usage(&a.id, today, 1).expect("usage")[0].1,
        counts(5, 4)
    );
    assert_eq!(store.prune_key_usage(today - 1).expect("prune"), 0);
}
