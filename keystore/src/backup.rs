//! Backups: one file holding every tree of the store, copied while no write is in progress, so
//! it is one consistent state; and restore into an empty data directory.
//!
//! The file is a stream of records, each a kind byte and length-prefixed fields:
//!
//! ```text
//! MAGIC                                  b"BILLSTACK-BACKUP" then format version 1 (u8)
//! 1 name_len:u32 name                    a tree; entries below belong to it
//! 2 key_len:u32 key value_len:u32 value  an entry
//! 0 entries:u64 sha256:[32]              the end: entry count, SHA-256 of every byte before
//! ```
//!
//! Integers are big-endian. Restore reads and checks the whole file before it writes anything,
//! so a truncated or altered backup changes nothing.

use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::storage::Storage;
use crate::store::LEGACY_POLICY_BLOBS;
use crate::{Error, Result, Store, StoreOptions};

const MAGIC: &[u8; 16] = b"BILLSTACK-BACKUP";
const VERSION: u8 = 1;
const TREE: u8 = 1;
const ENTRY: u8 = 2;
const END: u8 = 0;
/// Largest tree name or key accepted when reading (values may be large: policy plugins).
const MAX_NAME: usize = 64 * 1024;
/// Largest value accepted when reading.
const MAX_VALUE: usize = 512 * 1024 * 1024;

/// What a backup or restore copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    /// Trees copied.
    pub trees: u64,
    /// Entries copied, over all trees.
    pub entries: u64,
    /// API keys among them (revoked ones included).
    pub keys: u64,
    /// Bytes of the backup file.
    pub bytes: u64,
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.hash.update(data);
        self.bytes += data.len() as u64;
        self.inner.write_all(data)?;
        Ok(())
    }

    fn put_field(&mut self, data: &[u8]) -> Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| Error::Corruption {
            what: "a record too large for a backup".into(),
        })?;
        self.put(&len.to_be_bytes())?;
        self.put(data)
    }
}

/// Writes the backup format: trees and their entries, then the end record. Used by every
/// backend, so a backup of one restores into the other.
pub(crate) struct BackupWriter<W: Write> {
    w: Hashing<W>,
    summary: BackupSummary,
    in_keys: bool,
}

impl<W: Write> BackupWriter<W> {
    /// Starts a backup on `out`.
    pub(crate) fn new(out: W) -> Result<BackupWriter<W>> {
        let mut w = Hashing {
            inner: out,
            hash: Sha256::new(),
            bytes: 0,
        };
        w.put(MAGIC)?;
        w.put(&[VERSION])?;
        Ok(BackupWriter {
            w,
            summary: BackupSummary::default(),
            in_keys: false,
        })
    }

    /// Starts tree `name`; the entries written next belong to it.
    pub(crate) fn tree(&mut self, name: &[u8]) -> Result<()> {
        self.w.put(&[TREE])?;
        self.w.put_field(name)?;
        self.summary.trees += 1;
        self.in_keys = name == b"keys";
        Ok(())
    }

    /// One entry of the current tree.
    pub(crate) fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.w.put(&[ENTRY])?;
        self.w.put_field(key)?;
        self.w.put_field(value)?;
        self.summary.entries += 1;
        if self.in_keys {
            self.summary.keys += 1;
        }
        Ok(())
    }

    /// Ends the backup: the entry count and the SHA-256 of everything before.
    pub(crate) fn finish(mut self) -> Result<BackupSummary> {
        self.w.put(&[END])?;
        self.w.put(&self.summary.entries.to_be_bytes())?;
        let digest = self.w.hash.clone().finalize();
        self.w.inner.write_all(&digest)?;
        self.w.inner.flush()?;
        self.summary.bytes = self.w.bytes + digest.len() as u64;
        Ok(self.summary)
    }
}

impl Store {
    /// Writes a consistent copy of the whole store to `out`. Writes wait while it runs (reads,
    /// and so decisions, do not); the copy is the state after the last write that finished.
    pub(crate) fn write_backup(&self, out: impl Write) -> Result<BackupSummary> {
        let _quiet = self.quiesced();
        let mut w = BackupWriter::new(out)?;
        let mut names = self.db().tree_names();
        names.sort();
        for name in names {
            if &*name == LEGACY_POLICY_BLOBS.as_bytes() {
                continue; // migrated to files at open; never present on an open store
            }
            let tree = self.db().open_tree(&name)?;
            w.tree(&name)?;
            for entry in tree.iter() {
                let (k, v) = entry?;
                w.entry(&k, &v)?;
            }
        }
        // Policy bytes live in files ([`crate::blobs`]); the backup carries them as the tree
        // they once were, so backups of every version restore the same way.
        w.tree(LEGACY_POLICY_BLOBS.as_bytes())?;
        for sha in self.policy_files().list()? {
            let Some(bytes) = self.policy_files().get(&sha)? else {
                continue; // deleted since the listing: no policy names it
            };
            w.entry(sha.as_bytes(), &bytes)?;
        }
        w.finish()
    }

