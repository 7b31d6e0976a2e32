//! What the records office reads across charts: deficiencies by ward and due date and the
//! coding queue of discharged charts (from the index alone), and a patient's accounting of
//! disclosures. And the rebuild of the index when the audit's rules change.

use super::sql::{params, Begin, OptionalExtension, Row, Sql, Value};
use serde::{Deserialize, Serialize};

use super::{
    insert_deficiencies, principal_code, read_document, ChartStore, IndexFields, RebuildListener,
    StoreError,
};
use crate::chart::{
    Chart, ChartId, Deficiency, DeficiencyKind, DisclosureView, EncounterClass, EncounterStatus,
    Timestamp, ACCOUNTING_YEARS, RULES_VERSION,
};

/// Days after discharge the claim is held for the coding, unless the hospital sets its own
/// (`chartsync-server --bill-hold-days`): the coding queue's due date.
pub const DEFAULT_BILL_HOLD_DAYS: u32 = 3;

/// One deficiency on a worklist, with the chart it is on.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorklistItem {
    pub chart: ChartId,
    pub mrn: String,
    /// The patient's name, for the records console's screens. Not in the REST or CLI JSON,
    /// which name charts by id and MRN only.
    #[serde(skip)]
    pub family_name: String,
    #[serde(skip)]
    pub given_names: String,
    pub ward: String,
    pub status: EncounterStatus,
    pub discharged_at: Option<Timestamp>,
    pub deficiency: Deficiency,
    /// The person the records office routed it to, if any (the rule's `responsible` names
    /// who must act by the rules: often a role).
    pub assignee: Option<String>,
    /// The records office accepted it as it stands (a late H&P): it is no longer overdue.
    pub acknowledged: Option<Acknowledgement>,
    /// Its due date has passed and it is not acknowledged.
    pub overdue: bool,
}

/// Who acknowledged a deficiency, when and why.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub by: String,
    pub at: Timestamp,
    pub reason: String,
}

/// Which deficiencies a worklist holds; empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct DeficiencyFilter {
    /// The wards to list (`None`: every ward; an empty list: none).
    pub wards: Option<Vec<String>>,
    pub kind: Option<DeficiencyKind>,
    /// A user id or role token: the person it is assigned to, or, when it is assigned to no
    /// one, who the rules say must act.
    pub responsible: Option<String>,
    /// Only the overdue ones.
    pub overdue_only: bool,
    pub limit: Option<u32>,
    /// One chart's only (its completion, record by record).
    pub chart: Option<ChartId>,
}

/// A discharged chart waiting for final coding.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodingQueueItem {
    pub chart: ChartId,
    pub mrn: String,
    /// The patient's name, for the records console's screens. Not in the REST JSON, which
    /// names charts by id and MRN only.
    #[serde(skip)]
    pub family_name: String,
    #[serde(skip)]
    pub given_names: String,
    pub ward: String,
    /// The attending physician's staff id, if the encounter names one.
    pub attending: Option<String>,
    /// The encounter's class (inpatient, emergency, ...); none only in an index row not yet
    /// rebuilt.
    pub class: Option<EncounterClass>,
    pub admitted_at: Timestamp,
    pub discharged_at: Option<Timestamp>,
    /// Where the patient went, as the discharge recorded it.
    pub disposition: Option<String>,
    /// The principal ICD-10-CM diagnosis coded so far, if any.
    pub principal_diagnosis: Option<String>,
    /// Whether that principal diagnosis is final.
    pub principal_final: bool,
    /// Code assignments still proposed or queried.
    pub not_final: u32,
    /// Inpatient diagnoses without a present-on-admission indicator.
    pub poa_missing: u32,
    /// Physician queries still open.
    pub open_queries: u32,
    /// When the billing hold after discharge ends: the claim waits for the coding.
    pub due_at: Option<Timestamp>,
    pub overdue: bool,
}

/// A patient's accounting of disclosures (45 CFR 164.528): every disclosure from any of their
/// charts in the six years up to the request, less those 164.528(a)(1) exempts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    pub mrn: String,
    /// Six years before `to`.
    pub from: Timestamp,
    /// When the accounting was made.
    pub to: Timestamp,
    /// The patient's charts it covers (all of them in this store).
    pub charts: Vec<ChartId>,
    /// Oldest first.
    pub disclosures: Vec<AccountedDisclosure>,
}

