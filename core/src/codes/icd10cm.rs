//! The embedded ICD-10-CM tables, one per code-set year (`years`), and the ICD-10-CM check.
//!
//! Each year's file (FY2026: `core/data/icd10cm/icd10cm.tsv.gz`) holds one line per category, subcategory and code,
//! sorted by code: `CODE<TAB>B<TAB>DESCRIPTION`, `B` being 1 for billable (a leaf of the
//! tabular list) and 0 otherwise. See `core/data/icd10cm/PROVENANCE.md`. It is read once, on
//! first use, into the codes and a sorted index of them, kept for the life of the process in
//! a `OnceLock`, so lookups hand out `&'static str`s. The descriptions, nine tenths of the
//! file's 8 MB, are read from it again only when one is first asked for: checking a code
//! (what a server does with every change) needs none.

use std::io::BufRead;
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
    table.find(code).and_then(|i| table.entry(i).ok())
}

/// Billable ICD-10-CM codes found by words, as a coder looks one up: every word of `words`
/// begins a word of the code's description (case aside: `diab mell typ 2` finds E11.9), or,
/// for one word shaped like a code, the code begins with it (`e11`, `E11.6`). The most general
/// first (the shortest descriptions), then by code; at most `limit`. Nothing for no words.
/// Searches the newest year's table (the first search reads its descriptions, about 7 MB).
pub fn icd10cm_search(words: &str, limit: usize) -> Result<Vec<Icd10CmEntry>, CodeError> {
    let terms: Vec<String> = words
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '.')
        .map(|w| w.trim_matches('.').to_ascii_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    if terms.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let table = table()?;
    let code_prefix = match terms.as_slice() {
        [one] if looks_like_code(one) => Some(prefix_form(one)),
        _ => None,
    };
    let mut found: Vec<(usize, usize)> = Vec::new();
    for (i, row) in table.rows.iter().enumerate() {
        if !row.billable {
            continue;
        }
        let description = table.description(i)?;
        if let Some(prefix) = &code_prefix {
            if table.code(*row).starts_with(prefix.as_str()) {
                found.push((0, i));
                continue;
            }
        }
        let desc_words = description
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty());
        let all = terms.iter().all(|t| {
            desc_words.clone().any(|w| {
                w.len() >= t.len() && w.as_bytes()[..t.len()].eq_ignore_ascii_case(t.as_bytes())
            })
        });
        if all {
            found.push((1 + description.len(), i));
        }
    }
    found.sort_unstable();
    found
        .into_iter()
        .take(limit)
        .map(|(_, i)| table.entry(i))
        .collect()
}

/// A letter then a digit or letter: a code, or the start of one, rather than a word.
fn looks_like_code(term: &str) -> bool {
    let b = term.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1].is_ascii_digit()
}

/// A code's beginning as the table writes it: capitals, the dot after the third character.
fn prefix_form(term: &str) -> String {
    let bare: String = term
        .chars()
        .filter(|&c| c != '.')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    match bare.len() {
        0..=3 => bare,
        _ => format!("{}.{}", &bare[..3], &bare[3..]),
    }
}

/// How many entries (categories, subcategories and codes, billable or not) the embedded
/// table holds; 0 if it cannot be read.
pub fn icd10cm_table_len() -> usize {
    table().map_or(0, Table::len)
}

