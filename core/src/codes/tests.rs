use super::icd10cm::{self, COMPRESSED};
use super::syntax::{loinc_check_digit, verhoeff_check_digit};
use super::*;

use CodeSystem::{Cpt, Hcpcs, Icd10Cm, Icd10Pcs, Loinc, Snomed};

/// Validates a code that must pass, with a readable failure.
fn accepted(system: CodeSystem, code: &str) -> ValidCode {
    match validate(system, code) {
        Ok(valid) => {
            assert_eq!(valid.system, system);
            assert_eq!(valid.code, code);
            valid
        }
        Err(e) => panic!("{system} {code:?} should be accepted, was refused: {e}"),
    }
}

/// Validates a code that must be refused, returning the error.
fn refused(system: CodeSystem, code: &str) -> CodeError {
    match validate(system, code) {
        Ok(valid) => panic!("{system} {code:?} should be refused, was accepted: {valid:?}"),
        Err(e) => e,
    }
}

fn assert_malformed(system: CodeSystem, code: &str, reason_mentions: &str) {
    match refused(system, code) {
        CodeError::Malformed {
            system: s, reason, ..
        } => {
            assert_eq!(s, system);
            assert!(
                reason.contains(reason_mentions),
                "{system} {code:?}: reason {reason:?} should mention {reason_mentions:?}"
            );
        }
        other => panic!("{system} {code:?}: expected Malformed, got {other:?}"),
    }
}

fn assert_check_digit(system: CodeSystem, code: &str, expected_digit: char) {
    assert_eq!(
        refused(system, code),
        CodeError::CheckDigit {
            system,
            code: code.to_string(),
            expected: expected_digit
        }
    );
}

// ---- the code systems and their tokens -------------------------------------------------

#[test]
fn every_code_system_round_trips_through_its_chart_token() {
    for system in CodeSystem::ALL {
        assert_eq!(CodeSystem::from_token(system.token()), Ok(system));
    }
    let tokens: Vec<_> = CodeSystem::ALL.iter().map(|s| s.token()).collect();
    assert_eq!(
        tokens,
        ["icd10cm", "icd10pcs", "cpt", "hcpcs", "loinc", "snomed"]
    );
}

#[test]
fn an_unknown_code_system_token_is_refused_by_name() {
    for token in ["", "ICD10CM", "icd-10-cm", "icd10", "snomed-ct", " loinc"] {
        assert_eq!(
            CodeSystem::from_token(token),
            Err(CodeError::UnknownSystem {
                token: token.to_string()
            })
        );
    }
    let message = CodeSystem::from_token("rxnorm").unwrap_err().to_string();
    assert!(
        message.contains("rxnorm") && message.contains("icd10cm"),
        "{message}"
    );
}

#[test]
fn each_code_system_has_its_hl7_system_uri_and_name() {
    let expected = [
        (Icd10Cm, "http://hl7.org/fhir/sid/icd-10-cm", "ICD-10-CM"),
        (
            Icd10Pcs,
            "http://www.cms.gov/Medicare/Coding/ICD10",
            "ICD-10-PCS",
        ),
        (Cpt, "http://www.ama-assn.org/go/cpt", "CPT"),
        (
            Hcpcs,
            "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
            "HCPCS Level II",
        ),
        (Loinc, "http://loinc.org", "LOINC"),
        (Snomed, "http://snomed.info/sct", "SNOMED CT"),
    ];
    for (system, uri, name) in expected {
        assert_eq!(system.fhir_uri(), uri);
        assert_eq!(system.name(), name);
        assert_eq!(system.to_string(), name);
    }
}

// ---- ICD-10-CM diagnoses -----------------------------------------------------------------

