//! Policy plugin bytes, one file per distinct component in `DATA_DIR/policies/`, named by
//! the SHA-256 of its contents.
//!
//! They live beside sled rather than in it because sled never gives back the space of a large
//! value it has removed: 8 uploads of a 31 MiB component left 279 MiB in sled's file after
//! every one of them was deleted. A file is written whole (temporary name, fsync, rename, fsync
//! of the directory) before the record naming it commits, and deleted once no record names it,
//! so what a store keeps on disk is bounded by what its records reference.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The directory's name under the data directory.
pub(crate) const DIR: &str = "policies";
const SUFFIX: &str = ".wasm";
const PARTIAL: &str = ".partial";

/// Content-addressed files in one directory.
#[derive(Debug)]
pub(crate) struct BlobDir {
    dir: PathBuf,
    partial_seq: AtomicU64,
}

fn valid_sha(sha: &str) -> bool {
    sha.len() == 64
        && sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BlobDir {
    /// Opens (creating if needed) `data_dir/policies`.
    pub(crate) fn open(data_dir: &Path) -> Result<BlobDir> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(BlobDir {
            dir,
            partial_seq: AtomicU64::new(0),
        })
    }

    fn path(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}{SUFFIX}"))
    }

    /// Writes `bytes` durably and returns their hex SHA-256. Writing bytes that are already
    /// stored changes nothing.
    pub(crate) fn put(&self, bytes: &[u8]) -> Result<String> {
        let sha = hex::encode(Sha256::digest(bytes));
        let path = self.path(&sha);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            return Ok(sha);
        }
        let partial = self.dir.join(format!(
            "{sha}-{}-{}{PARTIAL}",
            std::process::id(),
            self.partial_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| -> std::io::Result<()> {
            let mut file = File::create_new(&partial)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&partial, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
        Ok(sha)
    }

    /// The bytes stored under `sha`, checked against it.
    pub(crate) fn get(&self, sha: &str) -> Result<Option<Vec<u8>>> {
        if !valid_sha(sha) {
            return Err(Error::Corruption {
                what: format!("policy blob name {sha:?} is not a SHA-256"),
            });
        }
        let bytes = match std::fs::read(self.path(sha)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if hex::encode(Sha256::digest(&bytes)) != sha {
            return Err(Error::Corruption {
                what: format!("policy blob {sha} does not match its hash"),
            });
        }
        Ok(Some(bytes))
    }

    /// Every stored blob's SHA-256, sorted.
    pub(crate) fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(sha) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX))
                && valid_sha(sha)
            {
                out.push(sha.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes every blob not in `live`, and any file left half-written by a crash. Returns
    /// how many blobs it deleted.
    pub(crate) fn retain(&self, live: &HashSet<String>) -> Result<usize> {
        let mut deleted = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let dead = match name.strip_suffix(SUFFIX) {
                Some(sha) => valid_sha(sha) && !live.contains(sha),
                None => name.ends_with(PARTIAL),
            };
            if dead {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => deleted += usize::from(name.ends_with(SUFFIX)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_unreferenced_ones_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobDir::open(dir.path()).expect("open");
        let a = blobs.put(b"component a").expect("put");
        let b = blobs.put(b"component b").expect("put");
        assert_eq!(blobs.put(b"component a").expect("again"), a, "idempotent");
        assert_eq!(blobs.get(&a).expect("get"), Some(b"component a".to_vec()));
        // A crash between write and rename leaves a partial file; retain clears it.
        std::fs::write(
            dir.path().join(DIR).join(format!("{a}-1-1{PARTIAL}")),
            b"half",
        )
        .expect("partial");
        let live: HashSet<String> = [b.clone()].into();
        assert_eq!(blobs.retain(&live).expect("retain"), 1);
        assert_eq!(blobs.list().expect("list"), vec![b.clone()]);
        assert_eq!(blobs.get(&a).expect("get"), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join(DIR))
                .expect("dir")
                .count(),
            1,
            "only b is left"
        );
    }

    #[test]
    fn an_altered_blob_is_corruption_not_a_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobDir::open(dir.path()).expect("open");
        let a = blobs.put(b"component a").expect("put");
        std::fs::write(blobs.path(&a), b"component A").expect("alter");
        assert!(matches!(blobs.get(&a), Err(Error::Corruption { .. })));
        assert!(matches!(
            blobs.get("../../etc/passwd"),
            Err(Error::Corruption { .. })
        ));
    }
}
