//! Behaviour of the store as a whole.

use crate::store::AUDIT_KEYS_MIGRATED;
use crate::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    (dir, store)
}

fn team_and_project(store: &Store) -> (Team, Project) {
    let team = store
        .create_team(Some("team_a"), "Acme", "test".into())
        .expect("team");
    let project = store
        .create_project(&team.id, Some("proj_a"), "Web", "test".into())
        .expect("project");
    (team, project)
}

fn new_key(team: &str) -> NewApiKey {
    NewApiKey::new(team, "ci", "test")
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
    let (team, _) = team_and_project(&store);
    let other = store
        .create_team(None, "Other", "test".into())
        .expect("team");
    let (record, raw) = store.create_key(&new_key(&team.id)).expect("create");
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
    let (team, _) = team_and_project(&store);
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
fn teams_projects_and_ids() {
    let (_dir, store) = open();
    assert!(store.is_empty().expect("empty"));
    let (team, project) = team_and_project(&store);
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
    let (team, _) = team_and_project(&store);
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
    assert_eq!(store.purge_sessions(|_| true).expect("purge"), 1);
}

#[test]
fn team_policies_are_stored_by_hash_and_collected() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    assert!(store.get_team_policy(&team.id).expect("get").is_none());
    let meta = store
        .put_team_policy(&team.id, b"first", "t".into())
        .expect("put");
    assert_eq!(
        store.get_team_policy(&team.id).expect("get"),
        Some((meta, b"first".to_vec()))
    );
    store
        .put_team_policy(&team.id, b"second", "t".into())
        .expect("put");
    assert_eq!(
        store.stored_policy_blobs().expect("list").len(),
        1,
        "the replaced blob is collected"
    );
    assert!(
        store
            .delete_team_policy(&team.id, "t".into())
            .expect("delete")
    );
    assert!(
        !store
            .delete_team_policy(&team.id, "t".into())
            .expect("delete again")
    );
    assert!(store.get_team_policy(&team.id).expect("get").is_none());
    assert!(store.stored_policy_blobs().expect("list").is_empty());
}

/// Total bytes of the files below `dir`.
fn disk_usage(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("entry");
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                disk_usage(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// Within the bound: a team that uploads many distinct large plugins keeps one; its data
/// directory does not grow with the uploads, and after a reset and a reopen holds none. (In
/// sled, 8 uploads of 31 MiB left 279 MiB behind, every byte of it after the reset.)
#[test]
fn many_large_uploads_leave_one_plugin_on_disk_and_none_after_reset() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (team, _) = team_and_project(&store);
    let other = store
        .create_team(Some("team_b"), "B", "test".into())
        .expect("team");
    store
        .put_team_policy(&other.id, &vec![0xbb; 2 * MIB], "t".into())
        .expect("another team's plugin");
    let baseline = disk_usage(dir.path());
    for i in 0..8u8 {
        let mut plugin = vec![0x5a; 4 * MIB];
        plugin[0] = i;
        store
            .put_team_policy(&team.id, &plugin, "t".into())
            .expect("put");
        assert_eq!(store.stored_policy_blobs().expect("list").len(), 2);
    }
    let after_uploads = disk_usage(dir.path());
    assert!(
        after_uploads < baseline + 6 * MIB as u64,
        "8 × 4 MiB uploads grew the store from {baseline} to {after_uploads} bytes"
    );
    store
        .delete_team_policy(&team.id, "t".into())
        .expect("reset");
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(
        store.stored_policy_blobs().expect("list").len(),
        1,
        "team_b's"
    );
    assert!(
        disk_usage(dir.path()) < baseline + MIB as u64,
        "the reset team's plugin is gone from disk"
    );
    assert!(store.get_team_policy(&other.id).expect("get").is_some());
}

/// A store written by an earlier version kept policy bytes in sled: opening it moves them to
/// files, once, and the policy reads back the same.
#[test]
fn policy_blobs_kept_in_sled_move_to_files_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = b"an old plugin".to_vec();
    {
        let store = Store::open(dir.path()).expect("open");
        let (team, _) = team_and_project(&store);
        let meta = store
            .put_team_policy(&team.id, &plugin, "t".into())
            .expect("put");
        // Put it back the way earlier versions stored it.
        store
            .raw_tree(crate::store::LEGACY_POLICY_BLOBS)
            .insert(meta.sha256.as_bytes(), plugin.as_slice())
            .expect("legacy tree");
        std::fs::remove_dir_all(dir.path().join("policies")).expect("no files");
        store.flush().expect("flush");
    }
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(
        store
            .get_team_policy("team_a")
            .expect("get")
            .map(|(_, b)| b),
        Some(plugin)
    );
    assert!(
        !store
            .tree_names()
            .iter()
            .any(|n| &n[..] == crate::store::LEGACY_POLICY_BLOBS.as_bytes()),
        "the sled tree is gone"
    );
}

