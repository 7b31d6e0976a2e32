//! Scanned documents' files (docs/records-office.md, "Scanned documents"): kept outside the
//! charts' automerge history, named by the SHA-256 of their bytes, in parts of
//! [`ATTACHMENT_PART_BYTES`], in the store (so encrypted at rest with it).
//!
//! On the server a file arrives with the entry that names it, in the same transaction. On a
//! tablet a file arrives only when someone opens it: the app asks ([`ChartStore::want_attachment`]),
//! the sync client fetches the parts one at a time, each kept as it comes (a dropped
//! connection or a restart resumes at the next missing part), and the file is complete only
//! once the last part is in and the whole hashes to its name. `chart_attachments` says which
//! charts name a file: a file goes when the last chart that names it is removed or destroyed.
//! A server restored from a backup older than a filing has the entry back (from a tablet) and
//! not the file: it takes the file back the same way, part by part from a tablet that has it,
//! or whole when the records office files it again ([`ChartStore::restore_attachment`]).

use sha2::{Digest, Sha256};

use super::sql::{params, Begin, Dialect, OptionalExtension, Sql};
use super::{now_millis, Actor, ChartStore, StoreError};
use crate::chart::{AttachmentRef, ChartId, MediaType, NewScannedDocument, Staff, Timestamp};

/// The bytes of one part: one protocol message each on the way to a tablet.
pub const ATTACHMENT_PART_BYTES: usize = 256 * 1024;

/// How many parts a file of `size` bytes is kept in.
pub fn parts_of(size: u64) -> u32 {
    size.div_ceil(ATTACHMENT_PART_BYTES as u64) as u32
}

/// Hex SHA-256 of a file: its name.
pub fn attachment_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A file the store knows of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAttachment {
    pub hash: String,
    pub media_type: MediaType,
    pub size: u64,
    pub parts: u32,
    /// Every part is here and the whole hashes to `hash`. On a tablet, a file being fetched
    /// is not complete.
    pub complete: bool,
}

/// What a part received from the server did (device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartStored {
    /// Kept; the next part to ask for.
    More(u32),
    /// The file is complete and hashes to its name.
    Complete,
    /// A part out of the file's range or of the wrong length, or parts that do not hash to
    /// the file's name: all of them are dropped, and the file is fetched again from the start
    /// if asked again.
    Corrupt,
    /// Not a file this device is fetching, or a part it has already: ignored, and nothing
    /// more asked for on its account.
    Unwanted,
}

/// Where the file of a scanned document stands on the server ([`ChartStore::named_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedFile {
    /// The chart names the file, and the store has it whole.
    Here,
    /// The chart names the file and the store lacks it: filed after the backup the store was
    /// restored from (the entry came back from a tablet, the file did not). Filed again, or
    /// sent back by a tablet that has it, it is here again ([`ChartStore::restore_attachment`]).
    Missing(AttachmentRef),
    /// The chart names no such file.
    NotNamed,
}

/// What `file_scanned_document` needs besides the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedDocument {
    pub media_type: MediaType,
    pub pages: u32,
    pub title: String,
    pub document_type: crate::chart::DocumentType,
    pub document_date: Option<String>,
    /// A description, or nothing.
    pub body: String,
}

fn media(token: String) -> Result<MediaType, StoreError> {
    MediaType::from_token(&token)
        .map_err(|_| StoreError::Corrupt("an attachment's media type".into()))
}

