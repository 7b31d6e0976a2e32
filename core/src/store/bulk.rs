//! FHIR Bulk Data export, as the store keeps it (docs/fhir.md, "Bulk Data export"): the
//! systems registered to export (SMART Backend Services clients, with their public keys),
//! the client assertions already used, the export jobs, and their NDJSON files, kept in the
//! store so they are encrypted at rest with it and any node can serve them.

use serde::{Deserialize, Serialize};

use super::sql::{params, Begin, OptionalExtension};
use super::{insert_audit, now_millis, Actor, AuditAction};
use super::{ChartStore, StoreError};
use crate::chart::{ChartId, DisclosurePurpose, Timestamp};

/// A system that may export.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BulkClient {
    pub client_id: String,
    pub name: String,
    /// Its public keys, a JWK Set (`{"keys": [...]}`).
    pub jwks: String,
    /// Why it receives charts, when that makes each export a disclosure (an exchange
    /// partner); none for the hospital's own use (its analytics).
    pub disclosure: Option<DisclosurePurpose>,
    pub recipient: Option<String>,
    pub recipient_address: Option<String>,
    pub registered_by: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub registered_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub revoked_at: Option<Timestamp>,
}

/// A client to register.
#[derive(Debug, Clone, Deserialize)]
pub struct NewBulkClient {
    pub client_id: String,
    pub name: String,
    pub jwks: String,
    pub disclosure: Option<DisclosurePurpose>,
    pub recipient: Option<String>,
    pub recipient_address: Option<String>,
}

/// An export job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkJob {
    pub id: String,
    pub client_id: String,
    pub request: String,
    pub ward: Option<String>,
    pub since: Option<Timestamp>,
    pub types: Vec<String>,
    /// `running`, `done`, `failed` or `cancelled`.
    pub status: String,
    pub done: u64,
    pub total: u64,
    pub transaction_time: Timestamp,
    pub error: Option<String>,
    /// (name, resource type, resources) of each file, once done.
    pub files: Vec<(String, String, u64)>,
    /// When it finished (done, failed or cancelled); its files are kept a while after.
    pub finished_at: Option<Timestamp>,
}

fn millis(ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_unix_millis(ms).map_err(|_| StoreError::Corrupt("a time out of range".into()))
}