#[test]
fn real_billable_diagnoses_are_accepted_with_their_official_description() {
    let cases = [
        ("E11.9", "Type 2 diabetes mellitus without complications"),
        (
            "T36.0X1A",
            "Poisoning by penicillins, accidental (unintentional), initial encounter",
        ),
        (
            "S72.001A",
            "Fracture of unspecified part of neck of right femur, initial encounter for closed fracture",
        ),
        ("U07.1", "COVID-19"),
        ("I10", "Essential (primary) hypertension"),
        ("J45.909", "Unspecified asthma, uncomplicated"),
        ("Z23", "Encounter for immunization"),
        ("I21.4", "Non-ST elevation (NSTEMI) myocardial infarction"),
        ("O80", "Encounter for full-term uncomplicated delivery"),
        ("R40.2410", "Glasgow coma scale score 13-15, unspecified time"),
    ];
    for (code, description) in cases {
        let valid = accepted(Icd10Cm, code);
        assert_eq!(valid.display, Some(description), "{code}");
    }
}

#[test]
fn a_diagnosis_category_is_not_billable() {
    let err = refused(Icd10Cm, "E11");
    assert_eq!(
        err,
        CodeError::NotBillable {
            code: "E11".into(),
            kind: NotBillableKind::Category
        }
    );
    assert!(err
        .to_string()
        .starts_with("E11 is a category, not a billable code"));
}

#[test]
fn a_diagnosis_subcategory_asks_for_a_more_specific_code() {
    let err = refused(Icd10Cm, "E11.6");
    assert_eq!(
        err,
        CodeError::NotBillable {
            code: "E11.6".into(),
            kind: NotBillableKind::Subcategory
        }
    );
    assert_eq!(
        err.to_string(),
        "E11.6 is a subcategory, not a billable code: use a more specific code"
    );
}

#[test]
fn an_injury_code_without_its_seventh_character_is_not_billable() {
    // In the table, but only as the parent of T36.0X1A/D/S and S72.001A/B/D/...
    for code in ["T36.0X1", "S72.001"] {
        let err = refused(Icd10Cm, code);
        assert_eq!(
            err,
            CodeError::NotBillable {
                code: code.into(),
                kind: NotBillableKind::MissingSeventhCharacter
            }
        );
        assert!(err.to_string().contains("needs a 7th character"), "{err}");
        assert!(!icd10cm_lookup(code).unwrap().billable);
    }
}

#[test]
fn a_diagnosis_written_without_its_dot_is_refused_with_the_dotted_form() {
    let err = refused(Icd10Cm, "E119");
    assert!(
        matches!(&err, CodeError::Malformed { system: Icd10Cm, code, reason }
            if code == "E119" && reason.contains("write E119 as E11.9")),
        "{err:?}"
    );
    assert_malformed(Icd10Cm, "T360X1A", "write T360X1A as T36.0X1A");
    assert_malformed(Icd10Cm, "E1.19", "write E1.19 as E11.9");
    assert_malformed(Icd10Cm, "E11.", "write E11. as E11");
}

#[test]
fn a_diagnosis_in_lowercase_is_refused_with_the_capitalised_form() {
    assert_malformed(Icd10Cm, "e11.9", "write e11.9 as E11.9");
    assert_malformed(Icd10Cm, "e11.9", "capitals");
    assert_malformed(Icd10Cm, "e119", "write e119 as E11.9");
    assert_malformed(Icd10Cm, "t36.0x1a", "write t36.0x1a as T36.0X1A");
}

#[test]
fn diagnosis_codes_that_do_not_exist_are_unknown_in_the_fy2026_code_set() {
    // E11.99 and U07.9 look like codes but are not in the tabular list; E11.90 extends a
    // billable leaf; QA0.9 is a made-up child of a new FY2026 category.
    for code in ["E11.99", "U07.9", "E11.90", "QA0.9", "Z99.999", "A00.2"] {
        assert!(icd10cm_lookup(code).is_none(), "{code}");
        let err = refused(Icd10Cm, code);
        assert_eq!(
            err,
            CodeError::UnknownCode {
                system: Icd10Cm,
                code: code.into(),
                code_set: ICD10CM_CODE_SET
            }
        );
        assert!(err.to_string().contains("FY2026"), "{err}");
    }
}

