//! Requests for an accounting of disclosures (45 CFR 164.528). A request is a patient's, across
//! all their charts, so the store keeps it beside the index (migration 11) rather than in a
//! chart: logged with its 60-day deadline (164.528(c)(1)), extended once by 30 days with a
//! reason (164.528(c)(1)(ii)), free when it is the first in twelve months (164.528(c)(2)), and
//! answered with the accounting kept exactly as it was given (164.528(d)(2)). Every step is
//! audited on each of the patient's charts, in the same transaction.

use super::sql::{params, Begin, OptionalExtension, Row, Sql};
use serde::{Deserialize, Serialize};

use super::records::{parse_id, Accounting};
use super::{insert_audit, Actor, AuditAction, ChartStore, StoreError};
use crate::chart::{ChartId, Timestamp};

/// Days a covered entity has to provide an accounting (45 CFR 164.528(c)(1)).
pub const ACCOUNTING_DUE_DAYS: i64 = 60;
/// Days its one extension adds (164.528(c)(1)(ii)).
pub const ACCOUNTING_EXTENSION_DAYS: i64 = 30;
/// An accounting within this many days of an earlier one given to the same patient may carry
/// a cost-based fee; the first in that time is free (164.528(c)(2)).
const FREE_ONCE_IN_DAYS: i64 = 365;

/// A request as the records office logs it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccountingRequest {
    pub mrn: String,
    /// The patient, or who asks for them.
    pub requester: String,
    /// Where the accounting goes.
    pub address: String,
    /// A period shorter than six years that the patient asked for, from this time.
    #[serde(default)]
    pub since: Option<Timestamp>,
    /// A cost-based fee the patient was told of in advance; 0 for the first in 12 months.
    #[serde(default)]
    pub fee_cents: u64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountingRequestStatus {
    Open,
    Provided,
}

/// The one extension, with the reason the requester's notice gives.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountingExtension {
    pub by: String,
    pub at: Timestamp,
    pub reason: String,
    pub original_due_at: Timestamp,
}

/// A request for an accounting and where it stands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountingRequest {
    pub id: String,
    pub mrn: String,
    pub requester: String,
    pub address: String,
    pub since: Option<Timestamp>,
    pub received_at: Timestamp,
    pub received_by: String,
    pub due_at: Timestamp,
    pub fee_cents: u64,
    /// No accounting was given to this patient in the twelve months before: it is free.
    pub first_in_twelve_months: bool,
    pub extension: Option<AccountingExtension>,
    pub status: AccountingRequestStatus,
    pub provided_at: Option<Timestamp>,
    pub provided_by: Option<String>,
}

const COLUMNS: &str = "id, mrn, requester, address, since, received_at, received_by, due_at,
     fee_cents, first_in_year, extended_at, extended_by, extension_reason, original_due_at,
     status, provided_at, provided_by";

fn time(s: String) -> Result<Timestamp, StoreError> {
    Timestamp::parse(&s).map_err(|e| StoreError::Corrupt(format!("an accounting request: {e}")))
}

fn opt_time(s: Option<String>) -> Result<Option<Timestamp>, StoreError> {
    s.map(time).transpose()
}

/// The columns of a row, read as they are; [`request`] checks them.
type Columns = (
    [String; 4],
    Option<String>,
    [String; 3],
    i64,
    bool,
    [Option<String>; 4],
    String,
    [Option<String>; 2],
);

fn columns(r: &Row<'_>) -> Result<Columns, StoreError> {
    Ok((
        [r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?],
        r.get(4)?,
        [r.get(5)?, r.get(6)?, r.get(7)?],
        r.get(8)?,
        r.get(9)?,
        [r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?],
        r.get(14)?,
        [r.get(15)?, r.get(16)?],
    ))
}

fn request(c: Columns) -> Result<AccountingRequest, StoreError> {
    let (
        [id, mrn, requester, address],
        since,
        [received_at, received_by, due_at],
        fee,
        first,
        ext,
        status,
        [provided_at, provided_by],
    ) = c;
    let [extended_at, extended_by, reason, original_due_at] = ext;
    let extension = match (extended_at, extended_by, reason, original_due_at) {
        (Some(at), Some(by), Some(reason), Some(original)) => Some(AccountingExtension {
            by,
            at: time(at)?,
            reason,
            original_due_at: time(original)?,
        }),
        (None, ..) => None,
        _ => {
            return Err(StoreError::Corrupt(format!(
                "accounting request {id}: a part of its extension is missing"
            )))
        }
    };
    Ok(AccountingRequest {
        since: opt_time(since)?,
        received_at: time(received_at)?,
        received_by,
        due_at: time(due_at)?,
        fee_cents: u64::try_from(fee)
            .map_err(|_| StoreError::Corrupt(format!("accounting request {id}: its fee")))?,
        first_in_twelve_months: first,
        extension,
        status: match status.as_str() {
            "open" => AccountingRequestStatus::Open,
            "provided" => AccountingRequestStatus::Provided,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "accounting request {id}: status {status}"
                )))
            }
        },
        provided_at: opt_time(provided_at)?,
        provided_by,
        id,
        mrn,
        requester,
        address,
    })
}