/// One line of an accounting: a disclosure and the chart it was made from.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountedDisclosure {
    pub chart: ChartId,
    #[serde(flatten)]
    pub disclosure: DisclosureView,
}

impl ChartStore {
    /// The accounting of disclosures for the patient with this MRN, made at `now`, across all
    /// their charts. A patient with no charts here has an empty accounting.
    pub fn accounting_of_disclosures(
        &self,
        mrn: &str,
        now: Timestamp,
    ) -> Result<Accounting, StoreError> {
        let charts: Vec<ChartId> = self
            .charts_of_patient(mrn)?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let mut disclosures = Vec::new();
        for &id in &charts {
            let mut found = self
                .read(id, |c| c.accountable_disclosures(now))?
                .map_err(|error| StoreError::Chart { id, error })?;
            // What Bulk Data exports disclosed of it, under the same rules.
            let from = now.years_before(crate::chart::ACCOUNTING_YEARS);
            found.extend(
                self.bulk_disclosures_of(id)?
                    .into_iter()
                    .filter(|d| d.at >= from && d.purpose.exempt_under().is_none()),
            );
            disclosures.extend(found.into_iter().map(|disclosure| AccountedDisclosure {
                chart: id,
                disclosure,
            }));
        }
        disclosures.sort_by(|a, b| {
            (a.disclosure.at, &a.disclosure.id).cmp(&(b.disclosure.at, &b.disclosure.id))
        });
        Ok(Accounting {
            mrn: mrn.to_string(),
            from: now.years_before(ACCOUNTING_YEARS),
            to: now,
            charts,
            disclosures,
        })
    }

    /// Deficiencies across charts, soonest due first (those with no due date last), from the
    /// index. `now` decides what is overdue.
    pub fn worklist(
        &self,
        filter: &DeficiencyFilter,
        now: Timestamp,
    ) -> Result<Vec<WorklistItem>, StoreError> {
        let mut sql = String::from(
            "SELECT d.kind, d.section, d.record_id, d.responsible, d.detail, d.due_at,
                    c.id, c.mrn, c.ward, c.status, c.discharged_at, c.family_name, c.given_names,
                    w.assignee, w.acknowledged_by, w.acknowledged_at, w.acknowledgement
             FROM deficiencies d JOIN charts c ON c.key = d.chart
             LEFT JOIN deficiency_work w ON w.chart = d.chart AND w.kind = d.kind
                 AND w.section = d.section AND w.record_id = d.record_id
                 AND w.detail = COALESCE(d.detail, '')
             WHERE 1 = 1",
        );
        let mut args: Vec<Value<'static>> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: String| {
            args.push(v.into());
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        };
        if let Some(wards) = &filter.wards {
            arg(
                &mut sql,
                "c.ward IN (SELECT value FROM json_each(",
                wards_json(wards),
            );
            sql.push_str("))");
        }
        if let Some(k) = filter.kind {
            arg(&mut sql, "d.kind =", k.token().to_string());
        }
        if let Some(c) = filter.chart {
            arg(&mut sql, "c.id =", c.to_string());
        }
        if let Some(r) = &filter.responsible {
            arg(&mut sql, "COALESCE(w.assignee, d.responsible) =", r.clone());
        }
        if filter.overdue_only {
            // Stored times are UTC RFC 3339 and compare as strings.
            arg(
                &mut sql,
                "w.acknowledged_at IS NULL AND d.due_at <",
                now.to_rfc3339(),
            );
        }
        sql.push_str(" ORDER BY d.due_at IS NULL, d.due_at, c.id");
        if let Some(n) = filter.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(&args, |r| {
                let deficiency = deficiency_row(r, 0)?;
                let chart: String = r.get(6)?;
                let status: String = r.get(9)?;
                let discharged: Option<String> = r.get(10)?;
                let acknowledged: Option<(String, String, String)> = match r.get(14)? {
                    Some(by) => Some((by, r.get(15)?, r.get(16)?)),
                    None => None,
                };
                Ok((
                    deficiency,
                    chart,
                    (r.get(7)?, r.get(11)?, r.get(12)?),
                    r.get(8)?,
                    status,
                    discharged,
                    r.get(13)?,
                    acknowledged,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (
                    deficiency,
                    chart,
                    (mrn, family_name, given_names),
                    ward,
                    status,
                    discharged,
                    assignee,
                    acknowledged,
                ) = row?;
                let deficiency = deficiency?;
                let acknowledged = match acknowledged {
                    Some((by, at, reason)) => Some(Acknowledgement {
                        by,
                        at: Timestamp::parse(&at).map_err(|_| bad("time"))?,
                        reason,
                    }),
                    None => None,
                };
                out.push(WorklistItem {
                    chart: parse_id(&chart)?,
                    mrn,
                    family_name,
                    given_names,
                    ward,
                    status: EncounterStatus::from_token(&status).map_err(|_| bad("status"))?,
                    discharged_at: parse_time(discharged.as_deref())?,
                    overdue: acknowledged.is_none() && deficiency.overdue_at(now),
                    assignee,
                    acknowledged,
                    deficiency,
                });
            }
            Ok(out)
        })
    }

