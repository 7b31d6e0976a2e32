//! The embedded ICD-10-CM tables, one per code-set year (`years`), and the ICD-10-CM check.
//!
//! Each year's file (FY2026: `core/data/icd10cm/icd10cm.tsv.gz`) holds one line per category, subcategory and code,
//! sorted by code: `CODE<TAB>B<TAB>DESCRIPTION`, `B` being 1 for billable (a leaf of the
//! tabular list) and 0 otherwise. See `core/data/icd10cm/PROVENANCE.md`. It is decompressed
//! once, on first use, into one `String` plus a sorted index of offsets into it, both kept
//! for the life of the process in a `OnceLock`, so lookups hand out `&'static str`s.

use std::io::Read;
use std::sync::OnceLock;

use super::{malformed, CodeError, CodeSystem, NotBillableKind, ValidCode};

use super::years::{self, Year, YEARS};

/// The newest ICD-10-CM release embedded (older years ship beside it: `code_set_years`).
pub const ICD10CM_CODE_SET: &str = "ICD-10-CM FY2026 (April 1, 2026 update)";

/// The newest year's compressed table.
#[cfg(test)]
pub(super) static COMPRESSED: &[u8] = YEARS[YEARS.len() - 1].icd10cm;

/// One entry of the ICD-10-CM table: a category, subcategory or code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icd10CmEntry {
    /// The code in its dotted form (E11, E11.9, T36.0X1A).
    pub code: &'static str,
    /// The official description (tabular list), public domain.
    pub description: &'static str,
    /// Whether the code may be reported: it is a leaf of the tabular list.
    pub billable: bool,
}

/// Looks up an ICD-10-CM category, subcategory or code by its exact dotted, uppercase form
/// (`E11.9`, not `E119` or `e11.9`; use [`super::validate`] to learn why an input is
/// refused). `None` if it is not in [`ICD10CM_CODE_SET`] (or, never in a tested build, if
/// the embedded table cannot be read).
pub fn icd10cm_lookup(code: &str) -> Option<Icd10CmEntry> {
    let table = table().ok()?;
    table.find(code).map(|i| table.entry(i))
}

/// How many entries (categories, subcategories and codes, billable or not) the embedded
/// table holds; 0 if it cannot be read.
pub fn icd10cm_table_len() -> usize {
    table().map_or(0, Table::len)
}

/// The ICD-10-CM check for a date: in the table of the year in force on `on`, and billable.
pub(super) fn validate(code: &str, on: time::Date) -> Result<ValidCode, CodeError> {
    let year = years::year_for(on);
    let code_set = year.icd10cm_code_set;
    let table = table_of(year)?;
    if let Some(i) = table.find(code) {
        let entry = table.entry(i);
        if entry.billable {
            return Ok(ValidCode {
                system: CodeSystem::Icd10Cm,
                code: code.to_string(),
                display: Some(entry.description),
            });
        }
        return Err(CodeError::NotBillable {
            code: code.to_string(),
            kind: table.not_billable_kind(i),
        });
    }

    // Not in the table: tell a misspelt known code from a malformed or unknown one.
    if let Some(canonical) = canonical_form(code) {
        if canonical != code && table.find(&canonical).is_some() {
            let lowercase = code.bytes().any(|b| b.is_ascii_lowercase());
            let only_case_differs = code.to_ascii_uppercase() == canonical;
            let how = if only_case_differs {
                "ICD-10-CM codes are written in capitals"
            } else if lowercase {
                "ICD-10-CM codes are written in capitals, with a dot after the third character"
            } else if canonical.len() == 3 {
                "a three-character category has no dot"
            } else if !code.contains('.') {
                "ICD-10-CM codes have a dot after the third character"
            } else {
                "the dot goes after the third character"
            };
            return Err(malformed(
                CodeSystem::Icd10Cm,
                code,
                format!("write {code} as {canonical} ({how})"),
            ));
        }
    }
    if let Err(reason) = check_shape(code) {
        return Err(malformed(CodeSystem::Icd10Cm, code, reason));
    }
    Err(CodeError::UnknownCode {
        system: CodeSystem::Icd10Cm,
        code: code.to_string(),
        code_set,
    })
}

/// The dotted uppercase form of an ASCII letters-digits-dots input (`e119` -> `E11.9`,
/// `E1.19` -> `E11.9`), or `None` if it has other characters or is too long to be a code.
fn canonical_form(code: &str) -> Option<String> {
    if code.len() > 10 || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
        return None;
    }
    let bare: String = code
        .chars()
        .filter(|&c| c != '.')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if bare.len() < 3 || bare.len() > 7 {
        return None;
    }
    let mut out = bare[..3].to_string();
    if bare.len() > 3 {
        out.push('.');
        out.push_str(&bare[3..]);
    }
    Some(out)
}

/// The written shape of an ICD-10-CM code: a letter, two letters or digits, and
/// optionally a dot followed by one to four letters or digits. (The second character is
/// not always a digit: FY2026 has category QA0.)
pub(super) fn check_shape(code: &str) -> Result<(), String> {
    const SHAPE: &str = "an ICD-10-CM code is a capital letter, two digits or capital letters, \
                         then optionally a dot and one to four more (e.g. E11.9)";
    let bytes = code.as_bytes();
    let upper_alnum = |b: &u8| b.is_ascii_digit() || b.is_ascii_uppercase();
    if !code.is_ascii() {
        return Err(format!(
            "it has characters other than A-Z, 0-9 and a dot; {SHAPE}"
        ));
    }
    if bytes.len() < 3 || !bytes[0].is_ascii_uppercase() || !bytes[1..3].iter().all(upper_alnum) {
        return Err(SHAPE.to_string());
    }
    match &bytes[3..] {
        [] => Ok(()),
        [b'.', rest @ ..] if (1..=4).contains(&rest.len()) && rest.iter().all(upper_alnum) => {
            Ok(())
        }
        _ => Err(SHAPE.to_string()),
    }
}

