//! Paged key listing: order, cursors, filters, search, the 30 days an ended key stays listed,
//! and the by-age index of a store written before it existed.

use std::time::Duration;

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// `n` keys named `key 0` … created one millisecond apart (oldest first).
fn keys_created_in_turn(
    store: &dyn Storage,
    clock: &ManualClock,
    team: &str,
    n: usize,
) -> Vec<KeyRecord> {
    (0..n)
        .map(|i| {
            clock.advance(Duration::from_millis(1));
            store
                .create_key(&NewApiKey::new(team, format!("key {i}")), "test".into())
                .expect("create")
                .0
        })
        .collect()
}

fn ids(keys: &[KeyRecord]) -> Vec<&str> {
    keys.iter().map(|k| k.id.as_str()).collect()
}

/// Every page of `query`, followed to the end; with the number of pages.
fn all_pages(store: &dyn Storage, team: &str, query: &KeyQuery) -> (Vec<KeyRecord>, usize) {
    let mut query = query.clone();
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list_keys_page(team, &query).expect("page");
        pages += 1;
        assert!(page.keys.len() <= query.limit);
        out.extend(page.keys);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return (out, pages),
        }
        assert!(pages < 10_000, "paging does not end");
    }
}

#[test]
fn pages_list_newest_first_and_cursors_resume_exactly() {
    let (_dir, store, clock) = open_at_manual_time();
    let (team, _) = team_and_project(&*store);
    let created = keys_created_in_turn(&*store, &clock, &team.id, 25);
    let newest_first: Vec<&str> = ids(&created).into_iter().rev().collect();

    let first = store
        .list_keys_page(&team.id, &KeyQuery::first(10))
        .expect("page");
    assert_eq!(ids(&first.keys), newest_first[..10]);
    let cursor = first.next_cursor.clone().expect("more to come");
    assert_eq!(
        KeyCursor::parse(&cursor.encode()).expect("round trip"),
        cursor
    );

    let (all, pages) = all_pages(&*store, &team.id, &KeyQuery::first(10));
    assert_eq!(ids(&all), newest_first);
    assert_eq!(pages, 3, "10 + 10 + 5, no empty last page");

    // Exactly a page's worth: no cursor to an empty page.
    let whole = store
        .list_keys_page(&team.id, &KeyQuery::first(25))
        .expect("page");
    assert_eq!(whole.keys.len(), 25);
    assert_eq!(whole.next_cursor, None);

    // Keys created or revoked between pages neither repeat nor shift the rest.
    store
        .revoke_key(&team.id, newest_first[12], "test".into())
        .expect("revoke");
    keys_created_in_turn(&*store, &clock, &team.id, 1);
    let second = store
        .list_keys_page(
            &team.id,
            &KeyQuery {
                cursor: Some(cursor),
                ..KeyQuery::first(10)
            },
        )
        .expect("page");
    let expected: Vec<&str> = newest_first[10..21]
        .iter()
        .copied()
        .filter(|id| *id != newest_first[12])
        .collect();
    assert_eq!(ids(&second.keys), expected);
}

#[test]
fn keys_created_in_the_same_millisecond_page_without_loss() {
    let (_dir, store, _clock) = open_at_manual_time();
    let (team, _) = team_and_project(&*store);
    // The clock does not move: every key has the same creation time, so ids break the tie.
    for i in 0..7 {
        store
            .create_key(
                &NewApiKey::new(&team.id, format!("same {i}")),
                "test".into(),
            )
            .expect("create");
    }
    let (all, pages) = all_pages(&*store, &team.id, &KeyQuery::first(2));
    assert_eq!(pages, 4);
    let mut listed: Vec<&str> = ids(&all);
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    sorted.reverse();
    assert_eq!(listed, sorted, "ties newest-first by id, descending");
    listed.dedup();
    assert_eq!(listed.len(), 7);
}