#[test]
fn diagnosis_inputs_that_are_not_shaped_like_a_code_are_malformed() {
    for code in [
        "E",
        "E1",
        "11.9",
        "E11-9",
        "E11.9.1",
        "E11.12345",
        "E11..9",
        "E 11.9",
        "E11.9*",
        "ICD-10",
        "E11.9Á",
        "Е11.9", /* Cyrillic Е */
    ] {
        match refused(Icd10Cm, code) {
            CodeError::Malformed { system, .. } => assert_eq!(system, Icd10Cm, "{code}"),
            other => panic!("{code:?}: expected Malformed, got {other:?}"),
        }
    }
}

#[test]
fn looking_up_a_diagnosis_gives_its_description_and_billability() {
    let e11 = icd10cm_lookup("E11").unwrap();
    assert_eq!(e11.code, "E11");
    assert_eq!(e11.description, "Type 2 diabetes mellitus");
    assert!(!e11.billable);
    let e119 = icd10cm_lookup("E11.9").unwrap();
    assert!(e119.billable);
    // Lookups are exact: the coding UI validates input to learn why it is refused.
    assert_eq!(icd10cm_lookup("E119"), None);
    assert_eq!(icd10cm_lookup("e11.9"), None);
    assert_eq!(icd10cm_lookup(""), None);
    // Chapters and blocks are not in the table.
    assert_eq!(icd10cm_lookup("A00-A09"), None);
    assert_eq!(icd10cm_lookup("4"), None);
    // A few descriptions have non-ASCII letters; the table is UTF-8.
    assert_eq!(
        icd10cm_lookup("C84.10").unwrap().description,
        "Sézary disease, unspecified site"
    );
}

#[test]
fn the_fy2026_diagnosis_table_has_the_expected_size() {
    // simple-icd-10-cm 1.5.0 (CDC April 1, 2026 files): 74,719 billable codes, which is
    // FY2025's 74,260 + 487 new - 28 deleted for FY2026 (the April 2026 update added no
    // ICD-10-CM codes); 98,186 entries with categories and subcategories.
    assert!(ICD10CM_CODE_SET.contains("FY2026"), "{ICD10CM_CODE_SET}");
    assert!(ICD10CM_CODE_SET.contains("2026"));
    let table = icd10cm::table().expect("the embedded table loads");
    let billable = table.entries().filter(|e| e.billable).count();
    let categories = table.entries().filter(|e| e.code.len() == 3).count();
    assert_eq!(billable, 74_719);
    assert_eq!(icd10cm_table_len(), 98_186);
    assert_eq!(table.len(), 98_186);
    assert_eq!(categories, 1_918);
}

#[test]
fn the_embedded_diagnosis_table_decompresses_and_every_line_parses() {
    let text = icd10cm::decompress(COMPRESSED).expect("the embedded file gunzips");
    assert!(text.ends_with('\n'));
    let mut previous: Option<&str> = None;
    let mut lines = 0;
    for line in text.split_terminator('\n') {
        lines += 1;
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 3, "line {lines}: {line:?}");
        let (code, flag, description) = (fields[0], fields[1], fields[2]);
        assert!(flag == "0" || flag == "1", "line {lines}: flag {flag:?}");
        assert!(!description.is_empty(), "line {lines}");
        assert_eq!(description.trim(), description, "line {lines}");
        assert!(icd10cm::check_shape(code).is_ok(), "line {lines}: {code:?}");
        if let Some(previous) = previous {
            assert!(previous < code, "line {lines}: {previous} then {code}");
        }
        previous = Some(code);
    }
    assert_eq!(lines, 98_186);
    // The parser used at run time agrees.
    let table = icd10cm::Table::parse(text.as_bytes(), COMPRESSED).expect("the table parses");
    assert_eq!(table.len(), lines);
}

