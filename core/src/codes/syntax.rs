//! Syntax checks for the systems without a code table here: ICD-10-PCS, CPT, HCPCS
//! Level II, LOINC (with its mod 10 check digit) and SNOMED CT (with its Verhoeff check
//! digit and partition identifier). Inputs reach these functions non-empty, without
//! surrounding whitespace and at most 64 bytes long.

use super::{malformed, CodeError, CodeSystem};

/// Runs `check`; if it fails on an input with lowercase letters that would pass in
/// capitals, says so instead (`0dtj4zz` -> write it as `0DTJ4ZZ`).
fn with_capitals_hint(
    system: CodeSystem,
    code: &str,
    check: fn(&str) -> Result<(), CodeError>,
) -> Result<(), CodeError> {
    let result = check(code);
    if result.is_err() && code.bytes().any(|b| b.is_ascii_lowercase()) {
        let upper = code.to_ascii_uppercase();
        if check(&upper).is_ok() {
            return Err(malformed(
                system,
                code,
                format!("write {code} as {upper} ({system} codes are written in capitals)"),
            ));
        }
    }
    result
}

/// Describes the first character of `code` that is not in `allowed`, for a reason.
fn first_bad_char(code: &str, allowed: impl Fn(char) -> bool) -> Option<String> {
    code.chars()
        .find(|&c| !allowed(c))
        .map(|c| format!("'{}'", c.escape_debug()))
}

// ---------------------------------------------------------------------------------------
// ICD-10-PCS
//
// ICD-10-PCS Official Guidelines for Coding and Reporting, Conventions A1-A3: a code has
// seven characters, each one of 34 values, "the numbers 0 through 9 and the alphabet
// (except I and O because they are easily confused with the numbers 1 and 0)", and "the
// valid values for an axis of classification can be added to as needed" (A3).
//
// The first character (the section) currently takes only 0-9, B, C, D, F, G, H and X
// (Medical and Surgical ... New Technology), but that list lives in the PCS tables, not
// in the guidelines, and A3 says every axis, the section included, may gain values. So
// the section is NOT restricted here: a code that is well formed by the guidelines
// passes, and checking it against the current tables is left to a PCS table (which this
// module does not ship).
// ---------------------------------------------------------------------------------------

/// ICD-10-PCS: exactly 7 characters, digits and capital letters other than I and O.
pub(super) fn icd10pcs(code: &str) -> Result<(), CodeError> {
    with_capitals_hint(CodeSystem::Icd10Pcs, code, icd10pcs_exact)
}