#[test]
fn filters_by_status_project_and_search() {
    let (_dir, store, clock) = open_at_manual_time();
    let (team, project) = team_and_project(&*store);
    let now = clock.now_ms();
    let make = |name: &str, project: Option<&str>, expires_in: Option<Duration>| {
        clock.advance(Duration::from_millis(1));
        store
            .create_key(
                &NewApiKey {
                    project_id: project.map(str::to_owned),
                    expires_at: expires_in.map(|d| now + d.as_millis() as i64 + 10),
                    ..NewApiKey::new(&team.id, name)
                },
                "test".into(),
            )
            .expect("create")
            .0
    };
    let production = make("Production", Some(&project.id), None);
    let soon = make("CI runner", None, Some(3 * DAY));
    let later = make("Staging", Some(&project.id), Some(60 * DAY));
    let off = make("old production", None, None);
    store
        .update_key(
            &team.id,
            &off.id,
            &KeyChanges {
                enabled: Some(false),
                ..KeyChanges::default()
            },
            "test".into(),
        )
        .expect("disable");

    let listed = |query: KeyQuery| {
        ids(&store.list_keys_page(&team.id, &query).expect("page").keys)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let by_status = |s: KeyStatus| {
        listed(KeyQuery {
            status: Some(s),
            ..KeyQuery::first(100)
        })
    };
    assert_eq!(
        by_status(KeyStatus::Active),
        [later.id.clone(), production.id.clone()]
    );
    assert_eq!(by_status(KeyStatus::Expiring), vec![soon.id.clone()]);
    assert_eq!(by_status(KeyStatus::Disabled), vec![off.id.clone()]);
    assert!(by_status(KeyStatus::Expired).is_empty());

    assert_eq!(
        listed(KeyQuery {
            project_id: Some(project.id.clone()),
            ..KeyQuery::first(100)
        }),
        [later.id.clone(), production.id.clone()]
    );
    // Search: any case, any part of the name, or the prefix.
    assert_eq!(
        listed(KeyQuery {
            q: Some("PRODUCTION".into()),
            ..KeyQuery::first(100)
        }),
        [off.id.clone(), production.id.clone()]
    );
    assert_eq!(
        listed(KeyQuery {
            q: Some(soon.prefix.clone()),
            ..KeyQuery::first(100)
        }),
        vec![soon.id.clone()]
    );
    // Filters combine.
    assert_eq!(
        listed(KeyQuery {
            q: Some("production".into()),
            status: Some(KeyStatus::Active),
            ..KeyQuery::first(100)
        }),
        vec![production.id.clone()]
    );

    // Three days on, the CI key has expired.
    clock.advance(3 * DAY + Duration::from_secs(1));
    assert_eq!(by_status(KeyStatus::Expired), vec![soon.id.clone()]);
}

#[test]
fn ended_keys_stay_listed_for_thirty_days_then_drop_out() {
    let (_dir, store, clock) = open_at_manual_time();
    let (team, _) = team_and_project(&*store);
    let [old, kept] = [0, 1].map(|_| {
        clock.advance(Duration::from_millis(1));
        store
            .create_key(&NewApiKey::new(&team.id, "k"), "test".into())
            .expect("create")
            .0
    });
    clock.advance(Duration::from_millis(1));
    let rotated = store
        .rotate_key(&team.id, &old.id, 3600, "test".into())
        .expect("rotate");
    let listed = |clock_note: &str| {
        let page = store
            .list_keys_page(&team.id, &KeyQuery::first(100))
            .expect("page");
        assert!(page.next_cursor.is_none(), "{clock_note}");
        page.keys
            .into_iter()
            .map(|k| (k.id.clone(), k.status(clock.now_ms())))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed("in the grace period"),
        [
            (rotated.new.id.clone(), KeyStatus::Active),
            (kept.id.clone(), KeyStatus::Active),
            (old.id.clone(), KeyStatus::Expiring),
        ]
    );
    clock.advance(Duration::from_secs(3600) + 29 * DAY);
    assert_eq!(
        listed("29 days after the grace period"),
        [
            (rotated.new.id.clone(), KeyStatus::Active),
            (kept.id.clone(), KeyStatus::Active),
            (old.id.clone(), KeyStatus::Expired),
        ]
    );
    clock.advance(DAY);
    assert_eq!(
        listed("30 days after"),
        [
            (rotated.new.id.clone(), KeyStatus::Active),
            (kept.id.clone(), KeyStatus::Active),
        ]
    );
    // Still there for who asks for it by id (the audit log names it).
    assert!(store.get_key(&team.id, &old.id).expect("get").is_some());
}

#[test]
fn a_filter_that_matches_little_answers_in_bounded_pages() {
    let (_dir, store, clock) = open_at_manual_time();
    let (team, _) = team_and_project(&*store);
    let needle = store
        .create_key(&NewApiKey::new(&team.id, "needle"), "test".into())
        .expect("create")
        .0;
    let hay = MAX_KEYS_EXAMINED + 5;
    for i in 0..hay {
        if i % 1000 == 0 {
            clock.advance(Duration::from_millis(1));
        }
        store
            .create_key(&NewApiKey::new(&team.id, "hay"), "test".into())
            .expect("create");
    }
    let query = KeyQuery {
        q: Some("needle".into()),
        ..KeyQuery::first(100)
    };
    let first = store.list_keys_page(&team.id, &query).expect("page");
    assert!(first.keys.is_empty(), "the budget ran out in the hay");
    assert!(first.next_cursor.is_some());
    let (all, pages) = all_pages(&*store, &team.id, &query);
    assert_eq!(ids(&all), [needle.id.as_str()]);
    assert_eq!(pages, 2);
}

#[test]
fn bad_queries_are_refused_by_field() {
    let (_dir, store) = open();
    let (team, _) = team_and_project(&*store);
    for (query, field) in [
        (KeyQuery::first(0), "limit"),
        (KeyQuery::first(MAX_KEY_PAGE + 1), "limit"),
        (
            KeyQuery {
                q: Some("x".repeat(MAX_KEY_SEARCH_LEN + 1)),
                ..KeyQuery::first(1)
            },
            "q",
        ),
    ] {
        match store.list_keys_page(&team.id, &query) {
            Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{query:?}: {other:?}"),
        }
    }
    // Within the limits: the largest page and the longest search are fine.
    store
        .list_keys_page(
            &team.id,
            &KeyQuery {
                q: Some("x".repeat(MAX_KEY_SEARCH_LEN)),
                ..KeyQuery::first(MAX_KEY_PAGE)
            },
        )
        .expect("within limits");
    for text in [
        "",
        "abc",
        "00000000000x.key_a",
        "0000000000001key_a",
        "000000000001.bad id",
    ] {
        assert!(
            matches!(
                KeyCursor::parse(text),
                Err(Error::Invalid {
                    field: "cursor",
                    ..
                })
            ),
            "{text:?}"
        );
    }
    assert!(matches!(
        KeyStatus::parse("revoked"),
        Err(Error::Invalid {
            field: "status",
            ..
        })
    ));
    assert_eq!(
        KeyStatus::parse("expiring").expect("parse"),
        KeyStatus::Expiring
    );
}
