//! Retention, legal holds and destruction, on the server (docs/records-office.md,
//! "Retention, legal holds and destruction").
//!
//! A discharged chart is kept until the later of its discharge plus the rule's years and the
//! patient's birthday at the rule's age (the default: 10 years, and age 21). A legal hold on
//! the patient (MRN) or the chart keeps it whatever retention says. Destruction is a batch: a
//! records supervisor proposes it (the charts past retention and under no hold, as of a
//! date), a records supervisor approves it, and each chart is checked again and destroyed in
//! a transaction of its own that also writes its line of the certificate of destruction, its
//! tombstone (so no device can bring it back) and its audit row. The audit trail is never
//! destroyed with a chart (45 CFR 164.316(b)(2) asks six years of it; it is kept for good).

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};
use time::Date;

use super::sql::{params, Begin, OptionalExtension, Sql};
use super::{insert_audit, lock, now_millis, Actor, AuditAction};
use super::{ChartStore, StoreError};
use crate::chart::{ChartId, EncounterClass, Timestamp};

/// The floor of 42 CFR 482.24(b): a hospital keeps medical records at least five years.
pub const RETENTION_FLOOR_YEARS: u32 = 5;

/// The rule a record class is kept by.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRule {
    /// An encounter class (`inpatient`, `observation`, `emergency`, `day_case`) or `default`.
    pub class: String,
    pub years_after_discharge: u32,
    /// Kept at least until the patient is this old (minors' records); none: no age rule.
    pub until_age: Option<u32>,
    /// The rule's source, as the certificate of destruction names it.
    pub citation: String,
    pub set_by: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub set_at: Option<Timestamp>,
}

impl RetentionRule {
    /// The rule a store has before anyone sets one: the longer of 10 years after discharge
    /// and age 21 (many states' rule for minors; 42 CFR 482.24(b)'s floor is 5 years).
    pub fn builtin() -> RetentionRule {
        RetentionRule {
            class: DEFAULT_CLASS.into(),
            years_after_discharge: 10,
            until_age: Some(21),
            citation: "chartsync default: 10 years after discharge, and at least until age 21"
                .into(),
            set_by: None,
            set_at: None,
        }
    }

    /// The rule in words, as a certificate of destruction names it.
    pub fn words(&self) -> String {
        let age = self
            .until_age
            .map(|a| format!(", and at least until age {a}"))
            .unwrap_or_default();
        format!(
            "{}: {} years after discharge{age} ({})",
            self.class, self.years_after_discharge, self.citation
        )
    }

    /// The last day a chart discharged on `discharged` of a patient born on `born` is kept;
    /// `None` if the rule needs a birth date the chart does not give.
    pub fn retain_until(&self, discharged: Date, born: Option<Date>) -> Option<Date> {
        let by_discharge = plus_years(discharged, self.years_after_discharge);
        match self.until_age {
            None => Some(by_discharge),
            Some(age) => Some(by_discharge.max(plus_years(born?, age))),
        }
    }
}

/// The class name of the rule for every class without one of its own.
pub const DEFAULT_CLASS: &str = "default";

/// `date` plus `years`; 29 February becomes 28 February in a year without one.
fn plus_years(date: Date, years: u32) -> Date {
    let year = date.year() + years as i32;
    Date::from_calendar_date(year, date.month(), date.day())
        .or_else(|_| Date::from_calendar_date(year, date.month(), date.day() - 1))
        .unwrap_or(Date::MAX)
}

/// A rule to set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewRetentionRule {
    pub class: String,
    pub years_after_discharge: u32,
    pub until_age: Option<u32>,
    pub citation: String,
}

/// What a legal hold covers: every chart of a patient, or one chart.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldScope {
    Patient(String),
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    Chart(ChartId),
}

/// A legal hold, active until lifted.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegalHold {
    pub id: i64,
    pub scope: HoldScope,
    pub reason: String,
    pub placed_by: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub placed_at: Timestamp,
    pub lifted_by: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub lifted_at: Option<Timestamp>,
    pub lift_reason: Option<String>,
}

/// A discharged chart as retention sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionItem {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub chart: ChartId,
    pub mrn: String,
    pub encounter_class: Option<String>,
    pub admitted_at: String,
    pub discharged_at: String,
    /// The last day it is kept (`YYYY-MM-DD`); none when the rule needs a birth date the
    /// chart does not give (then it is kept until a person decides).
    pub retain_until: Option<String>,
    pub rule: String,
    /// Legal holds that keep it (their ids).
    pub holds: Vec<i64>,
}

