//! Backing a store up while it is in use, and restoring one (docs/operations.md).
//!
//! A backup is SQLite's online backup API copying the store in one step, under one read
//! transaction: a consistent copy as of one commit, taken while the server goes on writing (in
//! WAL mode readers and the writer do not block each other). It goes to a new file beside the
//! destination and is checked before it is renamed into place, so a half-written backup never
//! carries the name. A restore checks the backup on a copy (it opens, upgrades if it is older,
//! passes SQLite's integrity check), keeps the store it replaces under another name, and never
//! deletes anything.

use std::path::{Path, PathBuf};

use super::schema::{self, APPLICATION_ID};
use super::{ChartStore, StoreError, StoreOptions};

/// What a backup copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub charts: u64,
    pub bytes: u64,
}

/// Copies the store at `from` into the new file `to`. `to` must not exist. Safe while a server
/// has the store open; `options` must carry the store's key if it is encrypted.
pub fn backup(from: &Path, to: &Path, options: &StoreOptions) -> Result<BackupReport, StoreError> {
    if to.exists() {
        return Err(StoreError::Exists(to.to_path_buf()));
    }
    if !from.exists() {
        return Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{}: no store here", from.display()),
        )));
    }
    let source = schema::connect(from, options, false)?;
    source.execute_batch("PRAGMA query_only = ON;")?;
    let application_id: i32 = source.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    if application_id != APPLICATION_ID {
        return Err(StoreError::ForeignDatabase { application_id });
    }
    let partial = partial_path(to);
    let _ = std::fs::remove_file(&partial);
    let copied = (|| -> Result<u64, StoreError> {
        let mut target = schema::connect(&partial, options, true)?;
        {
            let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
            // One step: one read transaction, so the copy is of one moment and a server
            // committing meanwhile never makes it start over. Busy: a checkpoint or a
            // writer's lock for a moment; try again, for up to a minute.
            let mut tries = 0;
            loop {
                match backup.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    _ if tries < 600 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    _ => {
                        return Err(StoreError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the store stayed busy for a minute; no backup was made",
                        )))
                    }
                }
            }
        }
        let check: String = target.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::Corrupt(format!(
                "the backup does not check: {check}"
            )));
        }
        let charts: i64 = target.query_row("SELECT count(*) FROM charts", [], |r| r.get(0))?;
        target.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        drop(target);
        std::fs::File::open(&partial)?.sync_all()?;
        Ok(charts.max(0) as u64)
    })();
    let charts = match copied {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            let _ = std::fs::remove_file(sidecar(&partial, "-wal"));
            let _ = std::fs::remove_file(sidecar(&partial, "-shm"));
            return Err(e);
        }
    };
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sidecar(&partial, suffix));
    }
    std::fs::rename(&partial, to)?;
    let bytes = std::fs::metadata(to)?.len();
    Ok(BackupReport { charts, bytes })
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub charts: u64,
    /// Where the store that was replaced now is, if there was one.
    pub previous: Option<PathBuf>,
}

/// Puts the backup `from` in place as the store at `into`, after checking it on a copy. The
/// store it replaces is renamed, never deleted. The caller makes sure nothing has `into`
/// open (the server is stopped).
pub fn restore(
    from: &Path,
    into: &Path,
    options: &StoreOptions,
) -> Result<RestoreReport, StoreError> {
    let staged = sidecar(into, ".restoring");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(sidecar(&staged, suffix));
    }
    std::fs::copy(from, &staged)?;
    let checked = (|| -> Result<u64, StoreError> {
        let store = ChartStore::open(
            &staged,
            StoreOptions {
                receipts: None,
                ..options.clone()
            },
        )?;
        store.verify()?;
        let charts = store.stats()?.charts;
        store.checkpoint()?;
        drop(store);
        Ok(charts)
    })();
    let charts = match checked {
        Ok(c) => c,
        Err(e) => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(sidecar(&staged, suffix));
            }
            return Err(e);
        }
    };
    let previous = if into.exists() {
        let stamp = crate::chart::Timestamp::now().unix_millis();
        let kept = sidecar(into, &format!(".before-restore-{stamp}"));
        std::fs::rename(into, &kept)?;
        for suffix in ["-wal", "-shm"] {
            let side = sidecar(into, suffix);
            if side.exists() {
                std::fs::rename(&side, sidecar(&kept, suffix))?;
            }
        }
        Some(kept)
    } else {
        None
    };
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sidecar(&staged, suffix));
    }
    std::fs::rename(&staged, into)?;
    Ok(RestoreReport { charts, previous })
}

fn partial_path(to: &Path) -> PathBuf {
    sidecar(to, ".partial")
}

/// `path` with `suffix` added to its file name.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}