/// Writes a file's row and parts, unless the store has it already (the same bytes filed on
/// another chart are kept once). What a tablet had sent back of it so far, after a restore,
/// is replaced by the whole.
fn insert_file(
    tx: &Sql<'_>,
    hash: &str,
    media_type: MediaType,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let partial = tx
        .prepare_cached(&format!(
            "SELECT 1 FROM attachments WHERE hash = ?1 AND complete = 0{}",
            row_lock(tx)
        ))?
        .exists(params![hash])?;
    let row = params![
        hash,
        media_type.token(),
        bytes.len() as i64,
        parts_of(bytes.len() as u64) as i64,
        now_millis()
    ];
    if partial {
        tx.execute("DELETE FROM attachment_parts WHERE hash = ?1", [hash])?;
        tx.prepare_cached(
            "UPDATE attachments SET media_type = ?2, size = ?3, parts = ?4, complete = 1,
             stored_at = ?5 WHERE hash = ?1",
        )?
        .execute(row)?;
    } else {
        let inserted = tx
            .prepare_cached(
                "INSERT INTO attachments (hash, media_type, size, parts, complete, stored_at)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5) ON CONFLICT (hash) DO NOTHING",
            )?
            .execute(row)?;
        if inserted == 0 {
            // Known already, and whole.
            return Ok(());
        }
    }
    for (n, part) in bytes.chunks(ATTACHMENT_PART_BYTES).enumerate() {
        tx.prepare_cached(
            "INSERT INTO attachment_parts (hash, part, data) VALUES (?1, ?2, ?3)
             ON CONFLICT (hash, part) DO NOTHING",
        )?
        .execute(params![hash, n as i64, part])?;
    }
    Ok(())
}

/// What locks a file's row for the rest of the transaction: PostgreSQL's `FOR UPDATE` (its
/// transactions run side by side); SQLite's transaction holds the one writer already.
fn row_lock(tx: &Sql<'_>) -> &'static str {
    match tx.dialect() {
        Dialect::Postgres => " FOR UPDATE",
        _ => "",
    }
}

/// Whether the store has chart `id` (as the transaction sees it): a file is kept, and linked,
/// only for a chart still here, not one destroyed or removed meanwhile.
fn chart_here(tx: &Sql<'_>, chart: ChartId) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM charts WHERE id = ?1")?
        .exists(params![chart.to_string()])?)
}

fn link(tx: &Sql<'_>, chart: ChartId, hash: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO chart_attachments (chart_id, hash) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?
    .execute(params![chart.to_string(), hash])?;
    Ok(())
}