impl RetentionItem {
    /// Past retention on `day` and under no hold: may be destroyed.
    pub fn destroyable(&self, day: Date) -> bool {
        self.holds.is_empty()
            && self
                .retain_until
                .as_deref()
                .and_then(parse_date)
                .is_some_and(|until| until < day)
    }
}

/// One chart of a destruction batch: its line of the certificate.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestructionItem {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub chart: ChartId,
    pub mrn: String,
    pub encounter_class: Option<String>,
    pub admitted_at: String,
    pub discharged_at: String,
    pub retain_until: String,
    pub rule: String,
    /// `proposed`, `destroyed`, or `kept` (with `note`: a hold placed since, or no longer due).
    pub outcome: String,
    pub note: Option<String>,
    /// The heads of what was destroyed (hex).
    pub heads: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub destroyed_at: Option<Timestamp>,
}

/// A destruction batch, and with its items, once destroyed, the certificate of destruction.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestructionBatch {
    pub id: i64,
    /// Retention was judged as of this time.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub as_of: Timestamp,
    pub proposed_by: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub proposed_at: Timestamp,
    pub decided_by: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub decided_at: Option<Timestamp>,
    /// `proposed`, `destroyed` or `cancelled`.
    pub status: String,
    pub items: Vec<DestructionItem>,
}

fn parse_date(s: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s.get(..10)?, &format).ok()
}

fn date_text(d: Date) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    d.format(&format).unwrap_or_default()
}

fn millis(ms: i64, what: &str) -> Result<Timestamp, StoreError> {
    Timestamp::from_unix_millis(ms).map_err(|_| StoreError::Corrupt(format!("{what} out of range")))
}

