//! Delinquency, as a records office reports it: discharged records still incomplete past their
//! due date, against the average monthly discharges (the Joint Commission's old rule, that
//! delinquent records stay under 50% of them, survives as local policy), with the coding
//! backlog counted apart, and a trend from a count kept once a day.
//!
//! A delinquent record is a discharged chart with an overdue deficiency of record completion:
//! every kind but the coding ones (`coding_not_final`, `poa_missing`: the coding backlog) and
//! `release_due` (the office's own work), and not one the office acknowledged. What was
//! delinquent on a past day cannot be read back from the charts (a note signed since leaves no
//! trace in the index), so the store counts each day as it passes (`delinquency_days`), and the
//! trend starts on the first day counted.

use super::sql::{params, Begin};
use serde::{Deserialize, Serialize};

use super::{ChartStore, StoreError};
use crate::chart::{DeficiencyKind, Timestamp};

/// Delinquent records, as a percentage of the average monthly discharges, above which the
/// office is over its limit, unless the hospital sets another.
pub const DEFAULT_THRESHOLD_PERCENT: u32 = 50;

/// Whole calendar months the average monthly discharges is taken over (fewer while the store
/// has less history).
pub const DISCHARGE_MONTHS: u32 = 12;

/// The deficiency kinds that are not record completion.
const NOT_COMPLETION: &str = "('coding_not_final', 'poa_missing', 'release_due')";