    /// Discharged charts whose coding is not final (no final principal diagnosis, an
    /// assignment still proposed or queried, a diagnosis without its POA indicator), earliest
    /// discharge first, on the given wards (`None`: every ward); each due when the billing
    /// hold of `bill_hold_days` after discharge ends.
    pub fn coding_queue(
        &self,
        wards: Option<&[String]>,
        now: Timestamp,
        bill_hold_days: u32,
    ) -> Result<Vec<CodingQueueItem>, StoreError> {
        let sql = "SELECT c.id, c.mrn, c.ward, c.discharged_at, c.principal_diagnosis,
                    count(*) FILTER (WHERE d.kind = 'coding_not_final' AND d.record_id = ''),
                    count(*) FILTER (WHERE d.kind = 'coding_not_final' AND d.record_id <> ''),
                    count(*) FILTER (WHERE d.kind = 'poa_missing'),
                    count(*) FILTER (WHERE d.kind = 'open_query'),
                    c.family_name, c.given_names, c.attending, c.encounter_class, c.admitted_at,
                    c.disposition
             FROM charts c JOIN deficiencies d ON d.chart = c.key
             WHERE c.status = 'discharged'
               AND d.kind IN ('coding_not_final', 'poa_missing', 'open_query')
               AND (c.ward IN (SELECT value FROM json_each(?1)) OR ?1 IS NULL)
             GROUP BY c.key
             HAVING count(*) FILTER (WHERE d.kind <> 'open_query') > 0
             ORDER BY c.discharged_at, c.id";
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map([wards.map(wards_json)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    [
                        r.get::<_, u32>(5)?,
                        r.get::<_, u32>(6)?,
                        r.get::<_, u32>(7)?,
                        r.get::<_, u32>(8)?,
                    ],
                    (
                        r.get::<_, String>(9)?,
                        r.get::<_, String>(10)?,
                        r.get::<_, Option<String>>(11)?,
                        r.get::<_, Option<String>>(12)?,
                        r.get::<_, String>(13)?,
                        r.get::<_, Option<String>>(14)?,
                    ),
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (chart, mrn, ward, discharged, principal, counts, more) = row?;
                let [no_final_principal, not_final, poa_missing, open_queries] = counts;
                let (family_name, given_names, attending, class, admitted, disposition) = more;
                let discharged_at = parse_time(discharged.as_deref())?;
                let due_at =
                    discharged_at.map(|d| d.plus_seconds(i64::from(bill_hold_days) * 86_400));
                out.push(CodingQueueItem {
                    chart: parse_id(&chart)?,
                    mrn,
                    family_name,
                    given_names,
                    ward,
                    attending,
                    class: class
                        .map(|c| EncounterClass::from_token(&c))
                        .transpose()
                        .map_err(|_| bad("encounter class"))?,
                    admitted_at: parse_time(Some(&admitted))?.ok_or_else(|| bad("time"))?,
                    discharged_at,
                    disposition,
                    principal_final: principal.is_some() && no_final_principal == 0,
                    principal_diagnosis: principal,
                    not_final,
                    poa_missing,
                    open_queries,
                    overdue: due_at.is_some_and(|d| d < now),
                    due_at,
                });
            }
            Ok(out)
        })
    }
}