impl ChartStore {
    /// The rules in force: those set, and the default (the built-in one unless set).
    pub fn retention_rules(&self) -> Result<Vec<RetentionRule>, StoreError> {
        type Row = (String, i64, Option<i64>, String, String, i64);
        let rows: Vec<Row> = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT class, years_after_discharge, until_age, citation, set_by, set_at
                 FROM retention_rules ORDER BY class",
            )?;
            let rows = stmt.query_map(params![], |r| r.columns())?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        let mut rules = rows
            .into_iter()
            .map(|(class, years, age, citation, by, at)| {
                Ok(RetentionRule {
                    class,
                    years_after_discharge: years as u32,
                    until_age: age.map(|a| a as u32),
                    citation,
                    set_by: Some(by),
                    set_at: Some(millis(at, "a rule's time")?),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if !rules.iter().any(|r| r.class == DEFAULT_CLASS) {
            rules.insert(0, RetentionRule::builtin());
        }
        Ok(rules)
    }

    /// Sets the rule of a record class (a state's, or the hospital's). Refused below 42 CFR
    /// 482.24(b)'s five years, for a class that is not an encounter class or `default`, or
    /// with no citation. Audited.
    pub fn set_retention_rule(
        &self,
        by: &Actor,
        rule: &NewRetentionRule,
    ) -> Result<RetentionRule, StoreError> {
        let class = rule.class.trim();
        if class != DEFAULT_CLASS && EncounterClass::from_token(class).is_err() {
            return Err(StoreError::Invalid(format!(
                "no record class {class:?}: an encounter class (inpatient, observation, emergency, day_case) or default"
            )));
        }
        if rule.years_after_discharge < RETENTION_FLOOR_YEARS {
            return Err(StoreError::Invalid(format!(
                "a record is kept at least {RETENTION_FLOOR_YEARS} years after discharge (42 CFR 482.24(b)); {} is too few",
                rule.years_after_discharge
            )));
        }
        if rule.years_after_discharge > 200 || rule.until_age.is_some_and(|a| a > 150) {
            return Err(StoreError::Invalid(
                "the rule's years or age are out of range".into(),
            ));
        }
        let citation = rule.citation.trim();
        if citation.is_empty() {
            return Err(StoreError::Invalid(
                "a retention rule names its source (a state's statute, the hospital's policy)"
                    .into(),
            ));
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let at = now_millis();
        tx.prepare_cached(
            "INSERT INTO retention_rules
                 (class, years_after_discharge, until_age, citation, set_by, set_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (class) DO UPDATE SET years_after_discharge = ?2, until_age = ?3,
                 citation = ?4, set_by = ?5, set_at = ?6",
        )?
        .execute(params![
            class,
            i64::from(rule.years_after_discharge),
            rule.until_age.map(i64::from),
            citation,
            by.user,
            at
        ])?;
        let set = RetentionRule {
            class: class.into(),
            years_after_discharge: rule.years_after_discharge,
            until_age: rule.until_age,
            citation: citation.into(),
            set_by: Some(by.user.clone()),
            set_at: Some(millis(at, "now")?),
        };
        insert_audit(
            &tx,
            by,
            AuditAction::Retention,
            None,
            &[],
            Some(&format!("retention rule set: {}", set.words())),
        )?;
        tx.commit()?;
        Ok(set)
    }

    /// Places a legal hold, with a reason: the charts it covers are kept whatever retention
    /// says, until it is lifted. Audited on each chart it covers (or once, for a patient with
    /// no chart yet).
    pub fn place_legal_hold(
        &self,
        by: &Actor,
        scope: &HoldScope,
        reason: &str,
    ) -> Result<LegalHold, StoreError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(StoreError::Invalid(
                "a legal hold needs a reason (the matter, and who asked)".into(),
            ));
        }
        let (mrn, chart) = match scope {
            HoldScope::Patient(m) if !m.trim().is_empty() => (Some(m.trim().to_string()), None),
            HoldScope::Patient(_) => {
                return Err(StoreError::Invalid(
                    "a legal hold names an MRN or a chart".into(),
                ))
            }
            HoldScope::Chart(c) => {
                if !self.contains(*c)? {
                    return Err(StoreError::NotFound(*c));
                }
                (None, Some(c.to_string()))
            }
        };
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let at = now_millis();
        let id: i64 = tx
            .prepare_cached(
                "INSERT INTO legal_holds (mrn, chart_id, reason, placed_by, placed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            )?
            .query_row(params![mrn, chart, reason, by.user, at], |r| r.get(0))?;
        audit_hold(&tx, by, scope, &format!("legal hold {id} placed"))?;
        tx.commit()?;
        self.legal_hold(id)?
            .ok_or_else(|| StoreError::Corrupt("a legal hold vanished".into()))
    }

    /// Lifts a legal hold, with a reason. Audited as its placing was.
    pub fn lift_legal_hold(
        &self,
        by: &Actor,
        id: i64,
        reason: &str,
    ) -> Result<LegalHold, StoreError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(StoreError::Invalid(
                "lifting a legal hold needs a reason (the matter closed, and who said so)".into(),
            ));
        }
        let hold = self
            .legal_hold(id)?
            .ok_or_else(|| StoreError::Invalid(format!("no legal hold {id}")))?;
        if hold.lifted_at.is_some() {
            return Err(StoreError::OutOfTurn(format!(
                "legal hold {id} was lifted already"
            )));
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        tx.prepare_cached(
            "UPDATE legal_holds SET lifted_by = ?2, lifted_at = ?3, lift_reason = ?4
             WHERE id = ?1 AND lifted_at IS NULL",
        )?
        .execute(params![id, by.user, now_millis(), reason])?;
        audit_hold(&tx, by, &hold.scope, &format!("legal hold {id} lifted"))?;
        tx.commit()?;
        self.legal_hold(id)?
            .ok_or_else(|| StoreError::Corrupt("a legal hold vanished".into()))
    }

    /// Legal holds, newest first: the active ones, or all.
    pub fn legal_holds(&self, active_only: bool) -> Result<Vec<LegalHold>, StoreError> {
        self.legal_holds_where(
            if active_only {
                "lifted_at IS NULL"
            } else {
                "1 = 1"
            },
            None,
        )
    }

    pub fn legal_hold(&self, id: i64) -> Result<Option<LegalHold>, StoreError> {
        Ok(self
            .legal_holds_where("id = ?1", Some(id))?
            .into_iter()
            .next())
    }

    fn legal_holds_where(
        &self,
        filter: &str,
        id: Option<i64>,
    ) -> Result<Vec<LegalHold>, StoreError> {
        type Row = (
            i64,
            Option<String>,
            Option<String>,
            String,
            String,
            i64,
            Option<String>,
            Option<i64>,
            Option<String>,
        );
        let rows: Vec<Row> = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT id, mrn, chart_id, reason, placed_by, placed_at, lifted_by, lifted_at,
                        lift_reason
                 FROM legal_holds WHERE {filter} ORDER BY id DESC"
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
                |(
                    id,
                    mrn,
                    chart,
                    reason,
                    placed_by,
                    placed_at,
                    lifted_by,
                    lifted_at,
                    lift_reason,
                )| {
                    let scope = match (mrn, chart) {
                        (Some(m), None) => HoldScope::Patient(m),
                        (None, Some(c)) => HoldScope::Chart(c.parse().map_err(|_| {
                            StoreError::Corrupt("a legal hold names no chart".into())
                        })?),
                        _ => return Err(StoreError::Corrupt("a legal hold of no scope".into())),
                    };
                    Ok(LegalHold {
                        id,
                        scope,
                        reason,
                        placed_by,
                        placed_at: millis(placed_at, "a hold's time")?,
                        lifted_by,
                        lifted_at: lifted_at.map(|t| millis(t, "a hold's time")).transpose()?,
                        lift_reason,
                    })
                },
            )
            .collect()
    }

    /// Every discharged chart as retention sees it: the last day it is kept, under which
    /// rule, and the legal holds that keep it. Oldest discharge first.
    pub fn retention(&self) -> Result<Vec<RetentionItem>, StoreError> {
        let rules = self.retention_rules()?;
        let default = rules
            .iter()
            .find(|r| r.class == DEFAULT_CLASS)
            .cloned()
            .unwrap_or_else(RetentionRule::builtin);
        type Row = (
            String,
            String,
            Option<String>,
            String,
            String,
            Option<String>,
        );
        let rows: Vec<Row> = self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, mrn, encounter_class, admitted_at, discharged_at, birth_date
                 FROM charts WHERE status = 'discharged' AND discharged_at IS NOT NULL
                 ORDER BY discharged_at, id",
            )?;
            let rows = stmt.query_map(params![], |r| r.columns())?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        let holds = self.legal_holds(true)?;
        rows.into_iter()
            .map(|(id, mrn, class, admitted_at, discharged_at, born)| {
                let chart: ChartId = id
                    .parse()
                    .map_err(|_| StoreError::Corrupt("a chart row with an invalid id".into()))?;
                let rule = class
                    .as_deref()
                    .and_then(|c| rules.iter().find(|r| r.class == c))
                    .unwrap_or(&default);
                let discharged = parse_date(&discharged_at)
                    .ok_or_else(|| StoreError::Corrupt("a discharge time is not a time".into()))?;
                let until = rule.retain_until(discharged, born.as_deref().and_then(parse_date));
                let holding = holds
                    .iter()
                    .filter(|h| match &h.scope {
                        HoldScope::Patient(m) => *m == mrn,
                        HoldScope::Chart(c) => *c == chart,
                    })
                    .map(|h| h.id)
                    .collect();
                Ok(RetentionItem {
                    chart,
                    mrn,
                    encounter_class: class,
                    admitted_at,
                    discharged_at,
                    retain_until: until.map(date_text),
                    rule: rule.words(),
                    holds: holding,
                })
            })
            .collect()
    }

    /// Proposes destroying every chart past retention and under no hold as of `as_of` (not
    /// later than now): a batch for a records supervisor to approve. Audited.
    pub fn propose_destruction(
        &self,
        by: &Actor,
        as_of: Timestamp,
    ) -> Result<DestructionBatch, StoreError> {
        if as_of > Timestamp::now() {
            return Err(StoreError::Invalid(
                "retention is judged as of now or an earlier day, never a later one".into(),
            ));
        }
        let day = as_of.date();
        let due: Vec<RetentionItem> = self
            .retention()?
            .into_iter()
            .filter(|i| i.destroyable(day))
            .collect();
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let id: i64 = tx
            .prepare_cached(
                "INSERT INTO destruction_batches (as_of, proposed_by, proposed_at, status)
                 VALUES (?1, ?2, ?3, 'proposed') RETURNING id",
            )?
            .query_row(params![as_of.unix_millis(), by.user, now_millis()], |r| {
                r.get(0)
            })?;
        for item in &due {
            tx.prepare_cached(
                "INSERT INTO destruction_items (batch, chart_id, mrn, encounter_class,
                     admitted_at, discharged_at, retain_until, rule, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'proposed')",
            )?
            .execute(params![
                id,
                item.chart.to_string(),
                item.mrn,
                item.encounter_class,
                item.admitted_at,
                item.discharged_at,
                item.retain_until,
                item.rule
            ])?;
        }
        insert_audit(
            &tx,
            by,
            AuditAction::Retention,
            None,
            &[],
            Some(&format!(
                "destruction batch {id} proposed: {} chart(s) past retention",
                due.len()
            )),
        )?;
        tx.commit()?;
        self.destruction_batch(id)?
            .ok_or_else(|| StoreError::Corrupt("a destruction batch vanished".into()))
    }

