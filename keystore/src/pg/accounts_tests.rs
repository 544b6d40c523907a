//! The account half of the PostgreSQL backend against a real server: teams and projects,
//! users and passwords, invitations, memberships and the last owner, sessions, the audit log,
//! and the change feed's numbering under concurrent writers. (The whole conformance suite runs
//! against this backend once every store operation is on it.)

use std::sync::Arc;
use std::time::Duration;

use billstack_pg_cluster::PgCluster;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::storage::*;
use crate::{NewUser, Role};

/// A fresh database on a throwaway cluster (`None`: PostgreSQL is not installed).
fn store() -> Option<(PgCluster, PgStore, Arc<ManualClock>)> {
    let cluster = PgCluster::start()?;
    let clock = ManualClock::starting_now();
    let store = PgStore::connect(
        &cluster.new_database(),
        &PgOptions {
            clock: clock.clone(),
            ..PgOptions::default()
        },
    )
    .expect("connect");
    Some((cluster, store, clock))
}

fn new_user(email: &str, team: &str, role: Role) -> NewUser {
    NewUser {
        email: email.into(),
        password: "a-password-of-12".into(),
        team_id: team.into(),
        role,
    }
}

#[test]
fn teams_and_projects_validate_refuse_duplicates_and_rename() {
    let Some((_cluster, store, _clock)) = store() else {
        return;
    };
    let team = store
        .create_team(Some("team_a"), "  Acme  ", "test".into())
        .expect("team");
    assert_eq!(team.name, "Acme");
    assert_eq!(store.get_team("team_a").expect("get"), Some(team.clone()));
    assert!(matches!(
        store.create_team(Some("team_a"), "Again", "test".into()),
        Err(Error::AlreadyExists { kind: "team", .. })
    ));
    assert!(matches!(
        store.create_team(Some("bad id"), "X", "test".into()),
        Err(Error::Invalid { field: "id", .. })
    ));
    assert!(matches!(
        store.create_team(None, "", "test".into()),
        Err(Error::Invalid { field: "name", .. })
    ));
    let generated = store
        .create_team(None, "Globex", "test".into())
        .expect("team");
    assert!(generated.id.starts_with("team_"));
    assert_eq!(store.list_teams().expect("list").len(), 2);

    let project = store
        .create_project("team_a", Some("proj_a"), "Web", "test".into())
        .expect("project");
    assert!(matches!(
        store.create_project("team_a", Some("proj_a"), "Web", "test".into()),
        Err(Error::AlreadyExists {
            kind: "project",
            ..
        })
    ));
    assert!(matches!(
        store.create_project("team_none", None, "Web", "test".into()),
        Err(Error::NotFound { kind: "team", .. })
    ));
    let renamed = store
        .rename_project("team_a", "proj_a", "Shop", "test".into())
        .expect("rename");
    assert_eq!(
        (renamed.name.as_str(), renamed.created_at),
        ("Shop", project.created_at)
    );
    assert_eq!(
        store.list_projects("team_a").expect("list"),
        vec![renamed.clone()]
    );
    assert!(store.list_projects(&generated.id).expect("list").is_empty());
    store
        .delete_project("team_a", "proj_a", "test".into())
        .expect("delete");
    assert_eq!(store.get_project("team_a", "proj_a").expect("get"), None);
    assert!(matches!(
        store.delete_project("team_a", "proj_a", "test".into()),
        Err(Error::NotFound {
            kind: "project",
            ..
        })
    ));
    let actions: Vec<String> = store
        .list_audit("team_a", None, 50)
        .expect("audit")
        .events
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            "project.deleted",
            "project.renamed",
            "project.created",
            "team.created"
        ]
    );
}