fn icd10pcs_exact(code: &str) -> Result<(), CodeError> {
    let bad = |reason: String| Err(malformed(CodeSystem::Icd10Pcs, code, reason));
    if let Some(c) = code.chars().find(|c| matches!(c, 'I' | 'O')) {
        let looks_like = if c == 'I' { '1' } else { '0' };
        return bad(format!(
            "it contains the letter {c}, which ICD-10-PCS never uses (it would be confused \
             with {looks_like})"
        ));
    }
    if let Some(c) = first_bad_char(code, |c| c.is_ascii_digit() || c.is_ascii_uppercase()) {
        return bad(format!(
            "it contains {c}; ICD-10-PCS codes are digits and capital letters (except I and O)"
        ));
    }
    if code.len() != 7 {
        return bad(format!(
            "it has {} characters; an ICD-10-PCS code has exactly 7",
            code.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// CPT (HCPCS Level I)
//
// Every CPT code has five characters: four digits and then
//   - a digit: Category I (00100-99499 and the 8xxxx MAAA codes),
//   - F: Category II performance measurement codes (0001F),
//   - T: Category III emerging technology codes (0042T),
//   - U: Proprietary Laboratory Analyses (PLA) codes (0001U), which the AMA publishes
//     as CPT codes,
//   - M: administrative codes for Multianalyte Assays with Algorithmic Analyses (0002M,
//     CPT Appendix O).
// ---------------------------------------------------------------------------------------

/// CPT: 5 digits, or 4 digits and F (Category II), T (Category III), U (PLA) or M (MAAA).
pub(super) fn cpt(code: &str) -> Result<(), CodeError> {
    with_capitals_hint(CodeSystem::Cpt, code, cpt_exact)
}

fn cpt_exact(code: &str) -> Result<(), CodeError> {
    const SHAPE: &str = "a CPT code is five digits, or four digits and F (Category II), \
                         T (Category III), U (PLA) or M (MAAA)";
    let bad = |reason: String| Err(malformed(CodeSystem::Cpt, code, reason));
    let bytes = code.as_bytes();
    if !code.is_ascii() || bytes.len() != 5 {
        return bad(format!(
            "it has {} characters; {SHAPE}",
            code.chars().count()
        ));
    }
    if !bytes[..4].iter().all(u8::is_ascii_digit) {
        if bytes[0].is_ascii_uppercase() && bytes[1..].iter().all(u8::is_ascii_digit) {
            return bad(format!(
                "it starts with a letter, like a HCPCS Level II code; {SHAPE}"
            ));
        }
        return bad(SHAPE.to_string());
    }
    match bytes[4] {
        b'0'..=b'9' | b'F' | b'T' | b'U' | b'M' => Ok(()),
        last => bad(format!(
            "it ends in '{}'; {SHAPE}",
            (last as char).escape_debug()
        )),
    }
}

// ---------------------------------------------------------------------------------------
// HCPCS Level II
//
// A letter and four digits. CMS's HCPCS Level II code set uses these leading letters
// (HL7 THO: "Level II alphanumeric procedure and modifier codes comprise the A to V
// range"):
//   A transportation, medical and surgical supplies, miscellaneous and experimental
//   B enteral and parenteral therapy          C outpatient PPS (temporary)
//   E durable medical equipment               G procedures / professional services (temp.)
//   H behavioural health, alcohol and drug    J drugs other than oral, chemotherapy
//   K DME MAC temporary codes                 L orthotics and prosthetics
//   M medical services (incl. quality/MVP)    P pathology and laboratory
//   Q temporary codes                         R diagnostic radiology
//   S private-payer temporary national codes  T state Medicaid agency codes
//   U coronavirus laboratory tests            V vision, hearing and speech-language
// Within A-V, F, I, N and O are not used. D codes are the ADA's CDT dental codes:
// formally part of Level II, but copyrighted by the ADA, not in CMS's HCPCS file, and
// a different terminology (with its own FHIR URI) from the one this system names, so
// they are refused here with a reason that says so.
// ---------------------------------------------------------------------------------------

const HCPCS_LETTERS: &str = "ABCEGHJKLMPQRSTUV";

/// HCPCS Level II: one of [`HCPCS_LETTERS`] and four digits.
pub(super) fn hcpcs(code: &str) -> Result<(), CodeError> {
    with_capitals_hint(CodeSystem::Hcpcs, code, hcpcs_exact)
}

fn hcpcs_exact(code: &str) -> Result<(), CodeError> {
    const SHAPE: &str =
        "a HCPCS Level II code is one letter (A-C, E, G, H, J-M, P-V) and four digits";
    let bad = |reason: String| Err(malformed(CodeSystem::Hcpcs, code, reason));
    let bytes = code.as_bytes();
    if !code.is_ascii() || bytes.len() != 5 {
        return bad(format!(
            "it has {} characters; {SHAPE}",
            code.chars().count()
        ));
    }
    if !bytes[1..].iter().all(u8::is_ascii_digit) {
        return bad(SHAPE.to_string());
    }
    match bytes[0] {
        b'D' => {
            bad("D codes are CDT dental codes (ADA), not HCPCS Level II codes here".to_string())
        }
        b'0'..=b'9' => bad(format!(
            "it starts with a digit, like a CPT (HCPCS Level I) code; {SHAPE}"
        )),
        first if HCPCS_LETTERS.as_bytes().contains(&first) => Ok(()),
        first => bad(format!(
            "no HCPCS Level II code starts with '{}'; {SHAPE}",
            (first as char).escape_debug()
        )),
    }
}

// ---------------------------------------------------------------------------------------
// LOINC
//
// LOINC codes are a number, a hyphen and one mod 10 check digit (LOINC Users' Guide,
// appendix "Calculating Mod 10 Check Digits"): number the digits from the right; take the
// odd-position digits (1st, 3rd, ...) as a number and double it; put the even-position
// digits in front; add up all the digits of that; the check digit is what brings the sum
// up to the next multiple of 10 (0 if it already is one). Doubling the odd-position
// digits as one number and summing its digits gives the same sum as doubling each digit
// and summing the digits of each product (a carry, and its -9 on the digit sum, comes
// exactly from each digit >= 5, whatever its neighbours), so this is the Luhn sum, which
// is how it is computed below.
//
// LOINC lists 14 codes whose published check digit is wrong (5895-7, 11491-6, ...); all
// are deprecated, so they are refused like any other check-digit failure.
// LOINC numbers have no leading zero; up to 8 digits are accepted (current ones have at
// most 6). LOINC Part (LP...) and Answer (LA...) identifiers are not observation codes.
// ---------------------------------------------------------------------------------------

/// LOINC: `NNNNN-C`, with C the mod 10 check digit of NNNNN.
pub(super) fn loinc(code: &str) -> Result<(), CodeError> {
    let bad = |reason: String| Err(malformed(CodeSystem::Loinc, code, reason));
    const SHAPE: &str = "a LOINC code is digits, a hyphen and one check digit (e.g. 2345-7)";
    let upper = code.to_ascii_uppercase();
    if upper.starts_with("LP") || upper.starts_with("LA") {
        return bad(
            "LOINC Part (LP) and Answer (LA) identifiers are not LOINC codes for an observation"
                .to_string(),
        );
    }
    let Some((number, check)) = code.split_once('-') else {
        if !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) {
            return bad(format!("it has no hyphen and check digit; {SHAPE}"));
        }
        return bad(SHAPE.to_string());
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return bad(SHAPE.to_string());
    }
    let &[check] = check.as_bytes() else {
        return bad(format!(
            "it has {} characters after the hyphen; {SHAPE}",
            check.chars().count()
        ));
    };
    if !check.is_ascii_digit() {
        return bad(SHAPE.to_string());
    }
    if number.starts_with('0') {
        return bad("it starts with 0; LOINC numbers have no leading zeros".to_string());
    }
    if number.len() > 8 {
        return bad(format!(
            "its number has {} digits; LOINC numbers have at most 8",
            number.len()
        ));
    }
    let expected = loinc_check_digit(number);
    if check != expected {
        return Err(CodeError::CheckDigit {
            system: CodeSystem::Loinc,
            code: code.to_string(),
            expected: expected as char,
        });
    }
    Ok(())
}

/// The LOINC mod 10 check digit (as an ASCII digit) of a string of ASCII digits.
pub(super) fn loinc_check_digit(number: &str) -> u8 {
    let sum: u32 = number
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                // 1st, 3rd, ... from the right: doubled, digits summed.
                let doubled = 2 * d;
                doubled / 10 + doubled % 10
            } else {
                d
            }
        })
        .sum();
    b'0' + ((10 - sum % 10) % 10) as u8
}

