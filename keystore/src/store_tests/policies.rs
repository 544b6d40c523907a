//! Team policy plugins: storage by hash, bounded disk use, the sled migration, backups.

use super::*;

#[test]
fn team_policies_are_stored_by_hash_and_collected() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
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