    /// Cancels a proposed batch: nothing is destroyed. Audited.
    pub fn cancel_destruction(&self, by: &Actor, id: i64) -> Result<DestructionBatch, StoreError> {
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        let n = tx
            .prepare_cached(
                "UPDATE destruction_batches SET status = 'cancelled', decided_by = ?2,
                     decided_at = ?3 WHERE id = ?1 AND status = 'proposed'",
            )?
            .execute(params![id, by.user, now_millis()])?;
        if n == 0 {
            return Err(batch_not_open(&tx, id)?);
        }
        insert_audit(
            &tx,
            by,
            AuditAction::Retention,
            None,
            &[],
            Some(&format!("destruction batch {id} cancelled")),
        )?;
        tx.commit()?;
        self.destruction_batch(id)?
            .ok_or_else(|| StoreError::Corrupt("a destruction batch vanished".into()))
    }

    /// Approves a proposed batch and destroys its charts, as of `now`: each is checked
    /// again (still past retention under the rules in force, under no hold) and destroyed in
    /// a transaction of its own with its line of the certificate, its tombstone and its audit
    /// row; one no longer due, or under a hold placed since, is kept and the certificate says
    /// why. The chart's audit rows stay. Returns the certificate.
    pub fn approve_destruction(
        &self,
        by: &Actor,
        id: i64,
        now: Timestamp,
    ) -> Result<DestructionBatch, StoreError> {
        // Claimed once: a second approval, or a cancel, meanwhile finds it taken.
        {
            let mut conn = self.inner.writer()?;
            let tx = conn.transaction(Begin::Immediate)?;
            let n = tx
                .prepare_cached(
                    "UPDATE destruction_batches SET status = 'approving', decided_by = ?2,
                         decided_at = ?3 WHERE id = ?1 AND status = 'proposed'",
                )?
                .execute(params![id, by.user, now_millis()])?;
            if n == 0 {
                return Err(batch_not_open(&tx, id)?);
            }
            tx.commit()?;
        }
        self.carry_out_destruction(by, id, now)
    }

