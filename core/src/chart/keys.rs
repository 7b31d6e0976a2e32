//! The document's top-level keys and what kind of automerge object each holds.

use automerge::ObjType;

pub const SCHEMA: &str = "schema";
pub const SCHEMA_V1: &str = "chartsync/chart@1";

pub const PATIENT: &str = "patient";
pub const ENCOUNTER: &str = "encounter";
pub const EVENTS: &str = "events";
pub const ENTRIES: &str = "entries";
pub const SIGNATURES: &str = "signatures";
pub const AMENDMENTS: &str = "amendments";
pub const CODING: &str = "coding";
pub const QUERIES: &str = "queries";
pub const FORMS: &str = "forms";
pub const ROI_REQUESTS: &str = "roi_requests";
pub const DISCLOSURES: &str = "disclosures";
pub const CASE_LOG: &str = "case_log";
pub const HANDOVERS: &str = "handovers";

/// Every section and its type, in the order a new chart creates them.
pub const SECTIONS: [(&str, ObjType); 13] = [
    (PATIENT, ObjType::Map),
    (ENCOUNTER, ObjType::Map),
    (EVENTS, ObjType::List),
    (ENTRIES, ObjType::Map),
    (SIGNATURES, ObjType::List),
    (AMENDMENTS, ObjType::List),
    (CODING, ObjType::Map),
    (QUERIES, ObjType::Map),
    (FORMS, ObjType::Map),
    (ROI_REQUESTS, ObjType::Map),
    (DISCLOSURES, ObjType::List),
    (CASE_LOG, ObjType::List),
    (HANDOVERS, ObjType::List),
];

pub fn section_type(key: &str) -> Option<ObjType> {
    SECTIONS.iter().find(|(k, _)| *k == key).map(|(_, t)| *t)
}

/// Sections that are lists are append-only: items are inserted, never changed or removed.
pub fn is_append_only(key: &str) -> bool {
    section_type(key) == Some(ObjType::List)
}

/// Lists nested in records that are append-only too (record section, list key).
pub const NESTED_APPEND_ONLY: [(&str, &str); 2] = [(QUERIES, "responses"), (FORMS, "signatures")];