#[test]
fn the_diagnosis_table_parser_refuses_damaged_tables() {
    let bad = [
        "E11\t0\n",                             // two fields
        "E11\t0\tType 2\textra\n",              // four fields
        "E11\t2\tType 2 diabetes mellitus\n",   // flag
        "E11\t0\t\n",                           // empty description
        "e11\t0\tType 2 diabetes mellitus\n",   // code shape
        "E11.9\t1\tb\nE11\t0\ta\n",             // order
        "E11\t0\ta\nE11\t0\ta\n",               // duplicate
        "E11\t0\tType 2 diabetes mellitus",     // no final newline
        "E11\t0\tType 2 diabetes mellitus\r\n", // carriage return
    ];
    for text in bad {
        assert!(
            icd10cm::Table::parse(text.as_bytes(), COMPRESSED).is_err(),
            "{text:?}"
        );
    }
    assert!(icd10cm::decompress(b"not gzip").is_err());
    assert!(icd10cm::decompress(&COMPRESSED[..COMPRESSED.len() / 2]).is_err());
}

#[test]
fn every_code_in_the_diagnosis_table_validates_according_to_its_billable_flag() {
    let table = icd10cm::table().unwrap();
    for entry in table.entries() {
        match validate(Icd10Cm, entry.code) {
            Ok(valid) => {
                assert!(entry.billable, "{} accepted but not billable", entry.code);
                assert_eq!(valid.display, Some(entry.description));
            }
            Err(CodeError::NotBillable { code, .. }) => {
                assert!(!entry.billable, "{} refused but billable", entry.code);
                assert_eq!(code, entry.code);
            }
            Err(other) => panic!("{}: {other}", entry.code),
        }
    }
}

// ---- ICD-10-PCS procedures -----------------------------------------------------------------

#[test]
fn real_inpatient_procedure_codes_are_accepted() {
    // Resection of gallbladder, laparoscopic; CABG; vaginal delivery; COVID-19 vaccine
    // (new technology section X); MRI brain; radiation; physical therapy.
    for code in [
        "0DTJ4ZZ", "0FT44ZZ", "021009W", "10E0XZZ", "XW013S6", "B030ZZZ", "D7Y0FZZ", "F07L0ZZ",
        "30233N1", "5A1955Z",
    ] {
        assert_eq!(accepted(Icd10Pcs, code).display, None);
    }
}

#[test]
fn procedure_codes_of_the_wrong_length_are_refused() {
    assert_malformed(Icd10Pcs, "0DTJ4Z", "6 characters");
    assert_malformed(Icd10Pcs, "0DTJ4ZZZ", "8 characters");
    assert_malformed(Icd10Pcs, "0", "exactly 7");
}

#[test]
fn procedure_codes_never_use_the_letters_i_and_o() {
    assert_malformed(Icd10Pcs, "0DTJ4ZI", "letter I");
    assert_malformed(Icd10Pcs, "0DTO4ZZ", "letter O");
}

#[test]
fn procedure_codes_in_lowercase_or_with_punctuation_are_refused() {
    assert_malformed(Icd10Pcs, "0dtj4zz", "write 0dtj4zz as 0DTJ4ZZ");
    assert_malformed(Icd10Pcs, "0DT.J4ZZ", "'.'");
    assert_malformed(Icd10Pcs, "0DTJ4Z-", "'-'");
}

// ---- CPT ------------------------------------------------------------------------------------

#[test]
fn real_cpt_codes_of_every_category_are_accepted_without_text() {
    // Office visit, CBC, Category II (0001F), Category III (0042T), PLA (0001U), MAAA (0002M).
    for code in [
        "99213", "85025", "00100", "0001F", "0042T", "0001U", "0002M",
    ] {
        assert_eq!(accepted(Cpt, code).display, None);
    }
}

