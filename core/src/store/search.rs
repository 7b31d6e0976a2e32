//! Finding a chart as the records office asks for one: by MRN, by the patient's name, by date
//! of birth, by a day the patient was in. From the index alone (the date of birth is kept there
//! since migration 10).

use super::sql::{Row, Value};
use serde::{Deserialize, Serialize};

use super::records::{parse_id, parse_time, wards_json};
use super::{ChartStore, StoreError};
use crate::chart::{ChartId, EncounterStatus, Sex, Timestamp};

/// The columns a [`ChartHit`] is read from, in [`hit_row`]'s order.
const HIT_COLUMNS: &str = "id, mrn, family_name, given_names, birth_date, sex, ward, status,
    admitted_at, discharged_at";

fn hit_row(r: &Row<'_>) -> Result<ChartHit, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("a chart row's {what}"));
    Ok(ChartHit {
        chart: parse_id(&r.get::<_, String>(0)?)?,
        mrn: r.get(1)?,
        family_name: r.get(2)?,
        given_names: r.get(3)?,
        birth_date: r.get(4)?,
        sex: r
            .get::<_, Option<String>>(5)?
            .map(|s| Sex::from_token(&s))
            .transpose()
            .map_err(|_| corrupt("sex"))?,
        ward: r.get(6)?,
        status: EncounterStatus::from_token(&r.get::<_, String>(7)?)
            .map_err(|_| corrupt("status"))?,
        admitted_at: parse_time(Some(&r.get::<_, String>(8)?))?
            .ok_or_else(|| corrupt("admission"))?,
        discharged_at: parse_time(r.get::<_, Option<String>>(9)?.as_deref())?,
    })
}

/// What a records clerk knows about the chart they want; each field given narrows, and at
/// least one must be.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartSearch {
    /// The MRN, whole (case aside).
    #[serde(default)]
    pub mrn: Option<String>,
    /// The family name's beginning (`riv`), or `family, given` with each a beginning
    /// (`Rivera, A`); case aside.
    #[serde(default)]
    pub name: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub birth_date: Option<String>,
    /// `YYYY-MM-DD`: the patient was in on that day (UTC): admitted by its end, not
    /// discharged before its start.
    #[serde(default)]
    pub visit_date: Option<String>,
}

/// A chart found, as the list of results shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartHit {
    pub chart: ChartId,
    pub mrn: String,
    pub family_name: String,
    pub given_names: String,
    pub birth_date: Option<String>,
    pub sex: Option<Sex>,
    pub ward: String,
    pub status: EncounterStatus,
    pub admitted_at: Timestamp,
    pub discharged_at: Option<Timestamp>,
}

/// The charts found (at most the limit asked for) and how many there were in all.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartSearchResult {
    pub hits: Vec<ChartHit>,
    pub total: u32,
}

impl ChartSearch {
    /// The fields given, by name (never their values): what an audit row says was asked.
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("mrn", &self.mrn),
            ("name", &self.name),
            ("birth_date", &self.birth_date),
            ("visit_date", &self.visit_date),
        ]
        .into_iter()
        .filter(|(_, v)| v.as_deref().is_some_and(|v| !v.trim().is_empty()))
        .map(|(k, _)| k)
        .collect()
    }
}

/// A `YYYY-MM-DD` date as the index compares it, or why not (naming the field, not the value).
fn date(field: &str, value: &str) -> Result<String, StoreError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(value.trim(), &format)
        .map(|d| d.format(&format).unwrap_or_default())
        .map_err(|_| StoreError::Invalid(format!("{field} is a date written YYYY-MM-DD")))
}

/// `s` as the beginning of a LIKE pattern, its own `%`, `_` and `\` taken literally.
fn like_prefix(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl ChartStore {
    /// The charts matching `search` on the given wards (`None`: every ward), by name then
    /// newest admission first; at most `limit`, with the total. An empty search, or a date
    /// not written `YYYY-MM-DD`, is [`StoreError::Invalid`].
    pub fn search_charts(
        &self,
        search: &ChartSearch,
        wards: Option<&[String]>,
        limit: u32,
    ) -> Result<ChartSearchResult, StoreError> {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        if search.fields().is_empty() {
            return Err(StoreError::Invalid(
                "give an MRN, a name, a date of birth or a visit date".into(),
            ));
        }
        let d = self.inner.dialect();
        let like = d.like();
        let mut sql = format!(
            "SELECT {HIT_COLUMNS}, count(*) OVER ()
             FROM charts WHERE (ward IN (SELECT value FROM json_each(?1)) OR ?1 IS NULL)",
        );
        let mut args: Vec<Value> = vec![wards.map(wards_json).into()];
        let mut arg = |sql: &mut String, clause: &str, v: String| {
            args.push(v.into());
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(mrn) = given(&search.mrn) {
            let clause = format!(" AND {} = {}", d.nocase("mrn"), d.nocase("?"));
            arg(&mut sql, &clause, mrn);
        }
        if let Some(name) = given(&search.name) {
            let (family, given_names) = match name.split_once(',') {
                Some((f, g)) => (f.trim().to_string(), Some(g.trim().to_string())),
                None => (name.clone(), None),
            };
            if !family.is_empty() {
                arg(
                    &mut sql,
                    &format!(" AND family_name {like} ? ESCAPE '\\'"),
                    like_prefix(&family),
                );
            }
            if let Some(g) = given_names.filter(|g| !g.is_empty()) {
                arg(
                    &mut sql,
                    &format!(" AND given_names {like} ? ESCAPE '\\'"),
                    like_prefix(&g),
                );
            }
        }
        if let Some(born) = given(&search.birth_date) {
            arg(&mut sql, " AND birth_date = ?", date("birth_date", &born)?);
        }
        if let Some(day) = given(&search.visit_date) {
            let day = date("visit_date", &day)?;
            arg(
                &mut sql,
                " AND substr(admitted_at, 1, 10) <= ?",
                day.clone(),
            );
            arg(
                &mut sql,
                " AND (discharged_at IS NULL OR substr(discharged_at, 1, 10) >= ?)",
                day,
            );
        }
        sql.push_str(&format!(
            " ORDER BY {}, {}, admitted_at DESC, id LIMIT {limit}",
            d.nocase("family_name"),
            d.nocase("given_names"),
        ));
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(&args)?;
            let mut hits = Vec::new();
            let mut total = 0;
            while let Some(r) = rows.next()? {
                total = r.get::<_, u32>(10)?;
                hits.push(hit_row(&r)?);
            }
            Ok(ChartSearchResult { hits, total })
        })
    }

    /// These charts as a list of results shows them, in the order asked; a chart not in the
    /// store is left out.
    pub fn chart_hits(&self, ids: &[ChartId]) -> Result<Vec<ChartHit>, StoreError> {
        let sql = format!("SELECT {HIT_COLUMNS} FROM charts WHERE id = ?1");
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let mut rows = stmt.query([id.to_string()])?;
                if let Some(r) = rows.next()? {
                    out.push(hit_row(&r)?);
                }
            }
            Ok(out)
        })
    }
}