#[test]
fn users_passwords_sessions_and_sign_ins() {
    let Some((_cluster, store, clock)) = store() else {
        return;
    };
    store
        .create_team(Some("team_a"), "Acme", "test".into())
        .expect("team");
    let user = store
        .create_user(
            &new_user(" Ana@Acme.TEST ", "team_a", Role::Owner),
            "test".into(),
        )
        .expect("user");
    assert_eq!(user.email, "ana@acme.test");
    assert!(matches!(
        store.create_user(
            &new_user("ana@acme.test", "team_a", Role::Member),
            "test".into()
        ),
        Err(Error::AlreadyExists { kind: "user", .. })
    ));
    assert!(matches!(
        store.create_user(
            &NewUser {
                password: "short".into(),
                ..new_user("bo@acme.test", "team_a", Role::Member)
            },
            "test".into()
        ),
        Err(Error::Invalid {
            field: "password",
            ..
        })
    ));
    assert_eq!(
        store
            .find_user_by_email("ANA@acme.test")
            .expect("find")
            .map(|u| u.id),
        Some(user.id.clone())
    );
    assert!(
        store
            .verify_password("ana@acme.test", "a-password-of-12")
            .expect("verify")
            .is_some()
    );
    assert!(
        store
            .verify_password("ana@acme.test", "wrong-password-1")
            .expect("verify")
            .is_none()
    );
    assert_eq!(store.user_teams(&user.id).expect("teams")[0].1, Role::Owner);

    let (token, session) = store.create_session(&user.id).expect("session");
    let (other, _) = store.create_session(&user.id).expect("session");
    assert_eq!(
        store.get_session(&token).expect("get"),
        Some(session.clone())
    );
    clock.advance(Duration::from_secs(60));
    store.touch_session(&token, clock.now_ms()).expect("touch");
    assert_eq!(
        store
            .get_session(&token)
            .expect("get")
            .map(|s| s.last_seen_at),
        Some(clock.now_ms())
    );
    store.delete_session(&other).expect("logout");
    assert_eq!(store.get_session(&other).expect("get"), None);
    store
        .touch_session(&other, clock.now_ms())
        .expect("a touch after logout changes nothing");
    assert_eq!(store.get_session(&other).expect("get"), None);
    // A password change ends every session of the user.
    assert_eq!(
        store
            .set_password(&user.id, "another-password", "test".into())
            .expect("set"),
        1
    );
    assert_eq!(store.get_session(&token).expect("get"), None);
    assert!(
        store
            .verify_password("ana@acme.test", "another-password")
            .expect("verify")
            .is_some()
    );
    let (_old, _) = store.create_session(&user.id).expect("session");
    let purged = store
        .purge_sessions(&|s| s.user_id == user.id)
        .expect("purge");
    assert_eq!(purged, 1);
    assert!(
        store
            .set_admin(&user.id, true, "test".into())
            .expect("admin")
            .admin
    );

    store
        .record_sign_in("ana@acme.test", true, "192.0.2.1")
        .expect("record");
    store
        .record_sign_in("nobody@acme.test", false, "192.0.2.9")
        .expect("record");
    let events = store.list_audit("team_a", None, 50).expect("audit").events;
    let signed_in = events
        .iter()
        .find(|e| e.action == "auth.signed_in")
        .expect("sign-in");
    assert_eq!(
        (signed_in.actor.as_str(), signed_in.source.as_deref()),
        (user.id.as_str(), Some("192.0.2.1"))
    );
    // Paging: one at a time, newest first, to the end.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.list_audit("team_a", before, 1).expect("page");
        seen.extend(page.events.iter().map(|e| e.seq));
        match page.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(seen, events.iter().map(|e| e.seq).collect::<Vec<_>>());
}