    /// Batches whose approval a stopped server left unfinished (`approving`), decided more
    /// than `stale` ago, with their approvers: [`ChartStore::resume_destruction`] finishes
    /// each. (One server: all of them; on PostgreSQL another node may be approving one now.)
    pub fn interrupted_destructions(
        &self,
        stale: std::time::Duration,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let before = now_millis() - stale.as_millis() as i64;
        self.inner.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, decided_by FROM destruction_batches
                 WHERE status = 'approving' AND decided_at <= ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![before], |r| r.columns())?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Finishes an approval a stopped server left unfinished, as the approver decided it:
    /// the charts not yet destroyed are checked again and destroyed or kept, and the
    /// certificate completed. Audited under the approver, from `device`.
    pub fn resume_destruction(
        &self,
        id: i64,
        approver: &str,
        device: &str,
        now: Timestamp,
    ) -> Result<DestructionBatch, StoreError> {
        let by = Actor {
            user: approver.to_string(),
            role: crate::chart::Role::RecordsSupervisor.token().to_string(),
            device: device.to_string(),
        };
        {
            let mut conn = self.inner.writer()?;
            let tx = conn.transaction(Begin::Immediate)?;
            let approving = tx
                .prepare_cached(
                    "SELECT 1 FROM destruction_batches WHERE id = ?1 AND status = 'approving'",
                )?
                .exists(params![id])?;
            if !approving {
                return Err(batch_not_open(&tx, id)?);
            }
            insert_audit(
                &tx,
                &by,
                AuditAction::Retention,
                None,
                &[],
                Some(&format!(
                    "destruction batch {id}: its approval, interrupted by a restart, resumed"
                )),
            )?;
            tx.commit()?;
        }
        self.carry_out_destruction(&by, id, now)
    }