impl ChartStore {
    /// Registers (or replaces) a system that may export. Audited.
    pub fn register_bulk_client(
        &self,
        by: &Actor,
        new: &NewBulkClient,
    ) -> Result<BulkClient, StoreError> {
        let id = new.client_id.trim();
        if id.is_empty() || new.name.trim().is_empty() {
            return Err(StoreError::Invalid(
                "a client needs a client_id and a name".into(),
            ));
        }
        if new.disclosure.is_some()
            && (new.recipient.as_deref().is_none_or(|r| r.trim().is_empty())
                || new
                    .recipient_address
                    .as_deref()
                    .is_none_or(|r| r.trim().is_empty()))
        {
            return Err(StoreError::Invalid(
                "a client whose exports are disclosures names its recipient and their address (45 CFR 164.528)".into(),
            ));
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        // A revoked client's id is never given again: its jobs and tokens stay its own.
        let revoked = tx
            .prepare_cached(
                "SELECT 1 FROM bulk_clients WHERE client_id = ?1 AND revoked_at IS NOT NULL",
            )?
            .exists(params![id])?;
        if revoked {
            return Err(StoreError::Invalid(format!(
                "client {id} was revoked; register the system under a new client_id"
            )));
        }
        tx.prepare_cached(
            "INSERT INTO bulk_clients (client_id, name, jwks, purpose, recipient,
                 recipient_address, registered_by, registered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (client_id) DO UPDATE SET name = ?2, jwks = ?3, purpose = ?4,
                 recipient = ?5, recipient_address = ?6, registered_by = ?7,
                 registered_at = ?8",
        )?
        .execute(params![
            id,
            new.name.trim(),
            new.jwks,
            new.disclosure.map_or("use", |p| p.token()),
            new.recipient,
            new.recipient_address,
            by.user,
            now_millis()
        ])?;
        insert_audit(
            &tx,
            by,
            AuditAction::Admin,
            None,
            &[],
            Some(&format!("bulk export client {id} registered")),
        )?;
        tx.commit()?;
        self.bulk_client(id)?
            .ok_or_else(|| StoreError::Corrupt("a client vanished".into()))
    }

    /// Revokes a client: its tokens are refused from now on. Audited.
    pub fn revoke_bulk_client(&self, by: &Actor, id: &str) -> Result<(), StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let n = tx
            .prepare_cached(
                "UPDATE bulk_clients SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![id, now_millis()])?;
        if n == 0 {
            return Err(StoreError::Invalid(format!(
                "no active bulk export client {id}"
            )));
        }
        insert_audit(
            &tx,
            by,
            AuditAction::Admin,
            None,
            &[],
            Some(&format!("bulk export client {id} revoked")),
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn bulk_client(&self, id: &str) -> Result<Option<BulkClient>, StoreError> {
        Ok(self
            .bulk_clients_where("client_id = ?1", Some(id))?
            .into_iter()
            .next())
    }

    pub fn bulk_clients(&self) -> Result<Vec<BulkClient>, StoreError> {
        self.bulk_clients_where("1 = 1", None)
    }

    fn bulk_clients_where(
        &self,
        filter: &str,
        id: Option<&str>,
    ) -> Result<Vec<BulkClient>, StoreError> {
        type Row = (
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            String,
            i64,
            Option<i64>,
        );
        let rows: Vec<Row> = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT client_id, name, jwks, purpose, recipient, recipient_address,
                        registered_by, registered_at, revoked_at
                 FROM bulk_clients WHERE {filter} ORDER BY client_id"
            ))?;
            let row = |r: &super::sql::Row<'_>| r.columns();
            let rows = match id {
                Some(id) => stmt.query_map(params![id], row)?,
                None => stmt.query_map(params![], row)?,
            };
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter()
            .map(
                |(client_id, name, jwks, purpose, recipient, address, by, at, revoked)| {
                    Ok(BulkClient {
                        client_id,
                        name,
                        jwks,
                        disclosure: match purpose.as_str() {
                            "use" => None,
                            p => Some(DisclosurePurpose::from_token(p).map_err(|_| {
                                StoreError::Corrupt("a client with an invalid purpose".into())
                            })?),
                        },
                        recipient,
                        recipient_address: address,
                        registered_by: by,
                        registered_at: millis(at)?,
                        revoked_at: revoked.map(millis).transpose()?,
                    })
                },
            )
            .collect()
    }

    /// Takes a client assertion's `jti` (until `exp`, seconds): false if it was used before
    /// (a replay). Assertions past their time are forgotten as it goes.
    pub fn use_bulk_assertion(
        &self,
        client: &str,
        jti: &str,
        exp: i64,
    ) -> Result<bool, StoreError> {
        let conn = self.inner.writer()?;
        conn.prepare_cached("DELETE FROM bulk_assertions WHERE exp < ?1")?
            .execute(params![Timestamp::now().unix() - 60])?;
        let n = conn
            .prepare_cached(
                "INSERT INTO bulk_assertions (client_id, jti, exp) VALUES (?1, ?2, ?3)
                 ON CONFLICT (client_id, jti) DO NOTHING",
            )?
            .execute(params![client, jti, exp])?;
        Ok(n == 1)
    }

    /// The charts an export covers: every chart, or a ward's; changed since `since`.
    pub fn charts_for_export(
        &self,
        ward: Option<&str>,
        since: Option<Timestamp>,
    ) -> Result<Vec<ChartId>, StoreError> {
        let since = since.map_or(i64::MIN, Timestamp::unix_millis);
        let ids: Vec<String> = self.inner.with_reader(|conn| {
            let mut stmt = match ward {
                Some(_) => conn.prepare_cached(
                    "SELECT id FROM charts WHERE modified_at >= ?1 AND ward = ?2 ORDER BY key",
                )?,
                None => conn
                    .prepare_cached("SELECT id FROM charts WHERE modified_at >= ?1 ORDER BY key")?,
            };
            let rows = match ward {
                Some(w) => stmt.query_map(params![since, w], |r| r.get(0))?,
                None => stmt.query_map(params![since], |r| r.get(0))?,
            };
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        ids.into_iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| StoreError::Corrupt("a chart row with an invalid id".into()))
            })
            .collect()
    }