#[test]
fn cpt_near_misses_are_refused() {
    assert_malformed(Cpt, "9921", "4 characters");
    assert_malformed(Cpt, "992134", "6 characters");
    assert_malformed(Cpt, "0001G", "ends in 'G'");
    assert_malformed(Cpt, "0001f", "write 0001f as 0001F");
    assert_malformed(Cpt, "J1100", "HCPCS Level II");
    assert_malformed(Cpt, "99-13", "five digits");
    assert_malformed(Cpt, "９９２１３", "five digits"); // full-width digits
}

// ---- HCPCS Level II -----------------------------------------------------------------------

#[test]
fn real_hcpcs_level_ii_codes_are_accepted() {
    // Dexamethasone injection, ambulance, flu vaccine admin, wheelchair, ...
    for code in [
        "J1100", "A0425", "G0008", "E1130", "L3908", "Q4081", "S9083", "T1015", "U0003", "V2020",
    ] {
        assert_eq!(accepted(Hcpcs, code).display, None);
    }
}

#[test]
fn hcpcs_near_misses_are_refused() {
    assert_malformed(Hcpcs, "J110", "4 characters");
    assert_malformed(Hcpcs, "J11000", "6 characters");
    assert_malformed(Hcpcs, "j1100", "write j1100 as J1100");
    assert_malformed(Hcpcs, "D0120", "CDT");
    assert_malformed(Hcpcs, "99213", "CPT");
    for letter in ["F", "I", "N", "O", "W", "X", "Y", "Z"] {
        assert_malformed(
            Hcpcs,
            &format!("{letter}1100"),
            "no HCPCS Level II code starts with",
        );
    }
    assert_malformed(Hcpcs, "JJ100", "one letter");
}

// ---- LOINC ----------------------------------------------------------------------------------

#[test]
fn real_loinc_codes_pass_the_mod_10_check() {
    // Glucose, hemoglobin, HbA1c, systolic BP, heart rate, creatinine, body weight, body
    // temperature, SARS-CoV-2 RNA, potassium, sodium, ...
    for code in [
        "2345-7", "718-7", "4548-4", "8480-6", "8867-4", "2160-0", "29463-7", "8310-5", "94500-6",
        "2823-3", "2951-2", "1742-6", "33914-3", "789-8", "777-3",
    ] {
        assert_eq!(accepted(Loinc, code).display, None);
    }
}

#[test]
fn the_loinc_check_digit_follows_loincs_worked_example() {
    // LOINC Users' Guide: the check digit of 12345 is 5.
    assert_eq!(loinc_check_digit("12345"), b'5');
    assert_eq!(loinc_check_digit("2160"), b'0');
}

#[test]
fn loinc_near_misses_are_refused() {
    assert_check_digit(Loinc, "2345-6", '7');
    assert_check_digit(Loinc, "718-1", '7');
    // One of the 14 deprecated codes LOINC lists with a wrong check digit.
    assert_check_digit(Loinc, "5895-7", '8');
    assert_malformed(Loinc, "2345", "no hyphen");
    assert_malformed(Loinc, "23457", "no hyphen");
    assert_malformed(Loinc, "2345-", "0 characters after the hyphen");
    assert_malformed(Loinc, "2345-77", "2 characters after the hyphen");
    assert_malformed(Loinc, "0718-7", "leading zeros");
    assert_malformed(Loinc, "-7", "digits, a hyphen");
    assert_malformed(Loinc, "2345-X", "digits, a hyphen");
    assert_malformed(Loinc, "23a5-7", "digits, a hyphen");
    assert_malformed(Loinc, "2345 7", "digits, a hyphen");
    assert_malformed(Loinc, "LP14082-9", "Part");
    assert_malformed(Loinc, "LA6576-8", "Answer");
    assert_malformed(Loinc, "123456789-0", "at most 8");
}

// ---- SNOMED CT ------------------------------------------------------------------------------

#[test]
fn real_snomed_concepts_pass_the_verhoeff_check() {
    // Myocardial infarction, hypertension, diabetes mellitus, and more; 428041000124106 is
    // a US-extension (long-format, partition 10) concept.
    for code in [
        "22298006",
        "38341003",
        "73211009",
        "404684003",
        "195967001",
        "138875005",
        "71388002",
        "900000000000207008",
        "428041000124106",
    ] {
        assert_eq!(accepted(Snomed, code).display, None);
    }
}

