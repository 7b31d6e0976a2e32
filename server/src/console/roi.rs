//! The release-of-information screens: the log of open requests with their days left, and one
//! chart's requests, where a request is logged from a form and moved along (authorization
//! verified, denied, released with its disclosure recorded).

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chartsync_core::chart::{
    ChartId, ChartView, DisclosurePurpose, FeeBasis, FormType, RoiDelivery, RoiFee, RoiStatus,
    SensitiveCategory, Timestamp,
};
use serde::Deserialize;

use super::{pages, refused_page, render, Signed};
use crate::roi::{works_roi, RoiWork};
use crate::AppState;

pub struct LogRow {
    pub chart: String,
    pub mrn: String,
    pub patient: String,
    pub ward: String,
    pub requester: String,
    pub recipient: String,
    pub purpose: String,
    pub received: String,
    pub due: String,
    /// "12 days left", "3 days overdue".
    pub left: String,
    pub late: bool,
    pub status: String,
    pub extended: bool,
    pub delivery: String,
    /// The total, once set.
    pub fee: String,
}

/// Days left to the due date, or days past it.
pub(super) fn days_left(due: Timestamp, now: Timestamp) -> (String, bool) {
    // Any part of a day counts as a day, either side of the due time.
    let secs = due.unix() - now.unix();
    let plural = |n: i64| if n == 1 { "" } else { "s" };
    if secs < 0 {
        let late = (-secs + 86_399) / 86_400;
        (format!("{late} day{} overdue", plural(late)), true)
    } else {
        let days = (secs + 86_399) / 86_400;
        (format!("{days} day{} left", plural(days)), false)
    }
}

/// `GET /console/roi[?ward=W]`: the open requests, soonest due first.
pub(super) async fn log(
    State(app): State<AppState>,
    signed: Signed,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let access = signed.access();
    let ward = query.get("ward").cloned().unwrap_or_default();
    let query = query
        .into_iter()
        .filter(|(k, v)| k == "ward" && !v.is_empty())
        .collect();
    let now = Timestamp::now();
    let lines =
        match crate::roi::open_requests(app.store.clone(), &access, signed.actor(), &query, now)
            .await
        {
            Ok(l) => l,
            Err(r) => return refused_page(r.0, &r.1),
        };
    let rows: Vec<LogRow> = lines
        .iter()
        .map(|l| {
            let r = &l.request;
            let (left, late) = days_left(r.due_at, now);
            LogRow {
                chart: l.chart.to_string(),
                mrn: l.mrn.clone(),
                patient: l.patient.clone(),
                ward: l.ward.clone(),
                requester: r.requester.clone(),
                recipient: r.recipient.clone(),
                purpose: pages::words(r.purpose.token()),
                received: pages::day(r.received_at),
                due: pages::day(r.due_at),
                left,
                late,
                status: pages::words(r.status.token()),
                extended: r.extension.is_some(),
                delivery: r
                    .delivery
                    .map(|d| pages::words(d.token()))
                    .unwrap_or_default(),
                fee: r.fee.map(|f| dollars(f.total_cents)).unwrap_or_default(),
            }
        })
        .collect();
    let ward_choices = super::ward_choices(&access, &ward);
    render(pages::RoiLog {
        frame: signed.frame(&app),
        as_of: &pages::minute(now),
        ward: &ward,
        ward_choices: &ward_choices,
        rows: &rows,
    })
}

#[derive(Deserialize)]
pub(super) struct ChartQuery {
    id: String,
}

/// An amount of cents as dollars: "$16.88".
pub(super) fn dollars(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// Dollars as typed ("16.88", "$16.8", "16", or nothing for none) as cents.
pub(super) fn cents_of(typed: &str, field: &str) -> Result<u64, String> {
    let t = typed.trim();
    let t = t.strip_prefix('$').unwrap_or(t).trim();
    if t.is_empty() {
        return Ok(0);
    }
    let (whole, part) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 9 || part.len() > 2 || !digits(whole) || !digits(part) {
        return Err(format!(
            "{field} is an amount in dollars and cents, like 12.50."
        ));
    }
    let cents = format!("{part:0<2}").parse::<u64>().unwrap_or(0);
    Ok(whole.parse::<u64>().unwrap_or(0) * 100 + cents)
}

/// What a fee says on the page: its total, basis and parts.
fn fee_said(fee: &RoiFee) -> String {
    let parts: Vec<String> = [
        ("labor", fee.labor_cents),
        ("supplies", fee.supplies_cents),
        ("postage", fee.postage_cents),
        ("summary", fee.summary_cents),
    ]
    .iter()
    .filter(|(_, c)| *c > 0)
    .map(|(what, c)| format!("{what} {}", dollars(*c)))
    .collect();
    let basis = match fee.basis {
        FeeBasis::NoFee => return "No fee".into(),
        FeeBasis::ActualCost => "actual cost",
        FeeBasis::AverageCost => "average cost",
        FeeBasis::FlatElectronic => "flat fee for an electronic copy",
    };
    if parts.is_empty() {
        format!("{}, {basis}", dollars(fee.total_cents))
    } else {
        format!(
            "{}, {basis} ({})",
            dollars(fee.total_cents),
            parts.join(", ")
        )
    }
}

/// A sensitive category as the page names it.
pub fn category_said(c: SensitiveCategory) -> &'static str {
    match c {
        SensitiveCategory::PsychotherapyNotes => "Psychotherapy notes",
        SensitiveCategory::SubstanceUseDisorder => "Substance use disorder records (42 CFR part 2)",
        SensitiveCategory::HivAids => "HIV/AIDS",
        SensitiveCategory::Genetic => "Genetic testing",
        SensitiveCategory::MentalHealth => "Mental health",
        SensitiveCategory::ReproductiveHealth => "Reproductive health",
    }
}