impl ChartStore {
    /// One chart as a FHIR R4 Bundle made at `now` (see [`crate::fhir`]).
    pub fn fhir_bundle(
        &self,
        id: ChartId,
        now: Timestamp,
    ) -> Result<serde_json::Value, StoreError> {
        let files = self.attachment_files(id)?;
        let mut bundle = self
            .read(id, |c| crate::fhir::bundle_with_files(id, c, now, files))?
            .map_err(|error| StoreError::Chart { id, error })?;
        crate::fhir::add_break_glass(&mut bundle, id, &self.break_glass_of_chart(id)?);
        Ok(bundle)
    }

    /// The files of a chart's scanned documents that this store has, by hash: what its FHIR
    /// export carries.
    pub fn attachment_files(
        &self,
        id: ChartId,
    ) -> Result<std::collections::HashMap<String, Vec<u8>>, StoreError> {
        let files = self
            .read(id, |c| c.attachments())?
            .map_err(|error| StoreError::Chart { id, error })?;
        let mut bytes = std::collections::HashMap::new();
        for a in files {
            // Only a file this chart names and the store has whole (the server files every
            // scanned document: no device's change names a file; one lost in a restore is
            // exported without its bytes until it is back).
            if super::NamedFile::Here != self.named_file(id, &a.hash)? {
                continue;
            }
            if let Some(b) = self.attachment_bytes(&a.hash)? {
                bytes.insert(a.hash, b);
            }
        }
        Ok(bytes)
    }

    /// Loads a chart and checks that its index row and deficiency rows say what the document
    /// says: what `chartsync-records verify` runs on every chart. Errors name the chart and
    /// what disagrees, never a value.
    pub fn check_chart(&self, id: ChartId) -> Result<(), StoreError> {
        let chart_err = |error| StoreError::Chart { id, error };
        let (audit, index) = self
            .read(id, |c| Ok((c.deficiencies()?, IndexFields::of(c)?)))?
            .map_err(chart_err)?;
        let indexed = self.deficiencies(id)?;
        if indexed != audit {
            return Err(StoreError::Corrupt(format!(
                "chart {id}: the deficiency index holds {} rows where the chart's audit finds {}",
                indexed.len(),
                audit.len()
            )));
        }
        let summary = self.summary(id)?.ok_or(StoreError::NotFound(id))?;
        let row_agrees = summary.mrn == index.mrn
            && summary.ward == index.ward
            && summary.bed == index.bed
            && summary.status.token() == index.status
            && summary.admitted_at.to_rfc3339() == index.admitted_at
            && summary.discharged_at.map(Timestamp::to_rfc3339) == index.discharged_at
            && summary.open_deficiencies as usize == audit.len();
        let records_fields = self.inner.with_reader(|conn| {
            Ok(conn.query_row(
                "SELECT attending, encounter_class, disposition, birth_date, sex
                 FROM charts WHERE id = ?1",
                [id.to_string()],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                },
            )?)
        })?;
        let row_agrees = row_agrees
            && records_fields
                == (
                    index.attending,
                    Some(index.class.to_string()),
                    index.disposition,
                    index.birth_date,
                    index.sex.map(str::to_string),
                );
        if !row_agrees {
            return Err(StoreError::Corrupt(format!(
                "chart {id}: its index row does not match the document"
            )));
        }
        Ok(())
    }
}

/// A deficiency from the columns kind, section, record_id, responsible, detail, due_at,
/// starting at column `from`.
pub(super) fn deficiency_row(
    r: &Row<'_>,
    from: usize,
) -> Result<Result<Deficiency, StoreError>, StoreError> {
    let kind: String = r.get(from)?;
    let due: Option<String> = r.get(from + 5)?;
    let (section, record_id, responsible, detail) = (
        r.get(from + 1)?,
        r.get(from + 2)?,
        r.get(from + 3)?,
        r.get(from + 4)?,
    );
    Ok((|| {
        Ok(Deficiency {
            kind: DeficiencyKind::from_token(&kind).map_err(|_| bad("deficiency kind"))?,
            section,
            record_id,
            responsible,
            detail,
            due_at: parse_time(due.as_deref())?,
        })
    })())
}

/// A list of wards as the JSON array SQLite's `json_each` reads.
pub(super) fn wards_json(wards: &[String]) -> String {
    serde_json::Value::from(wards.to_vec()).to_string()
}