/// The WHERE clause of an overdue deficiency of record completion on a discharged chart; `?1`
/// is now, `?2` the wards as JSON (NULL: every ward).
const DELINQUENT: &str = "FROM deficiencies d JOIN charts c ON c.key = d.chart
     LEFT JOIN deficiency_work w ON w.chart = d.chart AND w.kind = d.kind
         AND w.section = d.section AND w.record_id = d.record_id
         AND w.detail = COALESCE(d.detail, '')
     WHERE c.status = 'discharged' AND d.due_at < ?1 AND w.acknowledged_at IS NULL
         AND (c.ward IN (SELECT value FROM json_each(?2)) OR ?2 IS NULL)";

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delinquency {
    pub as_of: Timestamp,
    /// Discharged charts with an overdue deficiency of record completion.
    pub delinquent_records: u32,
    /// Delinquent records by the kinds they are delinquent for (a chart counts under each).
    pub by_kind: Vec<KindCount>,
    /// Discharges in each whole month the average is taken over, oldest first.
    pub monthly_discharges: Vec<MonthCount>,
    /// None until a whole month of discharges is in the store.
    pub average_monthly_discharges: Option<f64>,
    /// Delinquent records as a percentage of the average monthly discharges.
    pub percent_of_discharges: Option<f64>,
    /// Discharged charts whose coding is not final, apart from delinquency.
    pub coding_backlog: u32,
    /// Of those, past the 30 days of record completion.
    pub coding_backlog_overdue: u32,
    /// The count kept each day, oldest first.
    pub trend: Vec<DayCount>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCount {
    pub kind: DeficiencyKind,
    pub records: u32,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthCount {
    /// `2026-11`.
    pub month: String,
    pub discharges: u32,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCount {
    /// `2026-12-03` (UTC).
    pub day: String,
    pub delinquent_records: u32,
    pub coding_backlog: u32,
}

/// The first instant of a month, as stored times are written (they compare as strings).
fn month_start(year: i32, month: u8) -> String {
    format!("{year:04}-{month:02}-01T00:00:00Z")
}

/// `(year, month)` `back` months before `(year, month)`.
fn months_back(year: i32, month: u8, back: u32) -> (i32, u8) {
    let index = year * 12 + i32::from(month) - 1 - back as i32;
    (index.div_euclid(12), (index.rem_euclid(12) + 1) as u8)
}

impl ChartStore {
    /// Delinquency on these wards (`None`: every ward) at `now`, with the trend of the last
    /// `trend_days` days counted.
    pub fn delinquency(
        &self,
        wards: Option<&[String]>,
        now: Timestamp,
        trend_days: u32,
    ) -> Result<Delinquency, StoreError> {
        let wards = wards.map(|w| serde_json::Value::from(w.to_vec()).to_string());
        let at = now.to_rfc3339();
        let today = now.date();
        let (year, month) = (today.year(), u8::from(today.month()));
        let this_month = month_start(year, month);
        let (from_year, from_month) = months_back(year, month, DISCHARGE_MONTHS);
        let window_start = month_start(from_year, from_month);
        let trend_from = now
            .plus_seconds(-(i64::from(trend_days) * 86_400))
            .date()
            .to_string();
        self.inner.with_reader(|conn| {
            let delinquent_records: u32 = conn
                .prepare_cached(&format!(
                    "SELECT COUNT(DISTINCT d.chart) {DELINQUENT} AND d.kind NOT IN {NOT_COMPLETION}"
                ))?
                .query_row(params![at, wards], |r| r.get(0))?;
            let mut by_kind = Vec::new();
            {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT d.kind, COUNT(DISTINCT d.chart) {DELINQUENT}
                         AND d.kind NOT IN {NOT_COMPLETION}
                     GROUP BY d.kind ORDER BY 2 DESC, 1"
                ))?;
                let rows = stmt.query_map(params![at, wards], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
                })?;
                for row in rows {
                    let (kind, records) = row?;
                    let kind = DeficiencyKind::from_token(&kind).map_err(|_| {
                        StoreError::Corrupt("an index row with an invalid deficiency kind".into())
                    })?;
                    by_kind.push(KindCount { kind, records });
                }
            }
            let (coding_backlog, coding_backlog_overdue): (u32, u32) = conn
                .prepare_cached(
                    "SELECT COUNT(DISTINCT c.key),
                            COUNT(DISTINCT CASE WHEN d.due_at < ?1 THEN c.key END)
                     FROM charts c JOIN deficiencies d ON d.chart = c.key
                     WHERE c.status = 'discharged'
                       AND d.kind IN ('coding_not_final', 'poa_missing')
                       AND (c.ward IN (SELECT value FROM json_each(?2)) OR ?2 IS NULL)",
                )?
                .query_row(params![at, wards], |r| Ok((r.get(0)?, r.get(1)?)))?;
            // Whole months only, and none before the first discharge the store holds.
            let first: Option<String> = conn
                .prepare_cached(
                    "SELECT min(discharged_at) FROM charts WHERE status = 'discharged'
                       AND (ward IN (SELECT value FROM json_each(?1)) OR ?1 IS NULL)",
                )?
                .query_row(params![wards], |r| r.get(0))?;
            let mut monthly_discharges = Vec::new();
            if let Some(first) = first {
                let mut counted = std::collections::HashMap::new();
                let mut stmt = conn.prepare_cached(
                    "SELECT substr(discharged_at, 1, 7), COUNT(*) FROM charts
                     WHERE status = 'discharged' AND discharged_at >= ?1 AND discharged_at < ?2
                       AND (ward IN (SELECT value FROM json_each(?3)) OR ?3 IS NULL)
                     GROUP BY 1",
                )?;
                let rows = stmt.query_map(params![window_start, this_month, wards], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
                })?;
                for row in rows {
                    let (m, n) = row?;
                    counted.insert(m, n);
                }
                let first_month = &first[..first.len().min(7)];
                for back in (1..=DISCHARGE_MONTHS).rev() {
                    let (y, m) = months_back(year, month, back);
                    let label = format!("{y:04}-{m:02}");
                    if label.as_str() < first_month {
                        continue;
                    }
                    monthly_discharges.push(MonthCount {
                        discharges: counted.get(&label).copied().unwrap_or(0),
                        month: label,
                    });
                }
            }
            let average_monthly_discharges = (!monthly_discharges.is_empty()).then(|| {
                monthly_discharges
                    .iter()
                    .map(|m| f64::from(m.discharges))
                    .sum::<f64>()
                    / monthly_discharges.len() as f64
            });
            let percent_of_discharges = average_monthly_discharges
                .filter(|a| *a > 0.0)
                .map(|a| f64::from(delinquent_records) * 100.0 / a);
            let mut trend = Vec::new();
            {
                let mut stmt = conn.prepare_cached(
                    "SELECT day, CAST(SUM(delinquent) AS BIGINT), CAST(SUM(coding_backlog) AS BIGINT) FROM delinquency_days
                     WHERE day >= ?1
                       AND (ward IN (SELECT value FROM json_each(?2)) OR ?2 IS NULL)
                     GROUP BY day ORDER BY day",
                )?;
                let rows = stmt.query_map(params![trend_from, wards], |r| {
                    Ok(DayCount {
                        day: r.get(0)?,
                        delinquent_records: r.get(1)?,
                        coding_backlog: r.get(2)?,
                    })
                })?;
                for row in rows {
                    trend.push(row?);
                }
            }
            Ok(Delinquency {
                as_of: now,
                delinquent_records,
                by_kind,
                monthly_discharges,
                average_monthly_discharges,
                percent_of_discharges,
                coding_backlog,
                coding_backlog_overdue,
                trend,
            })
        })
    }

    /// Counts today's delinquent records and coding backlog on every ward, replacing what was
    /// counted earlier today: the server calls it every hour, so each day keeps its last count.
    pub fn count_delinquency_day(&self, now: Timestamp) -> Result<(), StoreError> {
        let at = now.to_rfc3339();
        let day = now.date().to_string();
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        tx.execute("DELETE FROM delinquency_days WHERE day = ?1", [&day])?;
        tx.prepare_cached(&format!(
            "INSERT INTO delinquency_days (day, ward, delinquent, coding_backlog)
             SELECT ?3, ward, CAST(SUM(delinquent) AS BIGINT), CAST(SUM(backlog) AS BIGINT) FROM (
                 SELECT c.ward AS ward, COUNT(DISTINCT d.chart) AS delinquent, 0 AS backlog
                     {DELINQUENT} AND d.kind NOT IN {NOT_COMPLETION} GROUP BY c.ward
                 UNION ALL
                 SELECT c.ward, 0, COUNT(DISTINCT c.key) FROM charts c
                     JOIN deficiencies d ON d.chart = c.key
                     WHERE c.status = 'discharged'
                       AND d.kind IN ('coding_not_final', 'poa_missing')
                       AND (c.ward IN (SELECT value FROM json_each(?2)) OR ?2 IS NULL)
                     GROUP BY c.ward
                 UNION ALL
                 SELECT ward, 0, 0 FROM charts GROUP BY ward
             ) AS counts GROUP BY ward"
        ))?
        .execute(params![at, Option::<String>::None, day])?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_back_cross_the_year() {
        assert_eq!(months_back(2026, 12, 1), (2026, 11));
        assert_eq!(months_back(2026, 1, 1), (2025, 12));
        assert_eq!(months_back(2026, 3, 12), (2025, 3));
        assert_eq!(months_back(2026, 1, 0), (2026, 1));
    }
}