#[test]
fn invitations_memberships_and_the_last_owner() {
    let Some((_cluster, store, clock)) = store() else {
        return;
    };
    store
        .create_team(Some("team_a"), "Acme", "test".into())
        .expect("team");
    let owner = store
        .create_user(
            &new_user("owner@acme.test", "team_a", Role::Owner),
            "test".into(),
        )
        .expect("owner");
    assert!(matches!(
        store.change_role("team_a", &owner.id, Role::Member, "test".into()),
        Err(Error::Conflict {
            reason: "last_owner",
            ..
        })
    ));
    assert!(matches!(
        store.remove_member("team_a", &owner.id, "test".into()),
        Err(Error::Conflict {
            reason: "last_owner",
            ..
        })
    ));
    clock.advance(Duration::from_millis(1));
    let invited = store
        .invite("team_a", "New@Acme.test", Role::Owner, "test".into())
        .expect("invite");
    let token = invited.token.clone().expect("a new email gets a token");
    assert!(matches!(
        store.invite("team_a", "new@acme.test", Role::Owner, "test".into()),
        Err(Error::AlreadyExists { kind: "member", .. })
    ));
    // A wrong token changes nothing; the right one works once.
    assert!(matches!(
        store.accept_invitation(&"0".repeat(64), "a-password-of-12"),
        Err(Error::Invalid { field: "token", .. })
    ));
    let accepted = store
        .accept_invitation(&token, "the-new-password")
        .expect("accept");
    assert_eq!(accepted.id, invited.member.user_id);
    assert!(matches!(
        store.accept_invitation(&token, "the-new-password"),
        Err(Error::Invalid { field: "token", .. })
    ));
    // Two owners now: either may be demoted, not both.
    store
        .change_role("team_a", &owner.id, Role::Member, "test".into())
        .expect("demote");
    assert!(matches!(
        store.change_role("team_a", &accepted.id, Role::Member, "test".into()),
        Err(Error::Conflict { .. })
    ));
    let members = store.list_members("team_a").expect("members");
    assert_eq!(
        members
            .iter()
            .map(|m| (m.email.as_str(), m.role))
            .collect::<Vec<_>>(),
        [
            ("owner@acme.test", Role::Member),
            ("new@acme.test", Role::Owner)
        ]
    );
    store
        .remove_member("team_a", &owner.id, "test".into())
        .expect("remove");
    assert_eq!(store.membership("team_a", &owner.id).expect("role"), None);
    assert!(matches!(
        store.remove_member("team_a", &owner.id, "test".into()),
        Err(Error::NotFound { kind: "member", .. })
    ));
    // An invitation expires after 7 days.
    let late = store
        .invite("team_a", "late@acme.test", Role::Member, "test".into())
        .expect("invite");
    clock.advance(Duration::from_millis(
        u64::try_from(crate::INVITATION_LIFETIME_MS).expect("positive") + 1,
    ));
    assert!(matches!(
        store.accept_invitation(&late.token.expect("token"), "a-password-of-12"),
        Err(Error::Invalid { field: "token", .. })
    ));
    // An existing user is added, with no token.
    store
        .create_team(Some("team_b"), "Globex", "test".into())
        .expect("team");
    let added = store
        .add_member("team_b", &accepted.id, Role::Member, "test".into())
        .expect("add");
    assert_eq!(added.email, "new@acme.test");
    assert_eq!(store.user_teams(&accepted.id).expect("teams").len(), 2);
}

#[test]
fn the_change_feed_is_numbered_without_gaps_under_concurrent_writers() {
    let Some((_cluster, store, _clock)) = store() else {
        return;
    };
    store
        .create_team(Some("team_a"), "Acme", "test".into())
        .expect("team");
    store
        .create_user(
            &new_user("owner@acme.test", "team_a", Role::Owner),
            "test".into(),
        )
        .expect("owner");
    const WRITERS: usize = 8;
    const EACH: usize = 10;
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let store = &store;
            s.spawn(move || {
                for i in 0..EACH {
                    store
                        .invite(
                            "team_a",
                            &format!("w{w}-{i}@acme.test"),
                            Role::Member,
                            "test".into(),
                        )
                        .expect("invite");
                }
            });
        }
    });
    let seqs: Vec<i64> = store
        .with_client(|client| async move {
            Ok(client
                .query("SELECT seq FROM change_feed ORDER BY seq", &[])
                .await
                .map_err(db_error)?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
        .expect("feed");
    let expected: Vec<i64> = (1..=i64::try_from(WRITERS * EACH + 1).expect("small")).collect();
    assert_eq!(
        seqs, expected,
        "one row per change, numbered 1, 2, 3… with no gap"
    );
}

/// A cache miss reads the key and the feed position in one snapshot: a key created at feed
/// position N is read at N or later, by a store that never wrote it; a miss that finds no key
/// records the position too.
#[test]
fn a_cache_miss_reads_the_feed_position_with_the_key() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let url = cluster.new_database();
    let connect = || PgStore::connect(&url, &PgOptions::default()).expect("connect");
    let store = connect();
    store
        .create_team(Some("team_a"), "Acme", "test".into())
        .expect("team");
    let (_, raw) = store
        .create_key(&crate::store::NewApiKey::new("team_a", "ci"), "test".into())
        .expect("key");
    let head = |store: &PgStore| -> i64 {
        store
            .with_client(|client| async move {
                Ok(client
                    .query_one("SELECT seq FROM change_feed_head", &[])
                    .await
                    .map_err(db_error)?
                    .get(0))
            })
            .expect("head")
    };
    let created_at = head(&store);
    assert!(created_at >= 1, "the key's creation appended a change");

    // A second store on the same database: its cache is cold.
    let other = connect();
    assert_eq!(other.feed_position_read(), 0, "nothing read yet");
    assert!(other.lookup_key(&raw).expect("lookup").is_some());
    assert_eq!(other.feed_position_read(), created_at);

    // A later change moves the position a miss reads at, whether or not it finds a key.
    store
        .invite("team_a", "new@acme.test", Role::Member, "test".into())
        .expect("invite");
    let missing = format!("bs_{}", "0".repeat(48));
    assert!(other.lookup_key(&missing).expect("lookup").is_none());
    assert_eq!(other.feed_position_read(), head(&store));
    assert!(other.feed_position_read() > created_at);
}

/// A replica that starts preloads the keys used in the last day: they decide from memory at
/// once, while a key nobody used is read on its first use.
#[test]
fn a_starting_replica_preloads_recently_used_keys() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let url = cluster.new_database();
    let first = PgStore::connect(&url, &PgOptions::default()).expect("connect");
    first
        .create_team(Some("team_a"), "Acme", "test".into())
        .expect("team");
    let create = |name: &str| {
        first
            .create_key(&crate::store::NewApiKey::new("team_a", name), "test".into())
            .expect("key")
    };
    let (used, used_raw) = create("used");
    let (_, idle_raw) = create("idle");
    first
        .record_key_usage(&[crate::store::KeyUsage {
            key_id: used.id.clone(),
            last_used_at: Some(first.now()),
            days: Vec::new(),
        }])
        .expect("usage");
    let second = PgStore::connect(&url, &PgOptions::default()).expect("connect");
    assert!(second.cached_key(&used_raw).is_some(), "preloaded");
    assert!(
        second.cached_key(&idle_raw).is_none(),
        "not used, not preloaded"
    );
    assert!(second.lookup_key(&idle_raw).expect("lookup").is_some());
    // A command (no replica) keeps no cache at all.
    let command = PgStore::connect(
        &url,
        &PgOptions {
            replica: None,
            ..PgOptions::default()
        },
    )
    .expect("connect");
    assert!(command.lookup_key(&used_raw).expect("lookup").is_some());
    assert!(command.cached_key(&used_raw).is_none());
    assert!(command.replica_status().is_none());
    assert!(
        second
            .replica_status()
            .is_some_and(|s| s.caught_up && s.lease_valid)
    );
}