#[test]
fn the_verhoeff_check_digit_matches_real_concept_ids() {
    assert_eq!(verhoeff_check_digit("2229800"), b'6');
    assert_eq!(verhoeff_check_digit("3834100"), b'3');
    assert_eq!(verhoeff_check_digit("40468400"), b'3');
}

#[test]
fn snomed_ids_with_a_wrong_check_digit_are_refused() {
    assert_check_digit(Snomed, "22298007", '6');
    assert_check_digit(Snomed, "38341004", '3');
    // Two neighbouring digits swapped: Verhoeff catches transpositions.
    assert_check_digit(Snomed, "22928006", '5');
}

#[test]
fn snomed_description_and_relationship_ids_are_not_concepts() {
    // Verhoeff-valid ids in the description (01, 11) and relationship (02) partitions.
    for (code, partition, kind) in [
        ("123456017", "01", "description"),
        ("751689013", "01", "description"),
        ("123456029", "02", "relationship"),
        ("428041000124110", "11", "description"),
    ] {
        let err = refused(Snomed, code);
        assert_eq!(
            err,
            CodeError::NotAConcept {
                code: code.into(),
                partition: partition.into()
            }
        );
        assert!(err.to_string().contains(kind), "{err}");
    }
}

#[test]
fn snomed_near_misses_are_refused() {
    assert_malformed(Snomed, "022298006", "leading zeros");
    assert_malformed(Snomed, "12345", "5 digits");
    assert_malformed(Snomed, "1234567890123456789", "19 digits");
    assert_malformed(Snomed, "2229800X", "digits only");
    assert_malformed(Snomed, "22298006.0", "digits only");
    assert_malformed(Snomed, "-22298006", "digits only");
    // Reserved partition 05, and a long-format partition on an id too short for a namespace.
    assert_malformed(Snomed, "12345050", "reserved");
    assert_malformed(Snomed, "12345107", "namespace");
}

// ---- any input, any system ------------------------------------------------------------------

#[test]
fn empty_or_blank_codes_are_refused_for_every_system() {
    for system in CodeSystem::ALL {
        for code in ["", " ", "\t\n", "\u{a0}"] {
            assert_eq!(refused(system, code), CodeError::Empty { system });
        }
    }
}

#[test]
fn codes_with_spaces_around_them_are_refused_for_every_system() {
    for (system, code) in [
        (Icd10Cm, " E11.9"),
        (Icd10Pcs, "0DTJ4ZZ "),
        (Cpt, "99213\n"),
        (Hcpcs, "\tJ1100"),
        (Loinc, "2345-7 "),
        (Snomed, " 22298006"),
    ] {
        assert_malformed(system, code, "whitespace around it");
    }
}

#[test]
fn strange_input_is_refused_without_panicking_and_is_not_echoed_in_full() {
    let long = "9".repeat(100_000);
    let weird = [
        long.as_str(),
        "E11.9\u{0}",
        "\u{202e}E11.9",
        "E11\u{200b}.9",
        "🙂",
        "ΕΛΛΗΝΙΚΆ",
        "\\",
        "\"",
        "%s%n",
        "'; DROP TABLE charts; --",
        "E11.9\nI10",
        "99213\u{301}",
    ];
    for system in CodeSystem::ALL {
        for code in weird {
            let err = refused(system, code);
            let message = err.to_string();
            assert!(message.chars().count() < 400, "{system}: {message}");
            assert!(
                !message.contains('\0') && !message.contains('\n'),
                "{message:?}"
            );
        }
    }
    let message = refused(Snomed, &long).to_string();
    assert!(
        message.contains("100000 characters") && message.contains('…'),
        "{message}"
    );
}