/// Forgets that `chart` names any file, and drops every file no chart names any more: part
/// of removing a chart from a tablet and of destroying one.
pub(super) fn release_chart(tx: &Sql<'_>, chart: &str) -> Result<(), StoreError> {
    let named: Vec<String> = {
        let mut stmt =
            tx.prepare_cached("SELECT hash FROM chart_attachments WHERE chart_id = ?1")?;
        let rows = stmt.query_map(params![chart], |r| r.get(0))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.execute("DELETE FROM chart_attachments WHERE chart_id = ?1", [chart])?;
    for hash in named {
        for table in ["attachment_parts", "attachments"] {
            tx.execute(
                &format!(
                    "DELETE FROM {table} WHERE hash = ?1
                     AND NOT EXISTS (SELECT 1 FROM chart_attachments WHERE hash = ?1)"
                ),
                [&hash],
            )?;
        }
    }
    Ok(())
}

impl ChartStore {
    /// Files a scanned document on chart `id` (server): the file's parts and the entry that
    /// names it are one commit, audited as `by`'s write. The entry's id and what it says of
    /// the file. The chart's rules decide who may.
    pub fn file_scanned_document(
        &self,
        actor: &Actor,
        by: &Staff,
        id: ChartId,
        at: Timestamp,
        doc: ScannedDocument,
        bytes: &[u8],
    ) -> Result<(String, AttachmentRef), StoreError> {
        if bytes.is_empty() {
            return Err(StoreError::Invalid("the file is empty".into()));
        }
        let attachment = AttachmentRef {
            hash: attachment_hash(bytes),
            media_type: doc.media_type,
            size: bytes.len() as u64,
            pages: doc.pages,
            title: doc.title,
            document_type: doc.document_type,
            document_date: doc.document_date,
        };
        let hash = attachment.hash.clone();
        let also = |tx: &Sql<'_>| {
            insert_file(tx, &hash, doc.media_type, bytes)?;
            link(tx, id, &hash)
        };
        let new = NewScannedDocument {
            attachment: attachment.clone(),
            body: doc.body,
        };
        let entry = self.update_inner(
            id,
            Some(actor),
            |chart| chart.add_scanned_document(by, at, new),
            Some(&also),
            false,
        )?;
        Ok((entry, attachment))
    }

    /// What the store knows of a file.
    pub fn attachment(&self, hash: &str) -> Result<Option<StoredAttachment>, StoreError> {
        let row: Option<(String, String, i64, i64, bool)> = self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT hash, media_type, size, parts, complete = 1
                     FROM attachments WHERE hash = ?1",
                )?
                .query_row(params![hash], |r| r.columns())
                .optional()?)
        })?;
        row.map(|(hash, media_type, size, parts, complete)| {
            Ok(StoredAttachment {
                hash,
                media_type: media(media_type)?,
                size: size as u64,
                parts: parts as u32,
                complete,
            })
        })
        .transpose()
    }

    /// Whether chart `id` names the file `hash` (as far as this store knows: on the server,
    /// every file filed through it; on a tablet, every file asked for).
    pub fn chart_names_attachment(&self, id: ChartId, hash: &str) -> Result<bool, StoreError> {
        self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM chart_attachments WHERE chart_id = ?1 AND hash = ?2",
                )?
                .exists(params![id.to_string(), hash])?)
        })
    }

    /// Where the file `hash` that chart `id` may name stands (server). A chart that came back
    /// from a tablet after a restore names its files in its entries only: the link to a file
    /// the store has is made again here.
    pub fn named_file(&self, id: ChartId, hash: &str) -> Result<NamedFile, StoreError> {
        let whole = |this: &Self| -> Result<bool, StoreError> {
            Ok(this.attachment(hash)?.is_some_and(|a| a.complete))
        };
        if self.chart_names_attachment(id, hash)? && whole(self)? {
            return Ok(NamedFile::Here);
        }
        let named = self
            .read(id, |c| c.attachment_ref(hash))?
            .map_err(|error| StoreError::Chart { id, error })?;
        let Some(a) = named else {
            return Ok(NamedFile::NotNamed);
        };
        if !whole(self)? {
            return Ok(NamedFile::Missing(a));
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        link(&tx, id, hash)?;
        tx.commit()?;
        Ok(NamedFile::Here)
    }

    /// The files chart `id` names that the store lacks (server), each once: those filed after
    /// the backup the store was restored from, until they are filed again or a tablet sends
    /// them back.
    pub fn missing_attachments(&self, id: ChartId) -> Result<Vec<AttachmentRef>, StoreError> {
        let named = self
            .read(id, |c| c.attachments())?
            .map_err(|error| StoreError::Chart { id, error })?;
        let mut missing: Vec<AttachmentRef> = Vec::new();
        for a in named {
            if missing.iter().any(|m| m.hash == a.hash) {
                continue;
            }
            if let NamedFile::Missing(a) = self.named_file(id, &a.hash)? {
                missing.push(a);
            }
        }
        Ok(missing)
    }

    /// Puts back the file of a scanned document chart `id` names and the store lacks
    /// (server): `bytes` filed again by the records office, or sent back whole by a tablet.
    /// Kept and linked in one transaction, audited as `actor`'s write with `how`. What it
    /// says of the file, or `None` when the chart names no such file or the store has it.
    pub fn restore_attachment(
        &self,
        actor: &Actor,
        id: ChartId,
        bytes: &[u8],
        how: &str,
    ) -> Result<Option<AttachmentRef>, StoreError> {
        let hash = attachment_hash(bytes);
        let NamedFile::Missing(a) = self.named_file(id, &hash)? else {
            return Ok(None);
        };
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        if !chart_here(&tx, id)? {
            return Ok(None);
        }
        insert_file(&tx, &hash, a.media_type, bytes)?;
        link(&tx, id, &hash)?;
        let detail = format!("scanned document {} restored ({how})", &hash[..12]);
        super::audit::insert_audit(
            &tx,
            actor,
            super::AuditAction::Write,
            Some(id),
            &[],
            Some(&detail),
        )?;
        tx.commit()?;
        Ok(Some(a))
    }

    /// Part `part` of a complete file.
    pub fn attachment_part(&self, hash: &str, part: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT p.data FROM attachment_parts p JOIN attachments a ON a.hash = p.hash
                     WHERE p.hash = ?1 AND p.part = ?2 AND a.complete = 1",
                )?
                .query_row(params![hash, part as i64], |r| r.get(0))
                .optional()?)
        })
    }

    /// A complete file's bytes; `None` while it is not (not here, or still being fetched).
    pub fn attachment_bytes(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(meta) = self.attachment(hash)? else {
            return Ok(None);
        };
        if !meta.complete {
            return Ok(None);
        }
        let bytes = self.parts_joined(hash)?;
        if bytes.len() as u64 != meta.size || attachment_hash(&bytes) != meta.hash {
            return Err(StoreError::Corrupt(format!(
                "attachment {} does not hash to its name",
                &meta.hash[..12]
            )));
        }
        Ok(Some(bytes))
    }

    /// Asks for a file a chart names (device): kept as wanted, across restarts, until every
    /// part is here. The next part to fetch, or `None` when the file is complete already.
    pub fn want_attachment(
        &self,
        chart: ChartId,
        a: &AttachmentRef,
    ) -> Result<Option<u32>, StoreError> {
        if !crate::chart::is_sha256_hex(&a.hash) || a.size == 0 {
            return Err(StoreError::Invalid("not a file a chart names".into()));
        }
        {
            let mut conn = self.inner.writer()?;
            let tx = conn.transaction(Begin::Immediate)?;
            if !chart_here(&tx, chart)? {
                return Err(StoreError::NotFound(chart));
            }
            tx.prepare_cached(
                "INSERT INTO attachments (hash, media_type, size, parts, complete, stored_at)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT (hash) DO NOTHING",
            )?
            .execute(params![
                a.hash,
                a.media_type.token(),
                a.size as i64,
                parts_of(a.size) as i64,
                now_millis()
            ])?;
            link(&tx, chart, &a.hash)?;
            tx.commit()?;
        }
        self.next_part(&a.hash)
    }

    /// The first part of a wanted file not here yet (device); `None` when complete or not
    /// wanted.
    pub fn next_part(&self, hash: &str) -> Result<Option<u32>, StoreError> {
        self.inner.with_reader(|conn| {
            let row: Option<(i64, bool)> = conn
                .prepare_cached("SELECT parts, complete = 1 FROM attachments WHERE hash = ?1")?
                .query_row(params![hash], |r| r.columns())
                .optional()?;
            let Some((parts, false)) = row else {
                return Ok(None);
            };
            let have: Vec<i64> = {
                let mut stmt = conn.prepare_cached(
                    "SELECT part FROM attachment_parts WHERE hash = ?1 ORDER BY part",
                )?;
                let rows = stmt.query_map(params![hash], |r| r.get(0))?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            let next = (0..parts).find(|n| have.binary_search(n).is_err());
            Ok(next.map(|n| n as u32))
        })
    }

    /// Files asked for and not complete (device): (a chart that names it, hash, next part).
    /// A chart still on the device's wards is preferred to one that left them: the server
    /// sends a file only under a chart the device may read.
    pub fn wanted_attachments(&self) -> Result<Vec<(ChartId, String, u32)>, StoreError> {
        let rows: Vec<(String, String)> = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT (SELECT c.chart_id FROM chart_attachments c WHERE c.hash = a.hash
                         ORDER BY EXISTS (SELECT 1 FROM device_departures d
                                          WHERE d.chart_id = c.chart_id), c.chart_id
                         LIMIT 1) AS chart, a.hash
                 FROM attachments a
                 WHERE a.complete = 0
                   AND EXISTS (SELECT 1 FROM chart_attachments c WHERE c.hash = a.hash)
                 ORDER BY a.hash",
            )?;
            let rows = stmt.query_map(params![], |r| r.columns())?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (chart, hash) in rows {
            let chart: ChartId = chart
                .parse()
                .map_err(|_| StoreError::Corrupt("a chart id of an attachment".into()))?;
            if let Some(next) = self.next_part(&hash)? {
                out.push((chart, hash, next));
            }
        }
        Ok(out)
    }

    /// Keeps part `part` of a wanted file: a tablet's fetch, or (on a server restored from a
    /// backup) a file a tablet sends back. A part of the wrong length or out of range is not
    /// kept; on the last part the whole file is checked against its name, and parts that do
    /// not hash to it are all dropped. One transaction, the file's row locked: several
    /// connections may be sending the same file, and the records office filing it whole.
    pub fn store_attachment_part(
        &self,
        hash: &str,
        part: u32,
        data: &[u8],
    ) -> Result<PartStored, StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let row: Option<(i64, i64, bool)> = tx
            .prepare_cached(&format!(
                "SELECT size, parts, complete = 1 FROM attachments WHERE hash = ?1{}",
                row_lock(&tx)
            ))?
            .query_row(params![hash], |r| r.columns())
            .optional()?;
        let Some((size, parts, false)) = row else {
            return Ok(PartStored::Unwanted);
        };
        let expected = (size as usize)
            .saturating_sub(ATTACHMENT_PART_BYTES * part as usize)
            .min(ATTACHMENT_PART_BYTES);
        if i64::from(part) >= parts || data.len() != expected {
            // Not the file the chart describes: what it says of its size is wrong, or the
            // sender is. Asking on would never end.
            return Ok(PartStored::Corrupt);
        }
        let inserted = tx
            .prepare_cached(
                "INSERT INTO attachment_parts (hash, part, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT (hash, part) DO NOTHING",
            )?
            .execute(params![hash, part as i64, data])?;
        if inserted == 0 {
            // Had already: an answer to an ask made twice. The first answer asks on.
            return Ok(PartStored::Unwanted);
        }
        let have: Vec<i64> = {
            let mut stmt = tx.prepare_cached(
                "SELECT part FROM attachment_parts WHERE hash = ?1 ORDER BY part",
            )?;
            let rows = stmt.query_map(params![hash], |r| r.get(0))?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let outcome = match (0..parts).find(|n| have.binary_search(n).is_err()) {
            Some(next) => PartStored::More(next as u32),
            None => {
                let whole: Vec<Vec<u8>> = {
                    let mut stmt = tx.prepare_cached(
                        "SELECT data FROM attachment_parts WHERE hash = ?1 ORDER BY part",
                    )?;
                    let rows = stmt.query_map(params![hash], |r| r.get(0))?;
                    rows.collect::<Result<Vec<_>, _>>()?
                };
                if attachment_hash(&whole.concat()) == hash {
                    tx.execute(
                        "UPDATE attachments SET complete = 1 WHERE hash = ?1",
                        [hash],
                    )?;
                    PartStored::Complete
                } else {
                    tx.execute("DELETE FROM attachment_parts WHERE hash = ?1", [hash])?;
                    PartStored::Corrupt
                }
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Stops asking for a file not complete here (device): its parts so far and the ask go.
    pub fn drop_wanted_attachment(&self, hash: &str) -> Result<(), StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let wanted = tx
            .prepare_cached("SELECT 1 FROM attachments WHERE hash = ?1 AND complete = 0")?
            .exists(params![hash])?;
        if wanted {
            tx.execute("DELETE FROM attachment_parts WHERE hash = ?1", [hash])?;
            tx.execute("DELETE FROM chart_attachments WHERE hash = ?1", [hash])?;
            tx.execute("DELETE FROM attachments WHERE hash = ?1", [hash])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The parts of a file here, in order, joined.
    fn parts_joined(&self, hash: &str) -> Result<Vec<u8>, StoreError> {
        let parts: Vec<Vec<u8>> = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT data FROM attachment_parts WHERE hash = ?1 ORDER BY part",
            )?;
            let rows = stmt.query_map(params![hash], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        Ok(parts.concat())
    }
}