/// The keys of the patient's charts, for the audit rows; none is refused.
fn patient_charts(tx: &Sql<'_>, mrn: &str) -> Result<Vec<ChartId>, StoreError> {
    let ids = tx
        .prepare_cached("SELECT id FROM charts WHERE mrn = ?1 ORDER BY id")?
        .query_map([mrn], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(StoreError::NoSuchPatient(mrn.to_string()));
    }
    ids.iter().map(|s| parse_id(s)).collect()
}

/// One audit row on each of the patient's charts.
fn audit_on_charts(
    tx: &Sql<'_>,
    by: &Actor,
    action: AuditAction,
    charts: &[ChartId],
    detail: &str,
) -> Result<(), StoreError> {
    for &chart in charts {
        insert_audit(tx, by, action, Some(chart), &[], Some(detail))?;
    }
    Ok(())
}

fn load(tx: &Sql<'_>, id: &str) -> Result<AccountingRequest, StoreError> {
    let c = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM accounting_requests WHERE id = ?1"
        ))?
        .query_row([id], columns)
        .optional()?
        .ok_or_else(|| StoreError::NoSuchAccountingRequest(id.to_string()))?;
    request(c)
}

fn open(tx: &Sql<'_>, id: &str) -> Result<AccountingRequest, StoreError> {
    let r = load(tx, id)?;
    if r.status != AccountingRequestStatus::Open {
        return Err(StoreError::OutOfTurn(format!(
            "accounting request {id} was already answered"
        )));
    }
    Ok(r)
}