/// The ICD-10-CM check for a date: in the table of the year in force on `on`, and billable;
/// with the code's description as its display if `display`.
pub(super) fn validate(code: &str, on: time::Date, display: bool) -> Result<ValidCode, CodeError> {
    let year = years::year_for(on);
    let code_set = year.icd10cm_code_set;
    let table = table_of(year)?;
    if let Some(i) = table.find(code) {
        if table.rows[i].billable {
            return Ok(ValidCode {
                system: CodeSystem::Icd10Cm,
                code: code.to_string(),
                display: match display {
                    true => Some(table.description(i)?),
                    false => None,
                },
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

/// The table: its codes, one row per line, sorted by code; the descriptions when asked for.
pub(super) struct Table {
    /// Every code, one after another (each row says where its code is).
    codes: String,
    rows: Vec<Row>,
    /// The gzipped file the descriptions are read from, on first need.
    source: &'static [u8],
    descriptions: OnceLock<Result<Descriptions, String>>,
}

/// A line of the table: its code, `code_len` bytes of [`Table::codes`] from `start`.
#[derive(Clone, Copy)]
struct Row {
    start: u32,
    code_len: u8,
    billable: bool,
}

/// Every description, one after another: the `i`th ends at `ends[i]`.
struct Descriptions {
    text: String,
    ends: Vec<u32>,
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
        .get_or_init(|| Table::parse(gunzip(year.icd10cm), year.icd10cm))
        .as_ref()
        .map_err(unavailable)
}

#[allow(clippy::ptr_arg)] // `Result<_, String>::as_ref` gives `&String`
fn unavailable(reason: &String) -> CodeError {
    CodeError::TableUnavailable {
        reason: reason.to_string(),
    }
}

/// The newest year's table.
pub(super) fn table() -> Result<&'static Table, CodeError> {
    table_of(&YEARS[YEARS.len() - 1])
}

/// The embedded file's lines, decompressed as they are read.
fn gunzip(gz: &[u8]) -> impl BufRead + '_ {
    std::io::BufReader::new(flate2::read::GzDecoder::new(gz))
}

/// Gunzips the embedded file into a string.
#[cfg(test)]
pub(super) fn decompress(gz: &[u8]) -> Result<String, String> {
    use std::io::Read as _;
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .map_err(|e| format!("decompressing: {e}"))?;
    Ok(text)
}

/// Each line of `input` in turn, without its newline; an error for a line that does not end
/// in one or has a carriage return, or for input that does not decompress.
fn each_line(
    mut input: impl BufRead,
    mut line: impl FnMut(usize, &str) -> Result<(), String>,
) -> Result<(), String> {
    let mut buf = String::new();
    for n in 1.. {
        buf.clear();
        if input
            .read_line(&mut buf)
            .map_err(|e| format!("decompressing: {e}"))?
            == 0
        {
            break;
        }
        let Some(text) = buf.strip_suffix('\n') else {
            return Err("the last line has no newline".to_string());
        };
        if text.contains('\r') {
            return Err("the table has carriage returns".to_string());
        }
        line(n, text)?;
    }
    Ok(())
}

impl Table {
    /// Indexes the lines of `input`, checking every one: three fields, billable flag 0 or 1,
    /// the code's shape, a description, and codes strictly increasing (so sorted and
    /// unique). `source`: the gzipped file to read the descriptions from when asked.
    pub(super) fn parse(input: impl BufRead, source: &'static [u8]) -> Result<Table, String> {
        let mut codes = String::with_capacity(1 << 20);
        let mut rows: Vec<Row> = Vec::with_capacity(100_000);
        each_line(input, |line_no, line| {
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
            let previous = rows.last().map(|&r| row_code(&codes, r));
            if previous.is_some_and(|p| p >= code) {
                return Err(bad("codes are not sorted and unique"));
            }
            let start = u32::try_from(codes.len()).map_err(|_| bad("the table is too large"))?;
            codes.push_str(code);
            rows.push(Row {
                start,
                code_len: code.len() as u8,
                billable,
            });
            Ok(())
        })?;
        codes.shrink_to_fit();
        rows.shrink_to_fit();
        Ok(Table {
            codes,
            rows,
            source,
            descriptions: OnceLock::new(),
        })
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
        (0..self.rows.len()).map(move |i| self.entry(i).expect("the descriptions read"))
    }

    fn code(&self, row: Row) -> &str {
        row_code(&self.codes, row)
    }

    fn find(&self, code: &str) -> Option<usize> {
        self.rows
            .binary_search_by(|&row| self.code(row).cmp(code))
            .ok()
    }

    pub(super) fn entry(&'static self, i: usize) -> Result<Icd10CmEntry, CodeError> {
        let row = self.rows[i];
        Ok(Icd10CmEntry {
            code: self.code(row),
            description: self.description(i)?,
            billable: row.billable,
        })
    }

    /// The `i`th line's description (the first asked reads them all from the file again).
    fn description(&'static self, i: usize) -> Result<&'static str, CodeError> {
        let all = self
            .descriptions
            .get_or_init(|| {
                let mut all = Descriptions {
                    text: String::with_capacity(7 << 20),
                    ends: Vec::with_capacity(self.rows.len()),
                };
                each_line(gunzip(self.source), |n, line| {
                    let desc = line.splitn(3, '\t').nth(2);
                    let desc = desc.ok_or_else(|| format!("line {n}: no description"))?;
                    all.text.push_str(desc);
                    all.ends.push(all.text.len() as u32);
                    Ok(())
                })?;
                if all.ends.len() != self.rows.len() {
                    return Err("the descriptions do not match the codes".to_string());
                }
                all.text.shrink_to_fit();
                Ok(all)
            })
            .as_ref()
            .map_err(unavailable)?;
        let start = i.checked_sub(1).map_or(0, |p| all.ends[p] as usize);
        Ok(&all.text[start..all.ends[i] as usize])
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

fn row_code(codes: &str, row: Row) -> &str {
    let start = row.start as usize;
    &codes[start..start + row.code_len as usize]
}