fn bad(what: &str) -> StoreError {
    StoreError::Corrupt(format!("an index row with an invalid {what}"))
}

pub(super) fn parse_id(s: &str) -> Result<ChartId, StoreError> {
    s.parse().map_err(|_| bad("chart id"))
}

pub(super) fn parse_time(s: Option<&str>) -> Result<Option<Timestamp>, StoreError> {
    s.map(Timestamp::parse).transpose().map_err(|_| bad("time"))
}

/// The version of the index row's fields for the records office (attending, class,
/// disposition, birth date, sex: migration 10); a store whose `store_meta.index_fields` differs
/// fills them in the rebuild below.
const INDEX_FIELDS_VERSION: &str = "1";

/// Rebuilds every chart's deficiency rows and audit fields when the store's index was built
/// by another version of the audit's rules (`store_meta.deficiency_rules`) or lacks the
/// records office's fields (`store_meta.index_fields`). Runs as the store
/// opens, before anything else uses it; charts are read one at a time and the rows replaced in
/// one transaction, so a crash part-way leaves the old index and the next open starts again.
/// A chart that does not load keeps its old rows (opening it reports the damage), and the
/// rebuild runs again at the next open.
pub(super) fn rebuild_if_rules_changed(
    conn: &mut Sql<'_>,
    progress: Option<&RebuildListener>,
) -> Result<(), StoreError> {
    let meta = |conn: &Sql<'_>, key: &str| -> Result<Option<String>, StoreError> {
        Ok(conn
            .query_row("SELECT value FROM store_meta WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    };
    let built = meta(conn, "deficiency_rules")?;
    let fields = meta(conn, "index_fields")?;
    if built.as_deref() == Some(RULES_VERSION.to_string().as_str())
        && fields.as_deref() == Some(INDEX_FIELDS_VERSION)
    {
        return Ok(());
    }
    let charts: Vec<String> = {
        let mut stmt = conn.prepare("SELECT id FROM charts ORDER BY key")?;
        let ids = stmt.query_map(params![], |r| r.get(0))?;
        ids.collect::<Result<_, _>>()?
    };
    let mut rebuilt = Vec::with_capacity(charts.len());
    let mut skipped = 0;
    let tell = |done: usize| {
        if let Some(listener) = progress {
            (listener.0)(done, charts.len());
        }
    };
    tell(0);
    for (n, id) in charts.iter().enumerate() {
        let rows = id.parse::<ChartId>().ok().and_then(|id| {
            let stored = read_document(conn, id).ok()?;
            let chart = Chart::from_automerge(stored.load(id).ok()?).ok()?;
            Some((
                stored.key,
                chart.deficiencies().ok()?,
                principal_code(&chart).ok()?,
                IndexFields::of(&chart).ok()?,
            ))
        });
        match rows {
            Some(rows) => rebuilt.push(rows),
            None => skipped += 1,
        }
        tell(n + 1);
    }
    let tx = conn.transaction(Begin::Immediate)?;
    for (key, deficiencies, principal, f) in &rebuilt {
        tx.execute("DELETE FROM deficiencies WHERE chart = ?1", [key])?;
        insert_deficiencies(&tx, *key, deficiencies)?;
        tx.execute(
            "UPDATE charts SET open_deficiencies = ?2, principal_diagnosis = ?3, attending = ?4,
                 encounter_class = ?5, disposition = ?6, birth_date = ?7, sex = ?8
             WHERE key = ?1",
            params![
                key,
                deficiencies.len() as i64,
                principal,
                f.attending,
                f.class,
                f.disposition,
                f.birth_date,
                f.sex
            ],
        )?;
    }
    // While a chart does not load its rows stay as the old rules left them, and every open
    // tries again: the version says every chart's rows are this version's.
    if skipped == 0 {
        tx.execute(
            "INSERT INTO store_meta (key, value) VALUES ('deficiency_rules', ?1)
             ON CONFLICT (key) DO UPDATE SET value = ?1",
            [RULES_VERSION.to_string()],
        )?;
        tx.execute(
            "INSERT INTO store_meta (key, value) VALUES ('index_fields', ?1)
             ON CONFLICT (key) DO UPDATE SET value = ?1",
            [INDEX_FIELDS_VERSION],
        )?;
    }
    tx.commit()?;
    Ok(())
}