pub struct RequestRow {
    pub id: String,
    pub requester: String,
    pub recipient: String,
    pub address: String,
    pub purpose: String,
    pub scope: String,
    pub received: String,
    pub due: String,
    pub left: String,
    pub status: String,
    pub status_note: String,
    pub open: bool,
    pub verified: bool,
    /// How it goes out, once prepared.
    pub delivery: String,
    pub fee: String,
    /// Who reviewed it for sensitive information, and what they found.
    pub review: String,
    /// The extension's reason and the due date before it, once taken.
    pub extension: String,
    pub may_extend: bool,
    pub prepared: bool,
    /// The release carries sensitive information: a supervisor releases it.
    pub sensitive: bool,
    /// The preparation form's current choices: delivery and basis tokens, the categories
    /// found, the parts in dollars (labor, supplies, postage, summary) and a flat fee.
    pub chosen_delivery: &'static str,
    pub chosen_basis: &'static str,
    pub chosen_sensitive: Vec<SensitiveCategory>,
    pub chosen_parts: [String; 4],
    pub chosen_flat: String,
}

/// The chart `id` for release-of-information work, its read audited; or the page saying
/// why not.
async fn read_chart(app: &AppState, signed: &Signed, id: &str) -> Result<ChartView, Response> {
    if !works_roi(signed.session.role) {
        return Err(refused_page(
            StatusCode::FORBIDDEN,
            "Release of information is worked by records technicians and supervisors.",
        ));
    }
    let Ok(id) = id.parse::<ChartId>() else {
        return Err(refused_page(
            StatusCode::BAD_REQUEST,
            "That is not a chart id.",
        ));
    };
    crate::coding::read_view(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        id,
        "release of information",
    )
    .await
    .map_err(|r| refused_page(r.0, &r.1))
}