/// A backup carries policy bytes, and restore puts them back as files.
#[test]
fn backups_carry_policy_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("src")).expect("open");
    let (team, _) = team_and_project(&store);
    store
        .put_team_policy(&team.id, b"the team's plugin", "t".into())
        .expect("put");
    let mut file = Vec::new();
    store.backup_to(&mut file).expect("backup");
    let target = dir.path().join("restored");
    Store::restore_from(&target, || Ok(file.as_slice())).expect("restore");
    let restored = Store::open(&target).expect("open");
    assert_eq!(
        restored
            .get_team_policy(&team.id)
            .expect("get")
            .map(|(_, b)| b),
        Some(b"the team's plugin".to_vec())
    );
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
            store.revoke_key(&team.id, &record.id, "t".into()),
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
        .revoke_key(&team.id, &record.id, "test".into())
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
        .revoke_key(&team.id, &record.id, "test".into())
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
        Err(Error::Invalid { field: "keyId", .. })
    ));
    let again = store
        .rotate_key(&team.id, &new.id, 3600, "user_1".into())
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
        .rotate_key(&team.id, &short.id, 3600, "user_1".into())
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
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    store
        .create_team(Some("team_b"), "Other", "test".into())
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
        store.rotate_key(
            &team.id,
            &key.id,
            MAX_ROTATION_GRACE_SECONDS + 1,
            "u".into()
        ),
        Err(Error::Invalid {
            field: "gracePeriodSeconds",
            ..
        })
    ));
    unchanged(&store);
    assert!(matches!(
        store.rotate_key("team_b", &key.id, 60, "u".into()),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.rotate_key(&team.id, "key_missing", 60, "u".into()),
        Err(Error::NotFound { .. })
    ));
    unchanged(&store);
    let rotated = store
        .rotate_key(&team.id, &key.id, MAX_ROTATION_GRACE_SECONDS, "u".into())
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
        store.rotate_key(&team.id, &expired.id, 60, "u".into()),
        Err(Error::Invalid { field: "keyId", .. })
    ));
}

#[test]
fn the_audit_log_pages_one_teams_events_newest_first() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
    let other = store
        .create_team(Some("team_ab"), "Other", "test".into())
        .expect("team");
    let from = Actor::from_address("user_1", "192.0.2.7");
    let mut created = Vec::new();
    for _ in 0..5 {
        let (record, _) = store
            .create_key(&NewApiKey {
                actor: "user_1".into(),
                source: Some("192.0.2.7".into()),
                ..new_key(&team.id)
            })
            .expect("create");
        created.push(record.id);
        // Another team's events in between must never show up in team_a's pages.
        store.create_key(&new_key(&other.id)).expect("create");
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
    let (team, _) = team_and_project(&store);
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
    let raw = store.raw_tree("audit");
    for entry in raw.iter() {
        let (_, v) = entry.expect("entry");
        let text = String::from_utf8_lossy(&v);
        assert!(
            !text.contains("correct horse"),
            "a password in the audit log: {text}"
        );
    }
}

#[test]
fn audit_events_from_before_team_grouping_are_moved_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        team_and_project(&store);
        // Rewrite the log the way older versions stored it: under the bare sequence number.
        let audit = store.raw_tree("audit");
        let entries: Vec<_> = audit.iter().map(|e| e.expect("entry")).collect();
        for (k, v) in entries {
            let event: AuditEvent = records::decode("audit event", &v).expect("event");
            audit.remove(k).expect("remove");
            audit.insert(event.seq.to_be_bytes(), v).expect("insert");
        }
        // Older versions wrote no marker either.
        assert!(store.db().get(AUDIT_KEYS_MIGRATED).expect("get").is_some());
        store.db().remove(AUDIT_KEYS_MIGRATED).expect("remove");
        assert!(
            store
                .list_audit("team_a", None, 10)
                .expect("page")
                .events
                .is_empty()
        );
        store.flush().expect("flush");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let actions: Vec<String> = store
        .list_audit("team_a", None, 10)
        .expect("page")
        .events
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["project.created", "team.created"]);
    assert!(store.db().get(AUDIT_KEYS_MIGRATED).expect("get").is_some());
}

#[test]
fn a_migrated_store_is_not_scanned_again_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        team_and_project(&store);
        // A legacy-shaped key written after the marker: a later open must not look for it.
        store
            .raw_tree("audit")
            .insert(99u64.to_be_bytes(), b"not an event".to_vec())
            .expect("insert");
        store.flush().expect("flush");
    }
    // Were the log scanned, the entry would fail to decode and the open would fail.
    let store = Store::open(dir.path()).expect("reopen without a scan");
    assert!(
        store
            .raw_tree("audit")
            .get(99u64.to_be_bytes())
            .expect("get")
            .is_some()
    );
}

#[test]
fn rate_limits_are_checked_stored_and_kept_by_rotation() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&store);
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
                store.create_key(&limited(limit, window)),
                Err(Error::Invalid {
                    field: "rateLimit",
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
        let (record, raw) = store.create_key(&limited(limit, window)).expect("create");
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
    let (team, _) = team_and_project(&store);
    let (a, _) = store.create_key(&new_key(&team.id)).expect("a");
    let (b, _) = store.create_key(&new_key(&team.id)).expect("b");
    let counts = |allowed, denied| DailyUsage { allowed, denied };
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