// ---------------------------------------------------------------------------------------
// SNOMED CT
//
// SNOMED CT identifiers (SCTIDs; SNOMED CT Release File Specification, "SNOMED CT
// Identifiers"): 6 to 18 digits with no leading zero. The last digit is a Verhoeff check
// digit; the two before it are the partition identifier: 00 concept, 01 description, 02
// relationship (short format, International Release); 10 concept, 11 description, 12
// relationship, 16 postcoordinated expression (long format, with a 7-digit namespace
// identifier before the partition); every other value is reserved. A chart codes with
// concepts, so only 00 and 10 pass.
// ---------------------------------------------------------------------------------------

/// SNOMED CT: a concept identifier with a valid Verhoeff check digit.
pub(super) fn snomed(code: &str) -> Result<(), CodeError> {
    let bad = |reason: String| Err(malformed(CodeSystem::Snomed, code, reason));
    if let Some(c) = first_bad_char(code, |c| c.is_ascii_digit()) {
        return bad(format!(
            "it contains {c}; SNOMED CT identifiers are digits only"
        ));
    }
    if !(6..=18).contains(&code.len()) {
        return bad(format!(
            "it has {} digits; SNOMED CT identifiers have 6 to 18",
            code.len()
        ));
    }
    if code.starts_with('0') {
        return bad("it starts with 0; SNOMED CT identifiers have no leading zeros".to_string());
    }
    let (body, check) = code.split_at(code.len() - 1);
    let expected = verhoeff_check_digit(body);
    if check.as_bytes()[0] != expected {
        return Err(CodeError::CheckDigit {
            system: CodeSystem::Snomed,
            code: code.to_string(),
            expected: expected as char,
        });
    }
    let partition = &body[body.len() - 2..];
    match partition {
        "00" => Ok(()),
        "10" if code.len() >= 11 => Ok(()),
        "10" => bad(format!(
            "its partition {partition} is that of an extension identifier, which has a \
             7-digit namespace before it and so at least 11 digits"
        )),
        "01" | "02" | "11" | "12" | "16" => Err(CodeError::NotAConcept {
            code: code.to_string(),
            partition: partition.to_string(),
        }),
        _ => bad(format!(
            "its partition identifier {partition} (2nd and 3rd digits from the right) is \
             reserved; concept identifiers have 00 or 10"
        )),
    }
}

/// Verhoeff multiplication table (the dihedral group D5).
const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

/// Verhoeff permutation table: row `i` is applied to the digit at position `i mod 8`.
const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// Verhoeff inverse table.
const VERHOEFF_INV: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];

/// The Verhoeff check digit (as an ASCII digit) to append to a string of ASCII digits.
pub(super) fn verhoeff_check_digit(body: &str) -> u8 {
    let c = body.bytes().rev().enumerate().fold(0u8, |c, (i, b)| {
        let digit = usize::from(b - b'0');
        // Position 0 is the (missing) check digit, so the body starts at position 1.
        VERHOEFF_D[usize::from(c)][usize::from(VERHOEFF_P[(i + 1) % 8][digit])]
    });
    b'0' + VERHOEFF_INV[usize::from(c)]
}