#[test]
fn error_messages_name_the_code_and_what_is_wrong() {
    let messages = [
        (Icd10Cm, "E11", "E11 is a category, not a billable code"),
        (Icd10Cm, "E119", "write E119 as E11.9"),
        (
            Icd10Cm,
            "E11.99",
            "E11.99 is not a code in ICD-10-CM FY2026",
        ),
        (
            Icd10Pcs,
            "0DTJ4ZI",
            "\"0DTJ4ZI\" is not a well-formed ICD-10-PCS code",
        ),
        (Loinc, "2345-6", "2345-6 fails the LOINC check digit"),
        (
            Snomed,
            "22298007",
            "22298007 fails the SNOMED CT check digit",
        ),
        (
            Snomed,
            "123456017",
            "123456017 is a SNOMED CT description identifier",
        ),
    ];
    for (system, code, expected) in messages {
        let message = refused(system, code).to_string();
        assert!(
            message.contains(expected),
            "{message:?} should contain {expected:?}"
        );
    }
    assert_eq!(
        refused(Icd10Cm, "").to_string(),
        "no ICD-10-CM code was given"
    );
}

#[test]
fn thousands_of_generated_inputs_never_make_validation_panic() {
    // A fixed pseudo-random walk over code-like characters (no dependencies, same every run).
    const PALETTE: [char; 24] = [
        '0', '1', '2', '5', '7', '9', 'A', 'E', 'I', 'O', 'T', 'X', 'Z', 'e', 'x', '.', '-', ' ',
        '\t', 'É', '🙂', '\u{0}', '\u{200b}', '９',
    ];
    let mut state: u64 = 0x5eed_c0de;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    for _ in 0..20_000 {
        let len = next() % 20;
        let input: String = (0..len).map(|_| PALETTE[next() % PALETTE.len()]).collect();
        for system in CodeSystem::ALL {
            if let Err(e) = validate(system, &input) {
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[test]
fn a_coder_finds_billable_diagnoses_by_the_words_of_their_description() {
    let found = super::icd10cm_search("type 2 diabetes without complications", 10).unwrap();
    assert_eq!(found.first().map(|e| e.code), Some("E11.9"), "{found:?}");
    // Word beginnings, any case, any order.
    let found = super::icd10cm_search("PNEUMON unspec organism", 10).unwrap();
    assert!(found.iter().any(|e| e.code == "J18.9"), "{found:?}");
    assert!(
        found.iter().all(|e| e.billable),
        "only codes a claim may carry"
    );
    for e in &found {
        let words = e.description.to_ascii_lowercase();
        assert!(
            words.contains("pneumon") && words.contains("organism"),
            "{e:?}"
        );
    }
    // The most general first: shorter descriptions before longer.
    let chest = super::icd10cm_search("chest pain", 50).unwrap();
    let codes: Vec<&str> = chest.iter().map(|e| e.code).collect();
    assert_eq!(codes, ["R07.89", "R07.1", "R07.9"]);
    assert!(chest
        .windows(2)
        .all(|w| w[0].description.len() <= w[1].description.len()));
    // A limit is kept; no words, no answer; words nothing has, nothing.
    assert_eq!(super::icd10cm_search("fracture", 5).unwrap().len(), 5);
    assert!(super::icd10cm_search("  ,; ", 10).unwrap().is_empty());
    assert!(super::icd10cm_search("zzqx", 10).unwrap().is_empty());
}

#[test]
fn a_code_s_beginning_finds_the_codes_under_it() {
    let found = super::icd10cm_search("e11.6", 100).unwrap();
    assert!(!found.is_empty());
    assert!(
        found.iter().all(|e| e.code.starts_with("E11.6")),
        "{found:?}"
    );
    let bare = super::icd10cm_search("E116", 100).unwrap();
    assert_eq!(bare, found, "with or without the dot");
    let category = super::icd10cm_search("j18", 100).unwrap();
    assert!(category.iter().any(|e| e.code == "J18.9"));
    assert!(category
        .iter()
        .all(|e| e.billable && e.code.starts_with("J18")));
}
