//! The deficiency worklist screen: a ward's deficiencies with their aging, filtered by kind,
//! responsible and overdue; the checked ones routed to a person in one step; a late H&P
//! acknowledged with a reason. The filters travel in the URL (ward, kind, a staff id: no
//! patient data); what a form changes travels in its body.

use std::collections::HashMap;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chartsync_core::chart::{DeficiencyKind, Timestamp};
use chartsync_core::store::{AuditAction, DeficiencyFilter, DeficiencyRef, StoreError};
use serde::{Deserialize, Serialize};

use super::{aging, pages, refused_page, render, Signed};
use crate::records::{works_deficiencies, DeficiencyWork};
use crate::AppState;

/// What the worklist shows, as its form and URL carry it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct Filters {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) ward: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    responsible: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    overdue: String,
    /// 1-based; empty is the first.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    page: String,
}

impl Filters {
    fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Filters {
        let mut f = Filters::default();
        for (k, v) in pairs {
            let v = v.trim().to_string();
            match k {
                "ward" => f.ward = v,
                "kind" => f.kind = v,
                "responsible" => f.responsible = v,
                "overdue" => f.overdue = v,
                "page" => f.page = v,
                _ => {}
            }
        }
        f
    }

    /// The worklist's URL with these filters.
    fn url(&self) -> String {
        match serde_urlencoded::to_string(self) {
            Ok(q) if !q.is_empty() => format!("/console/worklist?{q}"),
            _ => "/console/worklist".to_string(),
        }
    }

    /// The same filters on another page.
    fn on_page(&self, page: usize) -> Filters {
        Filters {
            page: if page <= 1 {
                String::new()
            } else {
                page.to_string()
            },
            ..self.clone()
        }
    }

    /// The ward alone, as [`crate::records::listing_wards`] reads it.
    pub(super) fn ward_query(&self) -> HashMap<String, String> {
        self.query()
    }

    fn query(&self) -> HashMap<String, String> {
        let mut q = HashMap::new();
        if !self.ward.is_empty() {
            q.insert("ward".to_string(), self.ward.clone());
        }
        q
    }
}

