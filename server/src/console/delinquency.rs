//! The delinquency dashboard: delinquent records against the average monthly discharges and
//! the hospital's threshold, what they lack, the coding backlog apart, monthly discharges, and
//! the daily trend drawn as an SVG on the server (no script; the same numbers as a table).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chartsync_core::chart::Timestamp;
use chartsync_core::store::{AuditAction, DayCount, StoreError};

use super::worklist::Filters;
use super::{pages, refused_page, render, Signed};
use crate::records::{reads_records_statistics, DelinquencyReport, TREND_DAYS};
use crate::AppState;

pub(super) async fn show(
    State(app): State<AppState>,
    signed: Signed,
    Query(filters): Query<Filters>,
) -> Response {
    if !reads_records_statistics(signed.session.role) {
        return refused_page(
            StatusCode::FORBIDDEN,
            "Delinquency statistics are for coders and records staff.",
        );
    }
    let access = signed.access();
    let wards = match crate::records::listing_wards(&access, &filters.ward_query()) {
        Ok(w) => w,
        Err(refusal) => return refused_page(refusal.0, &refusal.1),
    };
    let store = app.store.clone();
    let actor = signed.actor();
    let now = Timestamp::now();
    let detail = crate::records::audit_detail("console delinquency", &wards);
    let found = tokio::task::spawn_blocking(move || {
        let d = store.delinquency(wards.as_deref(), now, TREND_DAYS)?;
        store.record_audit(&actor, AuditAction::List, None, Some(&detail))?;
        Ok::<_, StoreError>(d)
    })
    .await;
    let report = match found {
        Ok(Ok(d)) => DelinquencyReport::of(d, app.delinquency_threshold),
        Ok(Err(e)) => return crate::api::internal(e),
        Err(e) => return crate::api::internal(e),
    };
    let d = &report.delinquency;
    let ward_choices = super::ward_choices(&access, &filters.ward);
    let kinds: Vec<(String, u32)> = d
        .by_kind
        .iter()
        .map(|k| (pages::kind_label(k.kind).to_string(), k.records))
        .collect();
    let months: Vec<(String, u32)> = d
        .monthly_discharges
        .iter()
        .map(|m| (m.month.clone(), m.discharges))
        .collect();
    render(pages::Delinquency {
        frame: signed.frame(&app),
        as_of: &pages::minute(now),
        ward: &filters.ward,
        ward_choices: &ward_choices,
        delinquent: d.delinquent_records,
        average: d.average_monthly_discharges.map(|a| format!("{a:.1}")),
        months_counted: d.monthly_discharges.len(),
        percent: d.percent_of_discharges.map(|p| format!("{p:.0}")),
        threshold: report.threshold_percent,
        over: report.over_threshold,
        kinds: &kinds,
        coding_backlog: d.coding_backlog,
        coding_backlog_overdue: d.coding_backlog_overdue,
        months: &months,
        trend: &d.trend,
        chart: TrendChart::of(&d.trend, now, TREND_DAYS),
    })
}

/// The trend as SVG shapes, computed here so that the template only places them.
pub struct TrendChart {
    pub width: u32,
    pub height: u32,
    /// `x,y x,y …` of the delinquent records and of the coding backlog.
    pub delinquent: String,
    pub backlog: String,
    /// Each day's point, for a day with a single count (a polyline of one point draws nothing).
    pub dots: Vec<(f64, f64, f64, f64)>,
    /// The y axis' top value, and where the axes run.
    pub max: u32,
    pub left: u32,
    pub right: u32,
    pub top: u32,
    pub bottom: u32,
    pub first_day: String,
    pub last_day: String,
}

impl TrendChart {
    fn of(trend: &[DayCount], now: Timestamp, days: u32) -> TrendChart {
        let (width, height, left, right, top, bottom) =
            (720u32, 240u32, 48u32, 704u32, 16u32, 208u32);
        let max = trend
            .iter()
            .map(|d| d.delinquent_records.max(d.coding_backlog))
            .max()
            .unwrap_or(0)
            .max(1);
        let start = now.plus_seconds(-(i64::from(days) * 86_400)).date();
        let start_secs = Timestamp::parse(&format!("{start}T00:00:00Z")).map_or(0, |t| t.unix());
        let x = |day: &str| -> f64 {
            let offset = Timestamp::parse(&format!("{day}T00:00:00Z"))
                .map(|d| (d.unix() - start_secs).div_euclid(86_400))
                .unwrap_or(0)
                .clamp(0, i64::from(days));
            f64::from(left) + (f64::from(right - left) * offset as f64 / f64::from(days.max(1)))
        };
        let y = |n: u32| -> f64 {
            f64::from(bottom) - f64::from(bottom - top) * f64::from(n) / f64::from(max)
        };
        let line = |pick: fn(&DayCount) -> u32| {
            trend
                .iter()
                .map(|d| format!("{:.1},{:.1}", x(&d.day), y(pick(d))))
                .collect::<Vec<_>>()
                .join(" ")
        };
        TrendChart {
            width,
            height,
            delinquent: line(|d| d.delinquent_records),
            backlog: line(|d| d.coding_backlog),
            dots: trend
                .iter()
                .map(|d| {
                    (
                        x(&d.day),
                        y(d.delinquent_records),
                        x(&d.day),
                        y(d.coding_backlog),
                    )
                })
                .collect(),
            max,
            left,
            right,
            top,
            bottom,
            first_day: start.to_string(),
            last_day: now.date().to_string(),
        }
    }
}
