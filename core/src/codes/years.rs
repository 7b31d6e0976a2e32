//! Code-set years. ICD-10-CM (and ICD-10-PCS) change every 1 October: fiscal year N runs from
//! 1 October of N − 1 to 30 September of N. A code is valid or not *for a date* — an
//! encounter's codes for the year in force on its discharge date, or today while the patient
//! is in — so the tables are kept per year, side by side ([`YEARS`]).
//!
//! Adding a year is a data file (`core/data/icd10cm/icd10cm-fyNNNN.tsv.gz`, written by
//! `scripts/icd10cm/generate.py`), its provenance (`core/data/icd10cm/PROVENANCE.md`), a line
//! in [`YEARS`] and a test of its size. ICD-10-PCS has the same slot per year: with no table
//! it is checked by syntax, as now.
//!
//! A date whose year has no table installed is checked against the newest earlier year
//! (after 1 October, until the new table ships), or the oldest installed for a date before
//! every table; the code set named in an error says which table was used. A year changes a
//! few hundred of some 74,000 codes: refusing every code until the new table is installed
//! would stop coding, while the nearest year errs on a handful. A server whose table disagrees
//! with a tablet's holds the change for review rather than refusing it (ADR 0007).

use time::{Date, Month};

/// One fiscal year's tables.
pub(super) struct Year {
    pub(super) fiscal_year: u16,
    /// The ICD-10-CM release, as errors and `/healthz` name it.
    pub(super) icd10cm_code_set: &'static str,
    pub(super) icd10cm: &'static [u8],
    /// The year's ICD-10-PCS table, once a current one is at hand (the one packaged table
    /// found, PyPI `gnuhealth-icd10pcs`, is the 2009 draft). No year has one yet, so
    /// ICD-10-PCS is checked by syntax; the check against a table comes with the first.
    #[allow(dead_code)]
    pub(super) icd10pcs: Option<&'static [u8]>,
}

/// The installed years, oldest first.
pub(super) static YEARS: [Year; 1] = [Year {
    fiscal_year: 2026,
    icd10cm_code_set: "ICD-10-CM FY2026 (April 1, 2026 update)",
    icd10cm: include_bytes!("../../data/icd10cm/icd10cm.tsv.gz"),
    icd10pcs: None,
}];

/// The fiscal year a date falls in: from 1 October, the next year's.
pub fn fiscal_year(date: Date) -> u16 {
    let year = date.year() as u16;
    if date.month() >= Month::October {
        year + 1
    } else {
        year
    }
}

/// The installed code-set years with their ICD-10-CM release, oldest first.
pub fn code_set_years() -> Vec<(u16, &'static str)> {
    YEARS
        .iter()
        .map(|y| (y.fiscal_year, y.icd10cm_code_set))
        .collect()
}

/// Which of `installed` (sorted, oldest first) serves fiscal year `wanted`: that year, else
/// the newest earlier one, else the oldest.
pub(super) fn choose(installed: &[u16], wanted: u16) -> usize {
    installed.iter().rposition(|&fy| fy <= wanted).unwrap_or(0)
}

/// The year serving `date`.
pub(super) fn year_for(date: Date) -> &'static Year {
    let installed: Vec<u16> = YEARS.iter().map(|y| y.fiscal_year).collect();
    &YEARS[choose(&installed, fiscal_year(date))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn the_year_turns_on_the_first_of_october() {
        assert_eq!(fiscal_year(date!(2026 - 09 - 30)), 2026);
        assert_eq!(fiscal_year(date!(2026 - 10 - 01)), 2027);
        assert_eq!(fiscal_year(date!(2027 - 01 - 15)), 2027);
        assert_eq!(fiscal_year(date!(2025 - 12 - 31)), 2026);
    }

    #[test]
    fn a_date_is_served_by_its_year_else_the_newest_earlier_else_the_oldest() {
        let installed = [2026, 2027];
        assert_eq!(choose(&installed, 2026), 0);
        assert_eq!(choose(&installed, 2027), 1);
        assert_eq!(choose(&installed, 2028), 1, "no FY2028 yet: FY2027");
        assert_eq!(
            choose(&installed, 2024),
            0,
            "before every table: the oldest"
        );
        assert_eq!(choose(&[2026], 2027), 0);
    }

    #[test]
    fn every_installed_year_has_a_readable_table_of_the_expected_size() {
        // Billable codes per year, from the CDC's release notes; a new year adds its line.
        let billable = [(2026u16, 74_719usize)];
        for year in &YEARS {
            let table = super::super::icd10cm::table_of(year).unwrap();
            let expected = billable.iter().find(|(fy, _)| *fy == year.fiscal_year);
            assert_eq!(
                Some(table.billable()),
                expected.map(|(_, n)| *n),
                "FY{}",
                year.fiscal_year
            );
        }
    }
}