    /// Restores a backup into `dir`, which must not hold a store yet (it may exist and be
    /// empty). `open` gives the backup from its start, and is called twice: the whole backup
    /// is read and checked first, so a truncated, altered or foreign file is refused before
    /// anything is written; the second pass writes it, a batch at a time, so memory use does
    /// not grow with the store. The restored store is flushed before returning.
    pub fn restore_from<R: Read>(
        dir: impl AsRef<Path>,
        open: impl Fn() -> std::io::Result<R>,
    ) -> Result<BackupSummary> {
        let dir = dir.as_ref();
        if dir.join("db").exists() {
            return Err(crate::invalid(
                "data_dir",
                format!(
                    "{} already holds a store; restore into a new, empty directory",
                    dir.display()
                ),
            ));
        }
        let checked = parse(open()?, |_, _, _| Ok(()))?;
        let store = Store::open_with(
            dir,
            &StoreOptions {
                durable_writes: false,
                ..StoreOptions::default()
            },
        )?;
        let mut batch = (Vec::<u8>::new(), sled::Batch::default(), 0usize);
        let apply = |store: &Store, batch: &mut (Vec<u8>, sled::Batch, usize)| -> Result<()> {
            if batch.2 > 0 {
                let tree = store.db().open_tree(&batch.0)?;
                tree.apply_batch(std::mem::take(&mut batch.1))?;
                batch.2 = 0;
            }
            Ok(())
        };
        let written = parse(open()?, |tree, k, v| {
            if tree == LEGACY_POLICY_BLOBS.as_bytes() {
                let sha = store.policy_files().put(v)?;
                if sha.as_bytes() != k {
                    return Err(bad("a policy blob does not match its hash"));
                }
                return Ok(());
            }
            if batch.0 != tree || batch.2 >= 10_000 {
                apply(&store, &mut batch)?;
                batch.0 = tree.to_vec();
            }
            batch.1.insert(k, v);
            batch.2 += 1;
            Ok(())
        })?;
        apply(&store, &mut batch)?;
        if written != checked {
            return Err(bad("it changed while it was being restored"));
        }
        store.flush()?;
        Ok(written)
    }
}

/// Reads a whole backup and checks it (format, entry count, checksum) without restoring it.
pub fn verify_backup(input: impl Read) -> Result<BackupSummary> {
    parse(input, |_, _, _| Ok(()))
}

pub(crate) fn bad(why: &str) -> Error {
    Error::Corruption {
        what: format!("not a usable backup: {why}"),
    }
}

/// A reader that hashes and counts what it hands out.
struct Reading<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Reading<R> {
    fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| bad("it ends early (truncated?)"))?;
        self.hash.update(&buf);
        self.bytes += n as u64;
        Ok(buf)
    }

    fn field(&mut self, max: usize) -> Result<Vec<u8>> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| bad("length"))?);
        let len = len as usize;
        if len > max {
            return Err(bad("a record is larger than any BillStack record"));
        }
        self.take(len)
    }
}