pub(super) async fn show(
    State(app): State<AppState>,
    signed: Signed,
    Query(filters): Query<Filters>,
) -> Response {
    let access = signed.access();
    let wards = match crate::records::listing_wards(&access, &filters.query()) {
        Ok(w) => w,
        Err(refusal) => return refused_page(refusal.0, &refusal.1),
    };
    let kind = match filters.kind.as_str() {
        "" => None,
        k => match DeficiencyKind::from_token(k) {
            Ok(k) => Some(k),
            Err(_) => {
                return refused_page(
                    StatusCode::BAD_REQUEST,
                    "That kind of deficiency is not one the console knows.",
                )
            }
        },
    };
    let overdue_only = filters.overdue == "true";
    let responsible = Some(filters.responsible.clone()).filter(|r| !r.is_empty());
    let store = app.store.clone();
    let actor = signed.actor();
    let now = Timestamp::now();
    let filter = DeficiencyFilter {
        wards: wards.clone(),
        kind,
        responsible,
        overdue_only,
        ..DeficiencyFilter::default()
    };
    let detail = crate::records::audit_detail("console worklist", &wards);
    let asked = Some(filters.ward.clone()).filter(|w| !w.is_empty());
    let seen = access.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let items = store.worklist(&filter, now)?;
        let staff = store.staff()?;
        store.record_audit(&actor, AuditAction::List, None, Some(&detail))?;
        // A ward typed by name that no chart is on is a mistake, not an empty worklist.
        let unknown = match (&asked, items.is_empty()) {
            (Some(w), true) => {
                let mut wards = store.wards()?;
                let unknown = !wards.contains(w);
                wards.retain(|known| seen.may_see_ward(known));
                unknown.then(|| crate::records::no_such_ward(w, &wards))
            }
            _ => None,
        };
        Ok::<_, StoreError>((items, staff, unknown))
    })
    .await;
    let (items, staff) = match listed {
        Ok(Ok((_, _, Some(unknown)))) => return refused_page(StatusCode::NOT_FOUND, &unknown),
        Ok(Ok((items, staff, None))) => (items, staff),
        Ok(Err(e)) => return crate::api::internal(e),
        Err(e) => return crate::api::internal(e),
    };
    // The aging counts cover every deficiency shown by the filters; the table, one page.
    let buckets = aging::counts(items.iter().map(|i| pages::aging_of(i, now).0));
    let (page, shown, pager) =
        pages::Pager::of(items.len(), &filters.page, |p| filters.on_page(p).url());
    let back = filters.on_page(page).url();
    let rows: Vec<pages::WorklistRow> = items[shown.clone()]
        .iter()
        .zip(shown)
        .map(|(item, n)| pages::WorklistRow::of(n, item, now, &back))
        .collect();
    let ward_choices = super::ward_choices(&access, &filters.ward);
    let mut people: Vec<(String, String)> = staff
        .into_iter()
        .filter(|m| m.status == chartsync_core::store::CredentialStatus::Active)
        .map(|m| {
            (
                m.user.clone(),
                format!("{} ({})", m.user, pages::words(m.role.token())),
            )
        })
        .collect();
    people.sort();
    let flash = signed.session.flash.clone();
    render(pages::Worklist {
        frame: signed.frame(&app),
        flash: flash.as_deref(),
        as_of: &pages::minute(now),
        ward: &filters.ward,
        ward_choices: &ward_choices,
        kinds: DeficiencyKind::ALL
            .iter()
            .map(|k| {
                (
                    k.token(),
                    pages::kind_label(*k).to_string(),
                    Some(*k) == kind,
                )
            })
            .collect(),
        responsible: &filters.responsible,
        overdue_only,
        back: &back,
        may_work: works_deficiencies(signed.session.role),
        people: &people,
        buckets: &buckets,
        rows: &rows,
        pager: &pager,
    })
}