/// A backup taken from PostgreSQL is in the format sled restores: every account, key (by
/// hash), policy and audit event comes back, and the keys still decide the same way.
#[test]
fn a_backup_of_postgres_restores_into_sled() {
    let Some((_cluster, store, _clock)) = store() else {
        return;
    };
    store
        .create_team(Some("team_a"), "Acme", "test".into())
        .expect("team");
    store
        .create_project("team_a", Some("proj_a"), "Web", "test".into())
        .expect("project");
    let owner = store
        .create_user(
            &new_user("owner@acme.test", "team_a", Role::Owner),
            "test".into(),
        )
        .expect("owner");
    let (kept, raw) = store
        .create_key(
            &crate::NewApiKey {
                project_id: Some("proj_a".into()),
                scopes: vec!["customers:read".into()],
                ..crate::NewApiKey::new("team_a", "kept")
            },
            "test".into(),
        )
        .expect("key");
    let (gone, gone_raw) = store
        .create_key(&crate::NewApiKey::new("team_a", "gone"), "test".into())
        .expect("key");
    store
        .revoke_key("team_a", &gone.id, "test".into())
        .expect("revoke");
    store
        .put_team_policy("team_a", b"\0asm not really", "test".into())
        .expect("policy");
    let mut backup = Vec::new();
    let summary = store.backup_to(&mut backup).expect("backup");
    assert_eq!(summary.keys, 2, "revoked keys are in backups too");
    assert!(
        !backup
            .windows(raw.len() - 3)
            .any(|w| w == &raw.as_bytes()[3..]),
        "no raw key in a backup"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    crate::Store::restore_from(dir.path(), || Ok(std::io::Cursor::new(backup.clone())))
        .expect("restore into sled");
    let sled = crate::Store::open(dir.path()).expect("open");
    assert_eq!(
        sled.lookup_key(&raw).expect("lookup").map(|k| k.id.clone()),
        Some(kept.id.clone())
    );
    assert_eq!(sled.lookup_key(&gone_raw).expect("lookup"), None);
    assert_eq!(
        sled.get_key("team_a", &gone.id)
            .expect("get")
            .and_then(|k| k.revoked_at),
        store
            .get_key("team_a", &gone.id)
            .expect("get")
            .and_then(|k| k.revoked_at)
    );
    assert!(
        sled.verify_password("owner@acme.test", "a-password-of-12")
            .expect("verify")
            .is_some()
    );
    assert_eq!(
        sled.membership("team_a", &owner.id).expect("role"),
        Some(Role::Owner)
    );
    assert_eq!(
        sled.get_team_policy("team_a")
            .expect("policy")
            .map(|(_, bytes)| bytes),
        Some(b"\0asm not really".to_vec())
    );
    assert_eq!(
        sled.list_audit("team_a", None, 100).expect("audit").events,
        store.list_audit("team_a", None, 100).expect("audit").events
    );
    let page = sled
        .list_keys_page("team_a", &crate::KeyQuery::first(10))
        .expect("page");
    assert_eq!(page.keys.len(), 1, "the by-age index came with it");
}

/// A sled store's backup restores into an empty PostgreSQL database in one transaction, and
/// every table reads back with the backup's count and checksum; the keys decide the same way;
/// a second restore, or a damaged backup, changes nothing.
#[test]
fn a_sled_backup_restores_into_postgres_and_every_table_checks_out() {
    let Some((_cluster, store, _clock)) = store() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sled = crate::Store::open(dir.path()).expect("sled");
    sled.create_team(Some("team_a"), "Acme", "test".into())
        .expect("team");
    sled.create_project("team_a", Some("proj_a"), "Web", "test".into())
        .expect("project");
    let owner = sled
        .create_user(
            &new_user("owner@acme.test", "team_a", Role::Owner),
            "test".into(),
        )
        .expect("owner");
    let invited = sled
        .invite("team_a", "new@acme.test", Role::Member, "test".into())
        .expect("invite");
    let (session, _) = sled.create_session(&owner.id).expect("session");
    let (kept, raw) = sled
        .create_key(&crate::NewApiKey::new("team_a", "kept"), "test".into())
        .expect("key");
    let (gone, gone_raw) = sled
        .create_key(&crate::NewApiKey::new("team_a", "gone"), "test".into())
        .expect("key");
    sled.revoke_key("team_a", &gone.id, "test".into())
        .expect("revoke");
    sled.record_key_usage(&[crate::KeyUsage {
        key_id: kept.id.clone(),
        last_used_at: Some(sled.clock().now_ms()),
        days: vec![(
            20_000,
            crate::DailyUsage {
                allowed: 3,
                denied: 1,
                refused: [("insufficient_scope".to_owned(), 1)].into(),
            },
        )],
    }])
    .expect("usage");
    sled.put_team_policy("team_a", b"policy bytes", "test".into())
        .expect("policy");
    let mut backup = Vec::new();
    sled.backup_to(&mut backup).expect("backup");
    drop(sled);

    // A damaged backup is refused before anything is written.
    let mut damaged = backup.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    assert!(
        store
            .restore_from(|| Ok(std::io::Cursor::new(damaged.clone())))
            .is_err()
    );
    assert!(store.is_empty().expect("empty"));

    let (summary, checks) = store
        .restore_from(|| Ok(std::io::Cursor::new(backup.clone())))
        .expect("restore");
    assert_eq!(summary.keys, 2);
    assert!(
        checks.iter().all(TableCheck::matches),
        "every table as in the backup: {checks:#?}"
    );
    for table in [
        "teams",
        "users",
        "members",
        "keys",
        "key_usage",
        "team_policy",
        "audit",
    ] {
        let check = checks
            .iter()
            .find(|c| c.table == table)
            .unwrap_or_else(|| panic!("no check of {table}"));
        assert!(check.expected > 0, "{table} was copied: {check:?}");
    }
    assert_eq!(
        store
            .lookup_key(&raw)
            .expect("lookup")
            .map(|k| k.id.clone()),
        Some(kept.id.clone())
    );
    assert_eq!(store.lookup_key(&gone_raw).expect("lookup"), None);
    assert!(store.get_session(&session).expect("session").is_some());
    assert!(
        store
            .verify_password("owner@acme.test", "a-password-of-12")
            .expect("verify")
            .is_some()
    );
    assert!(
        store
            .accept_invitation(&invited.token.expect("token"), "a-password-of-12")
            .is_ok(),
        "the invitation came across"
    );
    // New audit events number after the restored ones.
    let before = store.list_audit("team_a", None, 1).expect("audit").events[0].seq;
    store
        .create_project("team_a", None, "More", "test".into())
        .expect("project");
    assert!(store.list_audit("team_a", None, 1).expect("audit").events[0].seq > before);
    // Only into an empty database.
    assert!(matches!(
        store.restore_from(|| Ok(std::io::Cursor::new(backup.clone()))),
        Err(Error::Invalid {
            field: "storage",
            ..
        })
    ));
}