/// `GET /console/roi/chart?id=…`: a chart's requests and disclosures, the forms to log and
/// move requests. Audited as a read of the chart.
pub(super) async fn chart(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<ChartQuery>,
) -> Response {
    let view = match read_chart(&app, &signed, &q.id).await {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let now = Timestamp::now();
    let requests: Vec<RequestRow> = view
        .roi_requests
        .iter()
        .map(|r| {
            let open = matches!(
                r.status,
                RoiStatus::Received | RoiStatus::AuthorizationVerified
            );
            RequestRow {
                id: r.id.clone(),
                requester: r.requester.clone(),
                recipient: r.recipient.clone(),
                address: r.recipient_address.clone(),
                purpose: pages::words(r.purpose.token()),
                scope: r.scope.clone(),
                received: pages::minute(r.received_at),
                due: pages::day(r.due_at),
                left: if open {
                    days_left(r.due_at, now).0
                } else {
                    String::new()
                },
                status: pages::words(r.status.token()),
                status_note: format!(
                    "{} by {}{}",
                    pages::minute(r.status_at),
                    r.status_by,
                    r.status_reason
                        .as_deref()
                        .map(|why| format!(": {why}"))
                        .unwrap_or_default()
                ),
                open,
                verified: r.status == RoiStatus::AuthorizationVerified,
                delivery: r
                    .delivery
                    .map(|d| pages::words(d.token()))
                    .unwrap_or_default(),
                fee: r.fee.as_ref().map(fee_said).unwrap_or_default(),
                review: r
                    .sensitive_review
                    .as_ref()
                    .map(|v| {
                        let found: Vec<&str> =
                            v.categories.iter().map(|c| category_said(*c)).collect();
                        format!(
                            "{} by {}: {}",
                            pages::minute(v.at),
                            v.by,
                            if found.is_empty() {
                                "none found".to_string()
                            } else {
                                found.join(", ")
                            }
                        )
                    })
                    .unwrap_or_default(),
                extension: r
                    .extension
                    .as_ref()
                    .map(|e| pages::extension_said(e.at, &e.by, e.original_due_at, &e.reason))
                    .unwrap_or_default(),
                may_extend: open && r.extension.is_none() && now <= r.due_at,
                prepared: r.delivery.is_some() && r.sensitive_review.is_some() && r.fee.is_some(),
                sensitive: r
                    .sensitive_review
                    .as_ref()
                    .is_some_and(|v| !v.categories.is_empty()),
                chosen_delivery: r.delivery.unwrap_or(RoiDelivery::Mail).token(),
                chosen_basis: r.fee.map_or(FeeBasis::NoFee, |f| f.basis).token(),
                chosen_sensitive: r
                    .sensitive_review
                    .as_ref()
                    .map(|v| v.categories.clone())
                    .unwrap_or_default(),
                chosen_parts: {
                    let f = r.fee.unwrap_or(RoiFee {
                        basis: FeeBasis::NoFee,
                        labor_cents: 0,
                        supplies_cents: 0,
                        postage_cents: 0,
                        summary_cents: 0,
                        total_cents: 0,
                    });
                    let shown = |c: u64| {
                        if c == 0 {
                            String::new()
                        } else {
                            dollars(c)[1..].to_string()
                        }
                    };
                    [
                        shown(f.labor_cents),
                        shown(f.supplies_cents),
                        shown(f.postage_cents),
                        shown(f.summary_cents),
                    ]
                },
                chosen_flat: r
                    .fee
                    .filter(|f| f.basis == FeeBasis::FlatElectronic)
                    .map(|f| dollars(f.total_cents)[1..].to_string())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let authorizations: Vec<(String, String)> = view
        .forms
        .iter()
        .filter(|f| f.form_type == FormType::RoiAuthorization && f.completed_at.is_some())
        .map(|f| {
            (
                f.id.clone(),
                format!("Authorization signed {}", pages::minute(f.created_at)),
            )
        })
        .collect();
    let disclosures: Vec<(String, String, String, String)> = view
        .disclosures
        .iter()
        .map(|d| {
            (
                pages::minute(d.at),
                d.recipient.clone(),
                d.description.clone(),
                pages::words(d.purpose.token()),
            )
        })
        .collect();
    let purposes: Vec<(&'static str, String)> = DisclosurePurpose::ALL
        .iter()
        .map(|p| (p.token(), pages::words(p.token())))
        .collect();
    let deliveries: Vec<(&'static str, String)> = RoiDelivery::ALL
        .iter()
        .map(|d| (d.token(), pages::words(d.token())))
        .collect();
    let categories: Vec<(SensitiveCategory, &'static str)> = SensitiveCategory::ALL
        .iter()
        .map(|c| (*c, category_said(*c)))
        .collect();
    render(pages::RoiChart {
        frame: signed.frame(&app),
        flash: signed.session.flash.as_deref(),
        deliveries: &deliveries,
        categories: &categories,
        chart: &q.id,
        mrn: &view.patient.mrn,
        patient: &format!("{}, {}", view.patient.family_name, view.patient.given_names),
        requests: &requests,
        authorizations: &authorizations,
        disclosures: &disclosures,
        purposes: &purposes,
    })
}

#[derive(Deserialize)]
pub(super) struct RoiForm {
    csrf: String,
    chart: String,
    /// Empty: a new request.
    #[serde(default)]
    request: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    requester: String,
    #[serde(default)]
    recipient: String,
    #[serde(default)]
    recipient_address: String,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    authorization_form: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    description: String,
}

/// `POST /console/roi/chart`: logs a request (no `request`), or moves one (`status`).
pub(super) async fn work(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<RoiForm>,
) -> Response {
    let chart = match super::coding::checked(&signed, &headers, &form.csrf, &form.chart) {
        Ok(chart) => chart,
        Err(refused) => return refused,
    };
    let some = |v: &str| Some(v.to_string());
    let (work, said) = if form.request.is_empty() {
        let purpose = match crate::roi::purpose(&form.purpose) {
            Ok(p) => p,
            Err(r) => return refused_page(r.0, &r.1),
        };
        let w = RoiWork::Receive {
            requester: form.requester.trim().to_string(),
            recipient: form.recipient.trim().to_string(),
            recipient_address: form.recipient_address.trim().to_string(),
            purpose,
            scope: form.scope.trim().to_string(),
        };
        (w, "Request logged, due in 30 days.".to_string())
    } else if form.status == "extend" {
        let w = RoiWork::Extend {
            request: form.request.clone(),
            reason: form.reason.trim().to_string(),
        };
        (
            w,
            "Extended by 30 days. Print the notice for the requester.".to_string(),
        )
    } else {
        match crate::roi::moved(
            form.request.clone(),
            &form.status,
            some(&form.authorization_form),
            some(&form.reason),
            some(&form.description),
        ) {
            Ok(w) => {
                let said = match &w {
                    RoiWork::Verify { .. } => "Authorization verified.",
                    RoiWork::Deny { .. } => "Request denied.",
                    RoiWork::Fulfil { .. } => "Released; the disclosure is recorded.",
                    RoiWork::Receive { .. } | RoiWork::Extend { .. } | RoiWork::Prepare { .. } => {
                        "Saved."
                    }
                };
                (w, said.to_string())
            }
            Err(r) => return refused_page(r.0, &r.1),
        }
    };
    work_then_back(&app, &signed, chart, work, said).await
}

/// Does `work` on the chart as the signed-in person and goes back to its release page saying
/// `said`; or shows why it was refused, nothing changed.
async fn work_then_back(
    app: &AppState,
    signed: &Signed,
    chart: ChartId,
    work: RoiWork,
    said: String,
) -> Response {
    match crate::roi::work(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        "console",
        chart,
        work,
    )
    .await
    {
        Ok(_) => {
            app.console.flash(&signed.id, said);
            Redirect::to(&format!("/console/roi/chart?id={chart}")).into_response()
        }
        Err(r) => refused_page(r.0, &r.1),
    }
}

/// `POST /console/roi/prepare`: a request's delivery, its review for sensitive information
/// (a `sensitive` field for each category found) and its fee, typed in dollars.
pub(super) async fn prepare(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let one = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let chart = match super::coding::checked(&signed, &headers, one("csrf"), one("chart")) {
        Ok(chart) => chart,
        Err(refused) => return refused,
    };
    let sensitive: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "sensitive")
        .map(|(_, v)| v.clone())
        .collect();
    let basis = one("basis");
    let amounts = (|| -> Result<([u64; 4], u64), String> {
        let parts = [
            cents_of(one("labor"), "Labor")?,
            cents_of(one("supplies"), "Supplies")?,
            cents_of(one("postage"), "Postage")?,
            cents_of(one("summary"), "Summary")?,
        ];
        let flat = cents_of(one("flat"), "The flat fee")?;
        // The page asks only for the amounts its basis has: the others are left out.
        Ok(match FeeBasis::from_token(basis) {
            Ok(FeeBasis::ActualCost | FeeBasis::AverageCost) => (parts, parts.iter().sum()),
            Ok(FeeBasis::FlatElectronic) => ([0; 4], flat),
            _ => ([0; 4], 0),
        })
    })();
    let (parts, total) = match amounts {
        Ok(a) => a,
        Err(why) => return refused_page(StatusCode::UNPROCESSABLE_ENTITY, &why),
    };
    let work = match crate::roi::preparation(
        one("request").to_string(),
        one("delivery"),
        &sensitive,
        basis,
        parts,
        total,
    ) {
        Ok(w) => w,
        Err(r) => return refused_page(r.0, &r.1),
    };
    let said = format!(
        "Release prepared: {} to pay.",
        if total == 0 {
            "nothing".to_string()
        } else {
            dollars(total)
        }
    );
    work_then_back(&app, &signed, chart, work, said).await
}

#[derive(Deserialize)]
pub(super) struct NoticeQuery {
    id: String,
    request: String,
}

/// `GET /console/roi/notice?id=…&request=…`: the written notice of a request's extension, to
/// print and send: the reason for the delay and the date it will be answered by (45 CFR
/// 164.524(b)(2)(ii)). Audited as a read of the chart.
pub(super) async fn notice(
    State(app): State<AppState>,
    signed: Signed,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let view = match read_chart(&app, &signed, &q.id).await {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let Some((r, e)) = view
        .roi_requests
        .iter()
        .find(|r| r.id == q.request)
        .and_then(|r| r.extension.as_ref().map(|e| (r, e)))
    else {
        return refused_page(
            StatusCode::NOT_FOUND,
            "This chart has no extended request by that id.",
        );
    };
    render(pages::ExtensionNotice {
        frame: signed.frame(&app),
        back: &format!("/console/roi/chart?id={}", q.id),
        back_label: "Back to the chart's release of information",
        dated: &pages::day(e.at),
        requester: &r.requester,
        asked: &format!(
            "On {} we received your request for the records of {} {} (medical record number {}): {}.",
            pages::day(r.received_at),
            view.patient.given_names,
            view.patient.family_name,
            view.patient.mrn,
            r.scope
        ),
        days: 30,
        rule: "45 CFR 164.524(b)(2)(ii)",
        reason: &e.reason,
        due: &pages::day(r.due_at),
        by: &e.by,
    })
}