/// Reads a whole backup, handing each entry (tree name, key, value) to `entry`, and checks
/// its end; returns what it held.
pub(crate) fn parse(
    input: impl Read,
    mut entry: impl FnMut(&[u8], &[u8], &[u8]) -> Result<()>,
) -> Result<BackupSummary> {
    let mut r = Reading {
        inner: input,
        hash: Sha256::new(),
        bytes: 0,
    };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(bad("it does not start like a BillStack backup"));
    }
    if r.take(1)?[0] != VERSION {
        return Err(bad("it was written by an unknown version"));
    }
    let mut tree: Option<Vec<u8>> = None;
    let mut summary = BackupSummary::default();
    loop {
        match r.take(1)?[0] {
            TREE => {
                tree = Some(r.field(MAX_NAME)?);
                summary.trees += 1;
            }
            ENTRY => {
                let name = tree
                    .as_deref()
                    .ok_or_else(|| bad("an entry before any tree"))?;
                let k = r.field(MAX_NAME)?;
                let v = r.field(MAX_VALUE)?;
                if name == b"keys" {
                    summary.keys += 1;
                }
                entry(name, &k, &v)?;
                summary.entries += 1;
            }
            END => {
                let count = u64::from_be_bytes(r.take(8)?.try_into().map_err(|_| bad("count"))?);
                let expected = r.hash.clone().finalize();
                let mut stored = [0u8; 32];
                r.inner
                    .read_exact(&mut stored)
                    .map_err(|_| bad("it ends early (truncated?)"))?;
                if stored[..] != expected[..] {
                    return Err(bad("its checksum does not match (altered or damaged)"));
                }
                if count != summary.entries {
                    return Err(bad("its entry count does not match"));
                }
                let mut rest = [0u8; 1];
                if r.inner.read(&mut rest)? != 0 {
                    return Err(bad("there is data after its end"));
                }
                summary.bytes = r.bytes + 32;
                return Ok(summary);
            }
            _ => return Err(bad("an unknown record kind (damaged?)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::*;
    use crate::{NewApiKey, apikey};

    fn populated() -> (tempfile::TempDir, Store, Vec<String>, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("src")).expect("open");
        let team = store
            .create_team(Some("team_a"), "A", "test".into())
            .expect("team");
        let mut raws = Vec::new();
        let mut revoked = String::new();
        for i in 0..3 {
            let (record, raw) = store
                .create_key(&NewApiKey::new(&team.id, format!("k{i}")), "test".into())
                .expect("key");
            if i == 2 {
                store
                    .revoke_key(&team.id, &record.id, "test".into())
                    .expect("revoke");
                revoked = raw;
            } else {
                raws.push(raw);
            }
        }
        (dir, store, raws, revoked)
    }

    #[test]
    fn a_restored_store_authenticates_the_same_keys() {
        let (dir, store, active, revoked) = populated();
        let mut file = Vec::new();
        let written = store.backup_to(&mut file).expect("backup");
        assert_eq!(written.keys, 3);
        assert_eq!(written.bytes, file.len() as u64);
        let target = dir.path().join("restored");
        let read = Store::restore_from(&target, || Ok(file.as_slice())).expect("restore");
        assert_eq!(read, written);
        let restored = Store::open(&target).expect("open the restored store");
        for raw in &active {
            assert!(restored.lookup_key(raw).expect("lookup").is_some());
        }
        assert!(restored.lookup_key(&revoked).expect("lookup").is_none());
        assert_eq!(restored.list_keys("team_a").expect("list").len(), 2);
        assert_eq!(
            restored
                .list_audit("team_a", None, 10)
                .expect("audit")
                .events
                .len(),
            5,
            "team, 3 keys, 1 revocation"
        );
        // No raw key is in the file: only hashes are stored.
        let text = String::from_utf8_lossy(&file);
        for raw in active.iter().chain([&revoked]) {
            assert!(!text.contains(&raw[apikey::KEY_PREFIX.len()..]));
        }
    }

    #[test]
    fn damaged_backups_and_occupied_directories_are_refused_and_change_nothing() {
        let (dir, store, _, _) = populated();
        let mut file = Vec::new();
        store.backup_to(&mut file).expect("backup");
        let mut flipped = file.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x01;
        let mut trailing = file.clone();
        trailing.push(0);
        for (what, bytes) in [
            ("truncated", &file[..file.len() - 1]),
            ("cut in half", &file[..middle]),
            ("altered", flipped.as_slice()),
            ("with trailing data", trailing.as_slice()),
            ("empty", &[][..]),
            ("foreign", b"PK\x03\x04 definitely a zip file".as_slice()),
        ] {
            let target = dir.path().join(format!("bad-{}", what.replace(' ', "-")));
            let err = Store::restore_from(&target, || Ok(bytes)).expect_err(what);
            assert!(
                err.to_string().contains("not a usable backup"),
                "{what}: {err}"
            );
            assert!(!target.join("db").exists(), "{what}: nothing written");
        }
        // The source store itself is occupied.
        drop(store);
        let err = Store::restore_from(dir.path().join("src"), || Ok(file.as_slice()))
            .expect_err("occupied");
        assert!(err.to_string().contains("already holds a store"), "{err}");
    }
}