    /// Destroys an approved batch's charts still proposed, each checked again, and completes
    /// its certificate.
    fn carry_out_destruction(
        &self,
        by: &Actor,
        id: i64,
        now: Timestamp,
    ) -> Result<DestructionBatch, StoreError> {
        let batch = self
            .destruction_batch(id)?
            .ok_or_else(|| StoreError::Invalid(format!("no destruction batch {id}")))?;
        let now_items: std::collections::HashMap<ChartId, RetentionItem> = self
            .retention()?
            .into_iter()
            .map(|i| (i.chart, i))
            .collect();
        for item in batch.items.iter().filter(|i| i.outcome == "proposed") {
            let kept = match now_items.get(&item.chart) {
                None => Some("no longer in the store as a discharged chart"),
                Some(i) if !i.holds.is_empty() => Some("under a legal hold placed since"),
                Some(i) if !i.destroyable(now.date()) => {
                    Some("no longer past retention under the rules in force")
                }
                Some(_) => None,
            };
            match kept {
                Some(note) => self.keep_item(id, item.chart, note)?,
                None => self.destroy_chart(by, id, item.chart, &item.rule)?,
            }
        }
        let mut conn = self.inner.writer()?;
        let tx = conn.transaction(Begin::Immediate)?;
        tx.prepare_cached(
            "UPDATE destruction_batches SET status = 'destroyed', decided_by = ?2,
                 decided_at = ?3 WHERE id = ?1 AND status = 'approving'",
        )?
        .execute(params![id, by.user, now_millis()])?;
        let destroyed: i64 = tx.query_row(
            "SELECT count(*) FROM destruction_items WHERE batch = ?1 AND outcome = 'destroyed'",
            params![id],
            |r| r.get(0),
        )?;
        if destroyed > 0 {
            // Bulk Data files made before, or being written, may hold the charts destroyed:
            // they go too (a running export stops), and their clients are told to export
            // again.
            tx.execute(
                "DELETE FROM bulk_files WHERE job IN
                     (SELECT id FROM bulk_jobs WHERE status IN ('done', 'running'))",
                params![],
            )?;
            tx.execute(
                "UPDATE bulk_jobs SET status = 'failed',
                     error = 'its files held charts destroyed since; kick off a new export'
                 WHERE status IN ('done', 'running')",
                params![],
            )?;
        }
        insert_audit(
            &tx,
            by,
            AuditAction::Retention,
            None,
            &[],
            Some(&format!(
                "destruction batch {id} approved: {destroyed} chart(s) destroyed"
            )),
        )?;
        tx.commit()?;
        self.destruction_batch(id)?
            .ok_or_else(|| StoreError::Corrupt("a destruction batch vanished".into()))
    }

    fn keep_item(&self, batch: i64, chart: ChartId, note: &str) -> Result<(), StoreError> {
        self.inner
            .writer()?
            .prepare_cached(
                "UPDATE destruction_items SET outcome = 'kept', note = ?3
                 WHERE batch = ?1 AND chart_id = ?2 AND outcome = 'proposed'",
            )?
            .execute(params![batch, chart.to_string(), note])?;
        Ok(())
    }

