//! The index: what listings read without loading a document. One row per chart (its
//! census fields, refreshed by each commit) and its open deficiencies.

use super::sql::{params, OptionalExtension, Row, Value};

use super::{lock, records, ChartStore, StoreError};
use crate::chart::{ChartId, Deficiency, EncounterStatus, Timestamp};

/// A chart as a listing shows it, read from the index alone.
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChartSummary {
    pub id: ChartId,
    pub mrn: String,
    pub family_name: String,
    pub given_names: String,
    pub ward: String,
    pub bed: Option<String>,
    pub status: EncounterStatus,
    pub admitted_at: Timestamp,
    pub discharged_at: Option<Timestamp>,
    pub open_deficiencies: u32,
    /// When this store last committed a change to the chart.
    pub modified_at: Timestamp,
}

/// Where a chart is: its ward, and whether the stay is open. What decides who may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub ward: String,
    pub status: EncounterStatus,
}

/// Which charts a listing returns; empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct ChartFilter {
    pub ward: Option<String>,
    pub mrn: Option<String>,
    pub status: Option<EncounterStatus>,
    /// Only charts committed to at or after this time.
    pub modified_since: Option<Timestamp>,
    pub limit: Option<u32>,
}

impl ChartStore {
    pub fn contains(&self, id: ChartId) -> Result<bool, StoreError> {
        self.inner.with_reader(|conn| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM charts WHERE id = ?1",
                    [id.to_string()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
    }

    /// One chart's summary from the index, or `None` if the store has no such chart.
    pub fn summary(&self, id: ChartId) -> Result<Option<ChartSummary>, StoreError> {
        let sql = "SELECT id, mrn, family_name, given_names, ward, bed, status, admitted_at,
                          discharged_at, open_deficiencies, modified_at
                   FROM charts WHERE id = ?1";
        self.inner.with_reader(|conn| {
            conn.prepare_cached(sql)?
                .query_row([id.to_string()], summary_row)
                .optional()?
                .transpose()
        })
    }

    /// A chart's ward and stay, as its index row has them, or `None` if the store has no such
    /// chart. Read from the chart in memory when it is there (the server asks this of every
    /// commit on every connection that holds the chart: a read of the index each time was a
    /// tenth of its work in a reconnect storm), else from the index.
    pub fn placement(&self, id: ChartId) -> Result<Option<Placement>, StoreError> {
        // In a database other nodes write to, the index row is the truth.
        let slot = (!self.inner.shared())
            .then(|| lock(&self.inner.cache).existing(&id))
            .flatten();
        if let Some(slot) = slot {
            let mut cached = lock(&slot);
            let c = &mut *cached;
            if let (false, Some(chart)) = (c.dirty, &c.chart) {
                if c.placement.is_none() {
                    // As the index row was written: see `IndexFields::of`.
                    c.placement = chart.encounter().ok().map(|e| Placement {
                        ward: e.ward,
                        status: e.status,
                    });
                }
                if let Some(p) = &c.placement {
                    return Ok(Some(p.clone()));
                }
            }
        }
        Ok(self.summary(id)?.map(|s| Placement {
            ward: s.ward,
            status: s.status,
        }))
    }

    /// A ward's census: the charts of patients on the ward now, by bed.
    pub fn census(&self, ward: &str) -> Result<Vec<ChartSummary>, StoreError> {
        self.list(&ChartFilter {
            ward: Some(ward.to_string()),
            status: Some(EncounterStatus::Active),
            ..ChartFilter::default()
        })
    }

    /// Every chart of one patient, newest admission first.
    pub fn charts_of_patient(&self, mrn: &str) -> Result<Vec<ChartSummary>, StoreError> {
        self.list(&ChartFilter {
            mrn: Some(mrn.to_string()),
            ..ChartFilter::default()
        })
    }

    /// Charts matching `filter`, from the index alone: by bed within a ward, else newest
    /// admission first.
    pub fn list(&self, filter: &ChartFilter) -> Result<Vec<ChartSummary>, StoreError> {
        let mut sql = String::from(
            "SELECT id, mrn, family_name, given_names, ward, bed, status, admitted_at,
                    discharged_at, open_deficiencies, modified_at
             FROM charts WHERE 1 = 1",
        );
        let mut args: Vec<Value<'static>> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: Value<'static>| {
            args.push(v);
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        };
        if let Some(w) = &filter.ward {
            arg(&mut sql, "ward =", w.clone().into());
            // A chart that left this device's wards is not on its ward lists any more, though
            // the device may never have received the transfer itself.
            sql.push_str(" AND id NOT IN (SELECT chart_id FROM device_departures)");
        }
        if let Some(m) = &filter.mrn {
            arg(&mut sql, "mrn =", m.clone().into());
        }
        if let Some(s) = filter.status {
            arg(&mut sql, "status =", s.token().to_string().into());
        }
        if let Some(t) = filter.modified_since {
            arg(&mut sql, "modified_at >=", t.unix_millis().into());
        }
        sql.push_str(if filter.ward.is_some() {
            " ORDER BY bed IS NULL, bed, family_name, id"
        } else {
            " ORDER BY admitted_at DESC, id"
        });
        if let Some(n) = filter.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(&args, summary_row)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            Ok(out)
        })
    }

    /// The open deficiencies of one chart, from the index.
    pub fn deficiencies(&self, id: ChartId) -> Result<Vec<Deficiency>, StoreError> {
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kind, section, record_id, responsible, detail, due_at FROM deficiencies
                 WHERE chart = (SELECT key FROM charts WHERE id = ?1)",
            )?;
            let rows = stmt.query_map([id.to_string()], |r| records::deficiency_row(r, 0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            // In the order a full audit gives them.
            out.sort();
            Ok(out)
        })
    }

    /// Every ward that has a chart or a census document in this store.
    pub fn wards(&self) -> Result<Vec<String>, StoreError> {
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT ward FROM charts UNION SELECT ward FROM census_docs ORDER BY 1",
            )?;
            let rows = stmt.query_map(params![], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

fn summary_row(r: &Row<'_>) -> Result<Result<ChartSummary, StoreError>, StoreError> {
    let id: String = r.get(0)?;
    let status: String = r.get(6)?;
    let admitted: String = r.get(7)?;
    let discharged: Option<String> = r.get(8)?;
    let modified: i64 = r.get(10)?;
    let (mrn, family_name, given_names, ward, bed, open) = (
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(9)?,
    );
    let bad = |what: &str| StoreError::Corrupt(format!("chart index row with an invalid {what}"));
    let build = || -> Result<ChartSummary, StoreError> {
        Ok(ChartSummary {
            id: id.parse().map_err(|_| bad("id"))?,
            mrn,
            family_name,
            given_names,
            ward,
            bed,
            status: EncounterStatus::from_token(&status).map_err(|_| bad("status"))?,
            admitted_at: Timestamp::parse(&admitted).map_err(|_| bad("admission time"))?,
            discharged_at: discharged
                .map(|d| Timestamp::parse(&d))
                .transpose()
                .map_err(|_| bad("discharge time"))?,
            open_deficiencies: open,
            modified_at: Timestamp::from_unix_millis(modified).map_err(|_| bad("modified time"))?,
        })
    };
    Ok(build())
}
