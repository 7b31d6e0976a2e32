//! Receipts: the hash of every change the store commits, appended to a file beside it.
//!
//! A server restored from a backup has lost what it accepted since; the tablets still hold
//! those changes — their own, and other people's they received through the server — and send
//! them again. Other people's changes would fail the check that a device sends only its own
//! user's changes, and be held. The receipts file is how the restored server recognises them
//! as changes it accepted before (docs/operations.md, "Backup and restore"): it is not part of
//! the backup (it must outlive it), so keep it on the data directory's disk, and keep it when
//! restoring.
//!
//! The file is 32 bytes a change, appended after each commit (a killed process loses none)
//! and synced to disk at each checkpoint and when the store closes; a restore needs the receipts of changes made since
//! the backup, long after they were written. A torn last record (a crash mid-write) is ignored.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use automerge::ChangeHash;

pub struct Receipts {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

impl std::fmt::Debug for Receipts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipts")
            .field("path", &self.path)
            .finish()
    }
}

impl Receipts {
    /// Opens (or creates) the receipts file at `path` for appending.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Receipts> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Receipts {
            path,
            file: Mutex::new(BufWriter::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends committed change hashes. A failure to write is reported and loses only
    /// receipts, never a change: the commit is already durable.
    pub(crate) fn record(&self, hashes: &[ChangeHash]) -> std::io::Result<()> {
        let mut file = super::lock(&self.file);
        for h in hashes {
            file.write_all(&h.0)?;
        }
        // To the operating system at once (a killed server loses none); to the disk at the
        // next checkpoint.
        file.flush()
    }

    /// Flushes what was appended to disk.
    pub fn sync(&self) -> std::io::Result<()> {
        let mut file = super::lock(&self.file);
        file.flush()?;
        file.get_ref().sync_data()
    }

    /// Every hash in a receipts file; none if there is no file.
    pub fn load(path: impl AsRef<Path>) -> std::io::Result<HashSet<ChangeHash>> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
            Err(e) => return Err(e),
        }
        Ok(bytes
            .chunks_exact(32)
            .filter_map(|c| ChangeHash::try_from(c).ok())
            .collect())
    }
}

impl Drop for Receipts {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_read_back_and_a_torn_last_record_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts");
        let r = Receipts::open(&path).unwrap();
        r.record(&[ChangeHash([1; 32]), ChangeHash([2; 32])])
            .unwrap();
        r.sync().unwrap();
        drop(r);
        // A crash part-way through the next record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[3; 17]).unwrap();
        let all = Receipts::load(&path).unwrap();
        assert_eq!(
            all,
            HashSet::from([ChangeHash([1; 32]), ChangeHash([2; 32])])
        );
        assert!(Receipts::load(dir.path().join("none")).unwrap().is_empty());
    }
}