    /// Destroys one chart under the chart's lock: every row of it, but its audit trail.
    fn destroy_chart(
        &self,
        by: &Actor,
        batch: i64,
        chart: ChartId,
        rule: &str,
    ) -> Result<(), StoreError> {
        let id = chart.to_string();
        let slot = lock(&self.inner.cache).slot(chart);
        let cached = lock(&slot);
        let destroyed = self.securely(|conn| {
            let tx = conn.transaction(Begin::Immediate)?;
            let found: Option<(i64, Vec<u8>, Option<Vec<u8>>)> = tx
                .query_row(
                    "SELECT key, heads, origin FROM charts WHERE id = ?1",
                    [&id],
                    |r| r.columns(),
                )
                .optional()?;
            // Checked again where it is destroyed: a legal hold placed a moment ago wins.
            let held = tx
                .prepare_cached(
                    "SELECT 1 FROM legal_holds WHERE lifted_at IS NULL
                         AND (chart_id = ?1 OR mrn = (SELECT mrn FROM charts WHERE id = ?1))",
                )?
                .exists(params![id])?;
            let kept = match (&found, held) {
                (None, _) => Some("no longer in the store"),
                (Some(_), true) => Some("under a legal hold placed since"),
                _ => None,
            };
            let (Some((key, heads, origin)), None) = (found, kept) else {
                tx.prepare_cached(
                    "UPDATE destruction_items SET outcome = 'kept', note = ?3
                     WHERE batch = ?1 AND chart_id = ?2 AND outcome = 'proposed'",
                )?
                .execute(params![batch, id, kept.unwrap_or_default()])?;
                tx.commit()?;
                return Ok(false);
            };
            for (table, column) in super::purge::BY_KEY {
                tx.execute(&format!("DELETE FROM {table} WHERE {column} = ?1"), [key])?;
            }
            tx.execute(
                "DELETE FROM held_change_hashes WHERE held IN
                     (SELECT id FROM held_changes WHERE chart_id = ?1)",
                [&id],
            )?;
            for table in SERVER_BY_ID {
                tx.execute(&format!("DELETE FROM {table} WHERE chart_id = ?1"), [&id])?;
            }
            super::attachments::release_chart(&tx, &id)?;
            let at = now_millis();
            tx.execute(
                "INSERT INTO destroyed_charts (chart_id, origin, batch, destroyed_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![id, origin, batch, at],
            )?;
            tx.prepare_cached(
                "UPDATE destruction_items SET outcome = 'destroyed', heads = ?3, destroyed_at = ?4
                 WHERE batch = ?1 AND chart_id = ?2 AND outcome = 'proposed'",
            )?
            .execute(params![batch, id, heads, at])?;
            let hashes = super::parse_heads_blob(&heads).unwrap_or_default();
            insert_audit(
                &tx,
                by,
                AuditAction::Destroy,
                Some(chart),
                &hashes,
                Some(&format!("destroyed in batch {batch} under {rule}")),
            )?;
            tx.commit()?;
            Ok(true)
        })?;
        if destroyed {
            self.forget_removed(chart, &slot, cached);
        }
        Ok(())
    }

    /// Whether a chart was destroyed: it is never stored again.
    pub fn destroyed(&self, chart: ChartId) -> Result<bool, StoreError> {
        self.inner.with_reader(|conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM destroyed_charts WHERE chart_id = ?1")?
                .exists([chart.to_string()])?)
        })
    }

    /// Destruction batches, newest first, without their items.
    pub fn destruction_batches(&self) -> Result<Vec<DestructionBatch>, StoreError> {
        let ids: Vec<i64> = self.inner.with_reader(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id FROM destruction_batches ORDER BY id DESC")?;
            let rows = stmt.query_map(params![], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        ids.into_iter()
            .filter_map(|id| self.destruction_batch(id).transpose())
            .map(|b| {
                b.map(|mut b| {
                    b.items.clear();
                    b
                })
            })
            .collect()
    }

    /// One batch with its items: once destroyed, the certificate of destruction.
    pub fn destruction_batch(&self, id: i64) -> Result<Option<DestructionBatch>, StoreError> {
        type Head = (i64, String, i64, Option<String>, Option<i64>, String);
        type Item = (
            String,
            String,
            Option<String>,
            String,
            String,
            String,
            String,
            String,
            Option<String>,
            Option<Vec<u8>>,
            Option<i64>,
        );
        let found: Option<(Head, Vec<Item>)> = self.inner.with_reader(|conn| {
            let head: Option<Head> = conn
                .prepare_cached(
                    "SELECT as_of, proposed_by, proposed_at, decided_by, decided_at, status
                     FROM destruction_batches WHERE id = ?1",
                )?
                .query_row(params![id], |r| r.columns())
                .optional()?;
            let Some(head) = head else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(
                "SELECT chart_id, mrn, encounter_class, admitted_at, discharged_at, retain_until,
                        rule, outcome, note, heads, destroyed_at
                 FROM destruction_items WHERE batch = ?1 ORDER BY discharged_at, chart_id",
            )?;
            let items = stmt
                .query_map(params![id], |r| r.columns())?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some((head, items)))
        })?;
        let Some(((as_of, proposed_by, proposed_at, decided_by, decided_at, status), items)) =
            found
        else {
            return Ok(None);
        };
        let items = items
            .into_iter()
            .map(
                |(
                    chart,
                    mrn,
                    class,
                    admitted,
                    discharged,
                    until,
                    rule,
                    outcome,
                    note,
                    heads,
                    at,
                )| {
                    Ok(DestructionItem {
                        chart: chart
                            .parse()
                            .map_err(|_| StoreError::Corrupt("an item names no chart".into()))?,
                        mrn,
                        encounter_class: class,
                        admitted_at: admitted,
                        discharged_at: discharged,
                        retain_until: until,
                        rule,
                        outcome,
                        note,
                        heads: heads
                            .as_deref()
                            .and_then(super::parse_heads_blob)
                            .unwrap_or_default()
                            .iter()
                            .map(ChangeHash::to_string)
                            .collect(),
                        destroyed_at: at.map(|t| millis(t, "a destruction's time")).transpose()?,
                    })
                },
            )
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some(DestructionBatch {
            id,
            as_of: millis(as_of, "a batch's time")?,
            proposed_by,
            proposed_at: millis(proposed_at, "a batch's time")?,
            decided_by,
            decided_at: decided_at
                .map(|t| millis(t, "a batch's time"))
                .transpose()?,
            status,
            items,
        }))
    }
}