impl ChartStore {
    /// Logs a request for an accounting, received `now` and due in
    /// [`ACCOUNTING_DUE_DAYS`]. A fee may only be charged when another accounting was given
    /// to the patient in the twelve months before.
    pub fn log_accounting_request(
        &self,
        by: &Actor,
        new: &NewAccountingRequest,
        now: Timestamp,
    ) -> Result<AccountingRequest, StoreError> {
        for (field, v) in [("requester", &new.requester), ("address", &new.address)] {
            if v.trim().is_empty() {
                return Err(StoreError::Invalid(format!("the {field} is required")));
            }
        }
        if new.since.is_some_and(|s| s >= now) {
            return Err(StoreError::Invalid(
                "the period asked for must start before today".into(),
            ));
        }
        let fee = i64::try_from(new.fee_cents)
            .map_err(|_| StoreError::Invalid("the fee is too large".into()))?;
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let charts = patient_charts(&tx, &new.mrn)?;
        let year_ago = now.plus_seconds(-FREE_ONCE_IN_DAYS * 86_400).to_rfc3339();
        let given: i64 = tx
            .prepare_cached(
                "SELECT count(*) FROM accounting_requests
                 WHERE mrn = ?1 AND status = 'provided' AND provided_at > ?2",
            )?
            .query_row(params![new.mrn, year_ago], |r| r.get(0))?;
        let first = given == 0;
        if first && fee > 0 {
            return Err(StoreError::Invalid(
                "the first accounting in twelve months is free (45 CFR 164.528(c)(2))".into(),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let due = now.plus_seconds(ACCOUNTING_DUE_DAYS * 86_400);
        tx.prepare_cached(
            "INSERT INTO accounting_requests (id, mrn, requester, address, since, received_at,
                 received_by, due_at, fee_cents, first_in_year, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'open')",
        )?
        .execute(params![
            id,
            new.mrn,
            new.requester.trim(),
            new.address.trim(),
            new.since.map(|s| s.to_rfc3339()),
            now.to_rfc3339(),
            by.user,
            due.to_rfc3339(),
            fee,
            first,
        ])?;
        let detail = format!("accounting request {id} logged");
        audit_on_charts(&tx, by, AuditAction::Write, &charts, &detail)?;
        let logged = load(&tx, &id)?;
        tx.commit()?;
        Ok(logged)
    }

    /// Takes a request's one extension, no later than its due date, with the reason the
    /// requester is told; it is then due [`ACCOUNTING_EXTENSION_DAYS`] later.
    pub fn extend_accounting_request(
        &self,
        by: &Actor,
        id: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<AccountingRequest, StoreError> {
        if reason.trim().is_empty() {
            return Err(StoreError::Invalid(
                "an extension gives the reason for the delay".into(),
            ));
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let r = open(&tx, id)?;
        if r.extension.is_some() {
            return Err(StoreError::OutOfTurn(format!(
                "accounting request {id} has had its one extension"
            )));
        }
        if now > r.due_at {
            return Err(StoreError::OutOfTurn(format!(
                "accounting request {id} is past due: an extension is noticed within the 60 days"
            )));
        }
        let due = r.due_at.plus_seconds(ACCOUNTING_EXTENSION_DAYS * 86_400);
        tx.prepare_cached(
            "UPDATE accounting_requests SET extended_at = ?2, extended_by = ?3,
                 extension_reason = ?4, original_due_at = due_at, due_at = ?5
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            now.to_rfc3339(),
            by.user,
            reason.trim(),
            due.to_rfc3339()
        ])?;
        let charts = patient_charts(&tx, &r.mrn)?;
        let detail = format!("accounting request {id} extended");
        audit_on_charts(&tx, by, AuditAction::Write, &charts, &detail)?;
        let extended = load(&tx, id)?;
        tx.commit()?;
        Ok(extended)
    }

    /// Answers a request: the patient's accounting as of `now` (from the period they asked
    /// for, if shorter than six years), kept with the request as it was given. Reading the
    /// charts for it is audited on each.
    pub fn provide_accounting(
        &self,
        by: &Actor,
        id: &str,
        now: Timestamp,
    ) -> Result<(AccountingRequest, Accounting), StoreError> {
        let asked = self
            .accounting_request(id)?
            .ok_or_else(|| StoreError::NoSuchAccountingRequest(id.to_string()))?
            .0;
        let mut accounting = self.accounting_of_disclosures(&asked.mrn, now)?;
        if let Some(since) = asked.since {
            accounting.from = accounting.from.max(since);
            let from = accounting.from;
            accounting.disclosures.retain(|d| d.disclosure.at >= from);
        }
        let kept = serde_json::to_string(&accounting)
            .map_err(|e| StoreError::Invalid(format!("the accounting: {e}")))?;
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        open(&tx, id)?;
        tx.prepare_cached(
            "UPDATE accounting_requests SET status = 'provided', provided_at = ?2,
                 provided_by = ?3, accounting = ?4
             WHERE id = ?1",
        )?
        .execute(params![id, now.to_rfc3339(), by.user, kept])?;
        let detail = format!(
            "accounting of disclosures given, request {id}: {} listed",
            accounting.disclosures.len()
        );
        audit_on_charts(&tx, by, AuditAction::Read, &accounting.charts, &detail)?;
        let provided = load(&tx, id)?;
        tx.commit()?;
        Ok((provided, accounting))
    }

    /// A request, and the accounting given for it once it was answered.
    pub fn accounting_request(
        &self,
        id: &str,
    ) -> Result<Option<(AccountingRequest, Option<Accounting>)>, StoreError> {
        self.inner.with_reader(|conn| {
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS}, accounting FROM accounting_requests WHERE id = ?1"
                ))?
                .query_row([id], |r| Ok((columns(r)?, r.get::<_, Option<String>>(17)?)))
                .optional()?;
            let Some((c, given)) = found else {
                return Ok(None);
            };
            let given = given
                .map(|json| {
                    serde_json::from_str(&json).map_err(|e| {
                        StoreError::Corrupt(format!("the accounting given for request {id}: {e}"))
                    })
                })
                .transpose()?;
            Ok(Some((request(c)?, given)))
        })
    }

    /// The open requests, soonest due first; or, with `mrn`, every request of that patient,
    /// newest first.
    pub fn accounting_requests(
        &self,
        mrn: Option<&str>,
    ) -> Result<Vec<AccountingRequest>, StoreError> {
        self.inner.with_reader(|conn| {
            let mut stmt = match mrn {
                None => conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM accounting_requests WHERE status = 'open'
                     ORDER BY due_at, id"
                ))?,
                Some(_) => conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM accounting_requests WHERE mrn = ?1
                     ORDER BY received_at DESC, id"
                ))?,
            };
            let rows = match mrn {
                None => stmt
                    .query_map(params![], columns)?
                    .collect::<Result<Vec<_>, _>>()?,
                Some(m) => stmt
                    .query_map([m], columns)?
                    .collect::<Result<Vec<_>, _>>()?,
            };
            rows.into_iter().map(request).collect()
        })
    }
}
