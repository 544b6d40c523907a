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
