//! Opening a store: corrupt records, a second opener, bulk loads without durable writes.

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
