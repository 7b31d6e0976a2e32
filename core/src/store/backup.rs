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
    // Before the copy's read transaction: every commit finished by now is in the copy.
    let started = crate::chart::Timestamp::now();
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
    record_backup(from, started)?;
    Ok(BackupReport { charts, bytes })
}

/// The file beside a store that says when its latest backup was taken.
const LAST_BACKUP: &str = "last-backup";

/// Records, beside the store `of`, that a backup holds everything committed to it before
/// `started` (the latest such time is kept). A tablet removes a chart that left its wards only
/// once a backup holds what it wrote there (`ChartStore::last_backup`): a server restored from
/// the backup then still has it.
fn record_backup(of: &Path, started: crate::chart::Timestamp) -> Result<(), StoreError> {
    let marker = of.with_file_name(LAST_BACKUP);
    if last_backup_beside(of).is_some_and(|t| t >= started) {
        return Ok(());
    }
    let partial = marker.with_extension("partial");
    std::fs::write(&partial, started.unix_millis().to_string())?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, &marker)?;
    Ok(())
}

/// When the latest backup of the store `of` was taken, as [`backup`] recorded it.
pub fn last_backup_beside(of: &Path) -> Option<crate::chart::Timestamp> {
    let text = std::fs::read_to_string(of.with_file_name(LAST_BACKUP)).ok()?;
    let ms: i64 = text.trim().parse().ok()?;
    crate::chart::Timestamp::from_unix_millis(ms).ok()
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

/// What encrypting a plain store did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptReport {
    pub charts: u64,
    /// Audit rows carried over, their chain checked link by link on the encrypted copy.
    pub audit_rows: u64,
}

/// Encrypts the plain store at `path` in place with `key`. An encrypted copy is made beside
/// it (SQLCipher's `sqlcipher_export`, with the store's version and application id), opened
/// with the key and checked (SQLite's integrity check, the same number of charts, the audit
/// chain whole and ending at the same link), and only then renamed over the plain file. A
/// failure or a crash before the rename leaves the plain store as it was. The caller makes
/// sure nothing else has `path` open (the server is stopped).
pub fn encrypt_in_place(
    path: &Path,
    key: &super::EncryptionKey,
) -> Result<EncryptReport, StoreError> {
    let plain_options = StoreOptions {
        compaction: super::Compaction::Manual,
        ..StoreOptions::default()
    };
    // Opened as a store first: recognised, upgraded if it is older, and its write-ahead log
    // folded in, so nothing is left beside it when the encrypted copy takes its name.
    let (charts, chain) = {
        let store = ChartStore::open(path, plain_options.clone())?;
        let counts = (store.stats()?.charts, store.verify_audit()?);
        store.checkpoint()?;
        counts
    };
    let staged = sidecar(path, ".encrypting");
    let clear = |p: &Path| {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(sidecar(p, suffix));
        }
    };
    clear(&staged);
    let copied = (|| -> Result<EncryptReport, StoreError> {
        // Opened as a creating connection: a database it attaches may be created.
        let source = schema::connect(path, &plain_options, true)?;
        let version: i64 = source.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let staged_name = staged
            .to_str()
            .ok_or_else(|| StoreError::Corrupt("the store's path is not UTF-8".into()))?;
        source.execute(
            "ATTACH DATABASE ?1 AS encrypted KEY ?2",
            rusqlite::params![staged_name, key.raw_literal()],
        )?;
        source.execute_batch(&format!(
            "PRAGMA encrypted.cipher_page_size = {};",
            schema::PAGE_SIZE
        ))?;
        source.query_row("SELECT sqlcipher_export('encrypted')", [], |_| Ok(()))?;
        source.execute_batch(&format!(
            "PRAGMA encrypted.user_version = {version};
             PRAGMA encrypted.application_id = {APPLICATION_ID};
             DETACH DATABASE encrypted;"
        ))?;
        drop(source);
        let store = ChartStore::open(
            &staged,
            StoreOptions {
                encryption_key: Some(key.clone()),
                ..plain_options.clone()
            },
        )?;
        store.verify()?;
        let (copied, copied_chain) = (store.stats()?.charts, store.verify_audit()?);
        if copied != charts || copied_chain != chain {
            return Err(StoreError::Corrupt(format!(
                "the encrypted copy has {copied} charts and {} audit rows, the store {charts} and {}",
                copied_chain.rows, chain.rows
            )));
        }
        store.checkpoint()?;
        drop(store);
        std::fs::File::open(&staged)?.sync_all()?;
        Ok(EncryptReport {
            charts,
            audit_rows: chain.rows,
        })
    })();
    let report = match copied {
        Ok(r) => r,
        Err(e) => {
            clear(&staged);
            return Err(e);
        }
    };
    // The plain store's log was folded in and is empty: nothing of it may be read into the
    // encrypted file that takes its name.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sidecar(path, suffix));
        let _ = std::fs::remove_file(sidecar(&staged, suffix));
    }
    std::fs::rename(&staged, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(report)
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