/// The decompressed table: the text, and one row per line, sorted by code.
pub(super) struct Table {
    text: String,
    rows: Vec<Row>,
}

/// A line of the table as offsets into [`Table::text`]: the code starts at `start`, the
/// description at `start + code_len + 3` (after `<TAB>B<TAB>`).
#[derive(Clone, Copy)]
struct Row {
    start: u32,
    code_len: u8,
    billable: bool,
    desc_len: u16,
}

/// Each year's table, decompressed and indexed on first use (only the years in use are).
static TABLES: [OnceLock<Result<Table, String>>; YEARS.len()] =
    [const { OnceLock::new() }; YEARS.len()];

/// A year's table.
pub(super) fn table_of(year: &'static Year) -> Result<&'static Table, CodeError> {
    let i = YEARS
        .iter()
        .position(|y| std::ptr::eq(y, year))
        .unwrap_or(YEARS.len() - 1);
    TABLES[i]
        .get_or_init(|| decompress(year.icd10cm).and_then(Table::parse))
        .as_ref()
        .map_err(|reason| CodeError::TableUnavailable {
            reason: reason.clone(),
        })
}

/// The newest year's table.
pub(super) fn table() -> Result<&'static Table, CodeError> {
    table_of(&YEARS[YEARS.len() - 1])
}

/// Gunzips the embedded file into a string.
pub(super) fn decompress(gz: &[u8]) -> Result<String, String> {
    // The gzip trailer's last 4 bytes are the uncompressed size (mod 2^32): allocate once.
    let size_hint = gz
        .len()
        .checked_sub(4)
        .and_then(|at| gz.get(at..))
        .and_then(|b| b.try_into().ok())
        .map_or(0, |b: [u8; 4]| u32::from_le_bytes(b) as usize);
    let mut text = String::with_capacity(size_hint.min(64 << 20));
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .map_err(|e| format!("decompressing: {e}"))?;
    Ok(text)
}

impl Table {
    /// Indexes the text, checking every line: three fields, billable flag 0 or 1, the
    /// code's shape, a description, and codes strictly increasing (so sorted and unique).
    pub(super) fn parse(text: String) -> Result<Table, String> {
        if u32::try_from(text.len()).is_err() {
            return Err("the table is larger than 4 GiB".to_string());
        }
        if text.contains('\r') {
            return Err("the table has carriage returns".to_string());
        }
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("the last line has no newline".to_string());
        }
        let mut rows = Vec::with_capacity(text.len() / 60);
        let mut start = 0usize;
        let mut previous: Option<&str> = None;
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let bad = |what: &str| format!("line {line_no}: {what}");
            let mut fields = line.split('\t');
            let (Some(code), Some(flag), Some(desc), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(bad("expected 3 tab-separated fields"));
            };
            check_shape(code).map_err(|_| bad("malformed code"))?;
            let billable = match flag {
                "1" => true,
                "0" => false,
                _ => return Err(bad("billable flag is not 0 or 1")),
            };
            if desc.is_empty() {
                return Err(bad("empty description"));
            }
            if previous.is_some_and(|p| p >= code) {
                return Err(bad("codes are not sorted and unique"));
            }
            previous = Some(code);
            rows.push(Row {
                start: start as u32,
                code_len: code.len() as u8,
                billable,
                desc_len: u16::try_from(desc.len()).map_err(|_| bad("description too long"))?,
            });
            start += line.len() + 1;
        }
        Ok(Table { text, rows })
    }

    /// How many of its codes are billable.
    #[cfg(test)]
    pub(super) fn billable(&self) -> usize {
        self.rows.iter().filter(|r| r.billable).count()
    }

    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Every entry, in table (code) order.
    #[cfg(test)]
    pub(super) fn entries(&'static self) -> impl Iterator<Item = Icd10CmEntry> {
        (0..self.rows.len()).map(move |i| self.entry(i))
    }

    fn code(&self, row: Row) -> &str {
        let start = row.start as usize;
        &self.text[start..start + row.code_len as usize]
    }

    fn find(&self, code: &str) -> Option<usize> {
        self.rows
            .binary_search_by(|&row| self.code(row).cmp(code))
            .ok()
    }

    pub(super) fn entry(&'static self, i: usize) -> Icd10CmEntry {
        let row = self.rows[i];
        let desc_start = row.start as usize + row.code_len as usize + 3;
        Icd10CmEntry {
            code: self.code(row),
            description: &self.text[desc_start..desc_start + row.desc_len as usize],
            billable: row.billable,
        }
    }

    /// For a non-billable entry: a category, a subcategory, or a subcategory whose codes
    /// add just a 7th character (its first child, next in sorted order, is it plus one
    /// character, and seven characters long without the dot).
    fn not_billable_kind(&self, i: usize) -> NotBillableKind {
        let code = self.code(self.rows[i]);
        let needs_seventh = self.rows.get(i + 1).is_some_and(|&next| {
            let child = self.code(next);
            child.len() == 8 && code.len() == 7 && child.starts_with(code)
        });
        if needs_seventh {
            NotBillableKind::MissingSeventhCharacter
        } else if code.len() == 3 {
            NotBillableKind::Category
        } else {
            NotBillableKind::Subcategory
        }
    }
}