/// The server's tables that keep a chart's rows by its document id, destroyed with it.
const SERVER_BY_ID: &[&str] = &[
    "held_changes",
    "change_proofs",
    "break_glass",
    "sync_states",
    "departures_told",
    "device_purges",
];

/// Why a batch cannot be decided: it is not there, or not open.
fn batch_not_open(tx: &Sql<'_>, id: i64) -> Result<StoreError, StoreError> {
    let status: Option<String> = tx
        .query_row(
            "SELECT status FROM destruction_batches WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match status {
        None => StoreError::Invalid(format!("no destruction batch {id}")),
        Some(s) => StoreError::OutOfTurn(format!("destruction batch {id} is {s} already")),
    })
}

/// Audits a legal hold's placing or lifting on each chart it covers (once with no chart, for
/// a patient who has none).
fn audit_hold(tx: &Sql<'_>, by: &Actor, scope: &HoldScope, what: &str) -> Result<(), StoreError> {
    let charts: Vec<ChartId> = match scope {
        HoldScope::Chart(c) => vec![*c],
        HoldScope::Patient(mrn) => {
            let mut stmt = tx.prepare_cached("SELECT id FROM charts WHERE mrn = ?1 ORDER BY id")?;
            let ids: Vec<String> = stmt
                .query_map(params![mrn], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()?;
            ids.iter().filter_map(|s| s.parse().ok()).collect()
        }
    };
    if charts.is_empty() {
        return insert_audit(tx, by, AuditAction::Retention, None, &[], Some(what));
    }
    for c in charts {
        insert_audit(tx, by, AuditAction::Retention, Some(c), &[], Some(what))?;
    }
    Ok(())
}

/// Refuses a chart that was destroyed: under its id, or under another with its first change.
pub(super) fn refuse_destroyed(
    tx: &Sql<'_>,
    id: ChartId,
    origin: Option<&[u8]>,
) -> Result<(), StoreError> {
    let by_id = tx
        .prepare_cached("SELECT 1 FROM destroyed_charts WHERE chart_id = ?1")?
        .exists(params![id.to_string()])?;
    let by_origin = match origin {
        Some(o) => tx
            .prepare_cached("SELECT 1 FROM destroyed_charts WHERE origin = ?1")?
            .exists(params![o])?,
        None => false,
    };
    if by_id || by_origin {
        return Err(StoreError::Destroyed(id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        parse_date(s).unwrap()
    }

    #[test]
    fn a_chart_is_kept_until_the_later_of_its_years_and_the_patients_age() {
        let rule = RetentionRule::builtin();
        // An adult: ten years after discharge.
        assert_eq!(
            rule.retain_until(d("2014-03-02"), Some(d("1950-01-01"))),
            Some(d("2024-03-02"))
        );
        // A child born in 2010, discharged in 2012: until 21, in 2031.
        assert_eq!(
            rule.retain_until(d("2012-06-30"), Some(d("2010-05-01"))),
            Some(d("2031-05-01"))
        );
        // The age rule needs a birth date: without one, kept until a person decides.
        assert_eq!(rule.retain_until(d("2012-06-30"), None), None);
        // A leap day: the same day, or the 28th in a year without one.
        assert_eq!(
            rule.retain_until(d("2016-02-29"), Some(d("1950-01-01"))),
            Some(d("2026-02-28"))
        );
        let no_age = RetentionRule {
            until_age: None,
            ..RetentionRule::builtin()
        };
        assert_eq!(
            no_age.retain_until(d("2012-06-30"), None),
            Some(d("2022-06-30"))
        );
    }
}