    /// Starts a job: `running`, nothing done.
    pub fn start_bulk_job(&self, job: &BulkJob) -> Result<(), StoreError> {
        self.inner
            .writer()?
            .prepare_cached(
                "INSERT INTO bulk_jobs (id, client_id, request, ward, since, types, status,
                     total, transaction_time, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7, ?8, ?9)",
            )?
            .execute(params![
                job.id,
                job.client_id,
                job.request,
                job.ward,
                job.since.map(Timestamp::unix_millis),
                (!job.types.is_empty()).then(|| job.types.join(",")),
                job.total as i64,
                job.transaction_time.unix_millis(),
                now_millis()
            ])?;
        Ok(())
    }

    /// Jobs left running by a server that stopped: failed, so their clients stop polling and
    /// kick off again. Run as the server starts (one node: its own jobs are the only ones
    /// it could have left; on PostgreSQL, jobs older than `stale` only).
    /// The files they wrote so far go.
    pub fn fail_abandoned_bulk_jobs(&self, stale: std::time::Duration) -> Result<u64, StoreError> {
        let before = now_millis() - stale.as_millis() as i64;
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        tx.prepare_cached(
            "DELETE FROM bulk_files WHERE job IN
                 (SELECT id FROM bulk_jobs WHERE status = 'running' AND created_at < ?1)",
        )?
        .execute(params![before])?;
        let n = tx
            .prepare_cached(
                "UPDATE bulk_jobs SET status = 'failed', finished_at = ?2,
                     error = 'the server stopped during the export; kick it off again'
                 WHERE status = 'running' AND created_at < ?1",
            )?
            .execute(params![before, now_millis()])?;
        tx.commit()?;
        Ok(n as u64)
    }

    /// How many of a client's jobs are running.
    pub fn running_bulk_jobs(&self, client: &str) -> Result<u64, StoreError> {
        let n: i64 = self.inner.with_reader(|conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM bulk_jobs WHERE client_id = ?1 AND status = 'running'",
                params![client],
                |r| r.get(0),
            )?)
        })?;
        Ok(n.max(0) as u64)
    }

    /// A running job's progress; false once it is no longer running (cancelled).
    pub fn bulk_progress(&self, id: &str, done: u64) -> Result<bool, StoreError> {
        let n = self
            .inner
            .writer()?
            .prepare_cached("UPDATE bulk_jobs SET done = ?2 WHERE id = ?1 AND status = 'running'")?
            .execute(params![id, done as i64])?;
        Ok(n == 1)
    }

    /// One file of a running job, written as it fills (an export holds one file a resource
    /// type in memory, whatever its size); false once the job is no longer running
    /// (cancelled), when nothing is written. Listed and served only once the job is done.
    pub fn add_bulk_file(
        &self,
        id: &str,
        name: &str,
        kind: &str,
        count: u64,
        data: &[u8],
    ) -> Result<bool, StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let running = tx
            .prepare_cached("SELECT 1 FROM bulk_jobs WHERE id = ?1 AND status = 'running'")?
            .exists(params![id])?;
        if !running {
            return Ok(false);
        }
        tx.prepare_cached(
            "INSERT INTO bulk_files (job, name, type, count, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![id, name, kind, count as i64, data])?;
        tx.commit()?;
        Ok(true)
    }

    /// A job done: its last files, in one transaction with its status.
    pub fn finish_bulk_job(
        &self,
        id: &str,
        files: &[(String, String, u64, Vec<u8>)],
    ) -> Result<bool, StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let n = tx
            .prepare_cached(
                "UPDATE bulk_jobs SET status = 'done', done = total, finished_at = ?2
                 WHERE id = ?1 AND status = 'running'",
            )?
            .execute(params![id, now_millis()])?;
        if n == 0 {
            return Ok(false);
        }
        for (name, kind, count, data) in files {
            tx.prepare_cached(
                "INSERT INTO bulk_files (job, name, type, count, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![id, name, kind, *count as i64, data])?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// A job failed, with an error that names no patient; the files it wrote so far go.
    pub fn fail_bulk_job(&self, id: &str, error: &str) -> Result<(), StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let n = tx
            .prepare_cached(
                "UPDATE bulk_jobs SET status = 'failed', error = ?2, finished_at = ?3
                 WHERE id = ?1 AND status = 'running'",
            )?
            .execute(params![id, error, now_millis()])?;
        if n == 1 {
            tx.execute("DELETE FROM bulk_files WHERE job = ?1", [id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets jobs finished (done or failed) more than `age` ago, and their files: an
    /// export's files are a copy of patients' records, kept only while the client fetches
    /// them. Their status then answers as for no such job. How many went.
    pub fn expire_bulk_jobs(&self, age: std::time::Duration) -> Result<u64, StoreError> {
        let before = now_millis() - age.as_millis() as i64;
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        tx.prepare_cached(
            "DELETE FROM bulk_files WHERE job IN (SELECT id FROM bulk_jobs
                 WHERE status IN ('done', 'failed') AND finished_at <= ?1)",
        )?
        .execute(params![before])?;
        let n = tx
            .prepare_cached(
                "DELETE FROM bulk_jobs WHERE status IN ('done', 'failed') AND finished_at <= ?1",
            )?
            .execute(params![before])?;
        tx.commit()?;
        Ok(n as u64)
    }

    /// Deletes a job and its files (the client's DELETE: cancelled, or done with).
    pub fn delete_bulk_job(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        tx.execute("DELETE FROM bulk_files WHERE job = ?1", [id])?;
        let n = tx.execute("DELETE FROM bulk_jobs WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(n == 1)
    }

    pub fn bulk_job(&self, id: &str) -> Result<Option<BulkJob>, StoreError> {
        type Row = (
            String,
            String,
            Option<String>,
            Option<i64>,
            Option<String>,
            String,
            i64,
            i64,
            i64,
            Option<String>,
            Option<i64>,
        );
        let found: Option<(Row, Vec<(String, String, i64)>)> = self.inner.with_reader(|conn| {
            let row: Option<Row> = conn
                .prepare_cached(
                    "SELECT client_id, request, ward, since, types, status, done, total,
                            transaction_time, error, finished_at FROM bulk_jobs WHERE id = ?1",
                )?
                .query_row(params![id], |r| r.columns())
                .optional()?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(
                "SELECT name, type, count FROM bulk_files WHERE job = ?1 ORDER BY name",
            )?;
            let files = stmt
                .query_map(params![id], |r| r.columns())?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some((row, files)))
        })?;
        let Some((
            (client_id, request, ward, since, types, status, done, total, tt, error, finished),
            files,
        )) = found
        else {
            return Ok(None);
        };
        Ok(Some(BulkJob {
            id: id.to_string(),
            client_id,
            request,
            ward,
            since: since.map(millis).transpose()?,
            types: types
                .map(|t| t.split(',').map(String::from).collect())
                .unwrap_or_default(),
            status,
            done: done.max(0) as u64,
            total: total.max(0) as u64,
            transaction_time: millis(tt)?,
            error,
            files: files
                .into_iter()
                .map(|(n, t, c)| (n, t, c.max(0) as u64))
                .collect(),
            finished_at: finished.map(millis).transpose()?,
        }))
    }

    /// Records that `charts` were disclosed by export `job` to `client` (a client whose
    /// exports are disclosures), in one transaction: each is in its patient's accounting.
    pub fn record_bulk_disclosures(
        &self,
        client: &BulkClient,
        job: &str,
        charts: &[ChartId],
        at: Timestamp,
        description: &str,
    ) -> Result<(), StoreError> {
        let Some(purpose) = client.disclosure else {
            return Ok(());
        };
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        for chart in charts {
            tx.prepare_cached(
                "INSERT INTO bulk_disclosures (chart_id, job, at, recipient, recipient_address,
                     description, purpose, by_client)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                chart.to_string(),
                job,
                at.unix_millis(),
                client.recipient.as_deref().unwrap_or_default(),
                client.recipient_address.as_deref().unwrap_or_default(),
                description,
                purpose.token(),
                client.client_id
            ])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The disclosures exports made of a chart, as an accounting lists them.
    pub(super) fn bulk_disclosures_of(
        &self,
        chart: ChartId,
    ) -> Result<Vec<crate::chart::DisclosureView>, StoreError> {
        type Row = (String, i64, String, String, String, String, String);
        let rows: Vec<Row> = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT job, at, recipient, recipient_address, description, purpose, by_client
                 FROM bulk_disclosures WHERE chart_id = ?1 ORDER BY at, job",
            )?;
            let rows = stmt.query_map(params![chart.to_string()], |r| r.columns())?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        rows.into_iter()
            .map(
                |(job, at, recipient, recipient_address, description, purpose, by)| {
                    Ok(crate::chart::DisclosureView {
                        id: format!("bulk-{job}"),
                        request_id: None,
                        authorization: None,
                        at: millis(at)?,
                        recipient,
                        recipient_address,
                        description,
                        purpose: DisclosurePurpose::from_token(&purpose).map_err(|_| {
                            StoreError::Corrupt("a disclosure with an invalid purpose".into())
                        })?,
                        by,
                    })
                },
            )
            .collect()
    }

    /// One file of a job.
    pub fn bulk_file(&self, job: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached("SELECT data FROM bulk_files WHERE job = ?1 AND name = ?2")?
                .query_row(params![job, name], |r| r.get(0))
                .optional()?)
        })
    }
}
