//! The patient-index checks a records office runs on its master patient index: one MRN
//! carried by charts that disagree about who the patient is (name, date of birth, sex), and
//! dates no stay can have (an admission years ahead, a patient born after being admitted, a
//! discharge before the admission). From the index alone; warnings to look into, never
//! refusals: a chart is what the ward wrote, and a person decides what is wrong.

use serde::{Deserialize, Serialize};

use super::records::{parse_id, wards_json};
use super::sql::params;
use super::{ChartStore, StoreError};
use crate::chart::{ChartId, Timestamp};

/// An admission or discharge more than this far past the store's clock is implausible (a
/// tablet's clock a little fast is not).
const FUTURE_SLACK_SECS: i64 = 86_400;

/// Older than this at admission is implausible (a birth year typed wrong).
const MAX_AGE_YEARS: i64 = 120;

/// What looks wrong.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexWarningKind {
    /// Charts with one MRN and different names.
    NameDiffers,
    BirthDateDiffers,
    SexDiffers,
    /// Admitted more than a day after now.
    AdmittedInFuture,
    DischargedInFuture,
    DischargedBeforeAdmission,
    /// A date of birth after the admission.
    BornAfterAdmission,
    /// Over 120 years old at admission.
    ImplausibleAge,
}

impl IndexWarningKind {
    /// The warning as a records clerk reads it.
    pub fn words(self) -> &'static str {
        match self {
            IndexWarningKind::NameDiffers => "the same MRN with another name",
            IndexWarningKind::BirthDateDiffers => "the same MRN with another date of birth",
            IndexWarningKind::SexDiffers => "the same MRN with another sex",
            IndexWarningKind::AdmittedInFuture => "an admission in the future",
            IndexWarningKind::DischargedInFuture => "a discharge in the future",
            IndexWarningKind::DischargedBeforeAdmission => "a discharge before the admission",
            IndexWarningKind::BornAfterAdmission => "a date of birth after the admission",
            IndexWarningKind::ImplausibleAge => "over 120 years old at admission",
        }
    }
}

/// One warning: what looks wrong, the MRN, and the charts it is about (ids only).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexWarning {
    pub kind: IndexWarningKind,
    pub mrn: String,
    pub charts: Vec<ChartId>,
}

impl std::fmt::Display for IndexWarning {
    /// `MRN-0042: the same MRN with another name (charts A, B)`: ids only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let charts: Vec<String> = self.charts.iter().map(ChartId::to_string).collect();
        write!(
            f,
            "{}: {} ({} {})",
            self.mrn,
            self.kind.words(),
            if charts.len() == 1 { "chart" } else { "charts" },
            charts.join(", ")
        )
    }
}

impl ChartStore {
    /// The patient-index warnings on the given wards (`None`: every ward), by MRN; only those
    /// about one of `only` when it is given (what an import just wrote). Charts of one MRN are
    /// compared within the wards asked about.
    pub fn patient_index_warnings(
        &self,
        wards: Option<&[String]>,
        now: Timestamp,
        only: Option<&[ChartId]>,
    ) -> Result<Vec<IndexWarning>, StoreError> {
        let wards = wards.map(wards_json);
        let future = now.plus_seconds(FUTURE_SLACK_SECS).to_rfc3339();
        let mut out: Vec<IndexWarning> = Vec::new();
        self.inner.with_reader(|conn| {
            // One MRN, several patients.
            let sql = format!(
                "SELECT mrn,
                        count(DISTINCT lower(family_name) || '|' || lower(given_names)),
                        count(DISTINCT birth_date), count(DISTINCT sex),
                        {}
                 FROM (SELECT * FROM charts
                       WHERE ward IN (SELECT value FROM json_each(?1)) OR ?1 IS NULL
                       ORDER BY admitted_at, id) AS on_wards
                 GROUP BY mrn
                 HAVING count(*) > 1",
                conn.dialect().json_array("id", "admitted_at, id")
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query([&wards])?;
            while let Some(r) = rows.next()? {
                let mrn: String = r.get(0)?;
                let ids: Vec<String> = serde_json::from_str(&r.get::<_, String>(4)?)
                    .map_err(|_| StoreError::Corrupt("a chart row's id".into()))?;
                let charts = ids
                    .iter()
                    .map(|id| parse_id(id))
                    .collect::<Result<Vec<_>, _>>()?;
                for (n, kind) in [
                    (r.get::<_, i64>(1)?, IndexWarningKind::NameDiffers),
                    (r.get::<_, i64>(2)?, IndexWarningKind::BirthDateDiffers),
                    (r.get::<_, i64>(3)?, IndexWarningKind::SexDiffers),
                ] {
                    if n > 1 {
                        out.push(IndexWarning {
                            kind,
                            mrn: mrn.clone(),
                            charts: charts.clone(),
                        });
                    }
                }
            }
            // Dates no stay can have.
            let sql = format!(
                "SELECT id, mrn,
                        admitted_at > ?2,
                        discharged_at IS NOT NULL AND discharged_at > ?2,
                        discharged_at IS NOT NULL AND discharged_at < admitted_at,
                        birth_date IS NOT NULL AND birth_date > substr(admitted_at, 1, 10),
                        birth_date IS NOT NULL AND birth_date < {}
                 FROM charts
                 WHERE (ward IN (SELECT value FROM json_each(?1)) OR ?1 IS NULL)
                 ORDER BY mrn, admitted_at, id",
                conn.dialect()
                    .shift_date("substr(admitted_at, 1, 10)", "?3")
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let years = format!("-{MAX_AGE_YEARS} years");
            let mut rows = stmt.query(params![&wards, &future, &years])?;
            while let Some(r) = rows.next()? {
                let chart = parse_id(&r.get::<_, String>(0)?)?;
                let mrn: String = r.get(1)?;
                for (col, kind) in [
                    (2, IndexWarningKind::AdmittedInFuture),
                    (3, IndexWarningKind::DischargedInFuture),
                    (4, IndexWarningKind::DischargedBeforeAdmission),
                    (5, IndexWarningKind::BornAfterAdmission),
                    (6, IndexWarningKind::ImplausibleAge),
                ] {
                    if r.get::<_, bool>(col)? {
                        out.push(IndexWarning {
                            kind,
                            mrn: mrn.clone(),
                            charts: vec![chart],
                        });
                    }
                }
            }
            Ok(())
        })?;
        if let Some(only) = only {
            out.retain(|w| w.charts.iter().any(|c| only.contains(c)));
        }
        out.sort_by(|a, b| (&a.mrn, a.kind).cmp(&(&b.mrn, b.kind)));
        Ok(out)
    }
}
