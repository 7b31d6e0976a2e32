//! What an accounting of disclosures (45 CFR 164.528) lists from one chart.

use super::error::ChartError;
use super::keys;
use super::read::Reader;
use super::types::{FormType, Timestamp};
use super::view::DisclosureView;
use super::Chart;

/// How far back an accounting reaches: six years before the request (164.528(a)(3)).
pub const ACCOUNTING_YEARS: i32 = 6;

impl Chart {
    /// The disclosures from this chart that an accounting made at `now` lists: those made in
    /// the six years before `now` (and any a device with a fast clock stamped later), less
    /// those 164.528(a)(1) exempts, whether by their purpose (treatment, payment, operations,
    /// to the patient, ...) or because the release was made under the patient's authorization
    /// (164.528(a)(1)(iv)): the disclosure names a completed `roi_authorization` form, completed
    /// before it. Oldest first.
    pub fn accountable_disclosures(
        &self,
        now: Timestamp,
    ) -> Result<Vec<DisclosureView>, ChartError> {
        let from = now.years_before(ACCOUNTING_YEARS);
        let r = Reader::new(&self.doc);
        let disclosures = r.log(keys::DISCLOSURES, |r, o, p| r.disclosure(o, p))?;
        let forms = r.records(keys::FORMS, |r, id, o| r.form(id, o))?;
        let authorized = |d: &DisclosureView| {
            d.authorization.as_deref().is_some_and(|id| {
                forms.iter().any(|f| {
                    f.id == id
                        && f.form_type == FormType::RoiAuthorization
                        && f.completed_at.is_some_and(|done| done <= d.at)
                })
            })
        };
        let mut out: Vec<DisclosureView> = disclosures
            .into_iter()
            .filter(|d| d.at >= from)
            .filter(|d| d.purpose.exempt_under().is_none() && !authorized(d))
            .collect();
        out.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        Ok(out)
    }
}
