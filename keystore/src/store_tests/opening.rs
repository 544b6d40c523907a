//! sled's own files and migrations (this runs against sled alone): corrupt records, a second
//! opener, bulk loads without durable writes, the audit-key, policy-blob and key-index
//! migrations at open, policy files on disk, backups of them, and the lookup cache turned off.

use super::*;

#[test]
fn corrupt_records_are_errors_not_panics() {
    let (_dir, store) = open_sled_store();
    let (team, _) = team_and_project(&store);
    let (record, raw) = store
        .create_key(&new_key(&team.id), "test".into())
        .expect("create");
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
    let (dir, _store) = open_sled_store();
    match Store::open(dir.path()) {
        Err(e @ Error::Locked(_)) => assert!(
            e.to_string()
                .contains("in use by another billstack process")
        ),
        other => panic!("expected Locked, got {other:?}"),
    }
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
            .map(|_| {
                store
                    .create_key(&new_key(&team.id), "test".into())
                    .expect("create")
                    .1
            })
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
fn a_store_from_before_the_index_gets_it_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (team, created) = {
        let clock = ManualClock::starting_now();
        let store = Store::open_with(
            dir.path(),
            &StoreOptions {
                clock: clock.clone(),
                ..StoreOptions::default()
            },
        )
        .expect("open");
        let (team, _) = team_and_project(&store);
        let created: Vec<KeyRecord> = (0..3)
            .map(|i| {
                clock.advance(std::time::Duration::from_millis(1));
                store
                    .create_key(&NewApiKey::new(&team.id, format!("key {i}")), "test".into())
                    .expect("create")
                    .0
            })
            .collect();
        // As an older version left it: no index, no marker.
        store.raw_tree("team_keys_by_age").clear().expect("clear");
        store
            .raw_tree("__sled__default")
            .remove(crate::store::KEYS_BY_AGE_INDEXED)
            .expect("unmark");
        store.flush().expect("flush");
        (team, created)
    };
    let store = Store::open(dir.path()).expect("reopen");
    let page = store
        .list_keys_page(&team.id, &KeyQuery::first(10))
        .expect("page");
    let ids = |keys: &[KeyRecord]| keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>();
    let mut newest_first = ids(&created);
    newest_first.reverse();
    assert_eq!(ids(&page.keys), newest_first);
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
    let (record, raw) = store
        .create_key(&new_key(&team.id), "test".into())
        .expect("create");
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