/// The worklist a form came from (or a chart's completion page), else the plain worklist.
fn back_to(back: &str) -> String {
    if let Some(chart) = back.strip_prefix("/console/completion?id=") {
        if let Ok(id) = chart.parse() {
            return super::completion::page_of(id);
        }
    }
    match back.strip_prefix("/console/worklist?") {
        Some(q) => Filters::from_pairs(
            serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .url(),
        None => "/console/worklist".to_string(),
    }
}

/// A refusal from the shared work: the page that says why, and nothing changed.
fn refused(r: crate::records::Refusal) -> Response {
    refused_page(r.0, &r.1)
}

/// `POST /console/worklist/assign`: the checked rows (`d`, each a deficiency as JSON), to
/// `assignee` (empty: back to the rules' responsible).
pub(super) async fn assign(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    if let Err(refused) = signed.check(&headers, field("csrf")) {
        return refused;
    }
    let refs: Result<Vec<DeficiencyRef>, _> = fields
        .iter()
        .filter(|(k, _)| k == "d")
        .map(|(_, v)| serde_json::from_str(v))
        .collect();
    let Ok(refs) = refs else {
        return refused_page(StatusCode::BAD_REQUEST, "The form named a deficiency the console does not know. Reload the worklist and try again.");
    };
    if refs.is_empty() {
        app.console.flash(
            &signed.id,
            "Check at least one deficiency to assign.".into(),
        );
        return Redirect::to(&back_to(field("back"))).into_response();
    }
    let assignee = Some(field("assignee").trim().to_string()).filter(|a| !a.is_empty());
    let to = assignee.clone();
    match crate::records::work_deficiencies(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        refs,
        DeficiencyWork::Assign(assignee),
    )
    .await
    {
        Ok(done) => {
            let n = done.deficiencies;
            let what = if n == 1 { "deficiency" } else { "deficiencies" };
            let message = match to {
                Some(person) => format!("{n} {what} assigned to {person}."),
                None => format!("{n} {what} routed back to whoever the rules name."),
            };
            app.console.flash(&signed.id, message);
            Redirect::to(&back_to(field("back"))).into_response()
        }
        Err(r) => refused(r),
    }
}

/// The deficiency a link or form names, by its fields.
#[derive(Deserialize)]
pub(super) struct Named {
    chart: String,
    kind: String,
    section: String,
    #[serde(default)]
    record_id: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    back: String,
}

impl Named {
    fn reference(&self) -> Option<DeficiencyRef> {
        Some(DeficiencyRef {
            chart: self.chart.parse().ok()?,
            kind: DeficiencyKind::from_token(&self.kind).ok()?,
            section: self.section.clone(),
            record_id: self.record_id.clone(),
            detail: Some(self.detail.clone()).filter(|d| !d.is_empty()),
        })
    }
}

/// `GET /console/worklist/acknowledge?chart=…&kind=…&section=…`: the deficiency, and a form
/// for the reason. The URL names the chart by its id only.
pub(super) async fn acknowledge_page(
    State(app): State<AppState>,
    signed: Signed,
    Query(named): Query<Named>,
) -> Response {
    let Some(r) = named.reference() else {
        return refused_page(
            StatusCode::BAD_REQUEST,
            "That is not a deficiency the console knows.",
        );
    };
    if !works_deficiencies(signed.session.role) {
        return refused_page(
            StatusCode::FORBIDDEN,
            "Deficiencies are acknowledged by records technicians and supervisors.",
        );
    }
    let store = app.store.clone();
    let actor = signed.actor();
    let chart = r.chart;
    let found = tokio::task::spawn_blocking(move || {
        let summary = store.summary(chart)?;
        if summary.is_some() {
            store.record_audit(
                &actor,
                AuditAction::Read,
                Some(chart),
                Some("console acknowledge form"),
            )?;
        }
        Ok::<_, StoreError>(summary)
    })
    .await;
    let summary = match found {
        Ok(Ok(Some(s))) if signed.access().may_see_ward(&s.ward) => s,
        Ok(Ok(Some(_))) => {
            return refused_page(StatusCode::FORBIDDEN, "That chart is not on your wards.")
        }
        Ok(Ok(None)) => return refused_page(StatusCode::NOT_FOUND, "There is no such chart."),
        Ok(Err(e)) => return crate::api::internal(e),
        Err(e) => return crate::api::internal(e),
    };
    render(pages::Acknowledge {
        frame: signed.frame(&app),
        mrn: &summary.mrn,
        patient: &format!("{}, {}", summary.family_name, summary.given_names),
        ward: &summary.ward,
        kind_words: pages::kind_label(r.kind),
        chart: &named.chart,
        kind: &named.kind,
        section: &named.section,
        record_id: &named.record_id,
        detail: &named.detail,
        back: &back_to(&named.back),
    })
}

#[derive(Deserialize)]
pub(super) struct AcknowledgeForm {
    csrf: String,
    reason: String,
    #[serde(flatten)]
    named: Named,
}

/// `POST /console/worklist/acknowledge`: the records office accepts a late H&P as it stands.
pub(super) async fn acknowledge(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<AcknowledgeForm>,
) -> Response {
    if let Err(refused) = signed.check(&headers, &form.csrf) {
        return refused;
    }
    let Some(r) = form.named.reference() else {
        return refused_page(
            StatusCode::BAD_REQUEST,
            "That is not a deficiency the console knows.",
        );
    };
    match crate::records::work_deficiencies(
        app.store.clone(),
        &signed.access(),
        signed.actor(),
        vec![r],
        DeficiencyWork::Acknowledge(form.reason),
    )
    .await
    {
        Ok(_) => {
            app.console.flash(
                &signed.id,
                "The late history and physical is acknowledged.".into(),
            );
            Redirect::to(&back_to(&form.named.back)).into_response()
        }
        Err(r) => refused(r),
    }
}
