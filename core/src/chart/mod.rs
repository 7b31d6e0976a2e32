//! The chart document: one automerge document per inpatient encounter, schema
//! `chartsync/chart@1` (docs/chart-schema.md), and the typed API that is the only way this
//! code base writes it.
//!
//! Every write takes the [`Staff`] acting and the time, checks its input and the chart's rules
//! first, and commits one automerge change authored by that person (so conflicts can say who
//! wrote what). A refused write returns a [`ChartError`] and changes nothing. Changes that
//! arrive from elsewhere are checked by [`validate::validate_changes`].

mod access;
mod accounting;
mod conflicts;
mod deficiency;
pub mod error;
mod id;
pub(crate) mod keys;
mod read;
mod signing;
mod touched;
pub mod types;
pub mod validate;
pub mod view;
mod write;

use automerge::{Automerge, ChangeHash, ReadDoc};

pub use access::{write_access, WriteAccess, MOVE_WINDOW};
pub use accounting::ACCOUNTING_YEARS;
pub use conflicts::{Conflict, ConflictingValue, JsonValue, Resolution};
pub use deficiency::{
    Deficiency, Refresh, RefreshScope, COMPLETE_WITHIN_DAYS, HISTORY_PHYSICAL_WITHIN_HOURS,
    RULES_VERSION,
};
pub use error::ChartError;
pub use id::ChartId;
pub use keys::SCHEMA_V1;
pub use read::is_sha256_hex;
pub use touched::{RecordRef, Touched};
pub use types::*;
pub use view::*;
pub use write::*;

use read::Reader;

/// The chart's top-level sections, in the order a new chart creates them.
pub fn section_names() -> impl Iterator<Item = &'static str> {
    keys::SECTIONS.iter().map(|(k, _)| *k)
}

/// One patient's chart for one encounter.
#[derive(Debug, Clone)]
pub struct Chart {
    doc: Automerge,
    /// The changes of the write under way, from its checks to its commit.
    kept: Kept,
    /// The document's bytes as it arrived whole, while it is still at those heads.
    saved: Saved,
}

/// A saved form of a chart that arrived as one whole document: its heads and bytes.
#[derive(Clone, Default)]
struct Saved(Option<std::sync::Arc<(Vec<ChangeHash>, Vec<u8>)>>);

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Saved")
    }
}

/// The changes [`Chart::new_changes`] made, while they are still the chart's newest: a copy
/// of the chart starts without them.
#[derive(Default)]
struct Kept(std::sync::Mutex<Option<std::sync::Arc<validate::ChangesSince>>>);

impl Clone for Kept {
    fn clone(&self) -> Kept {
        Kept::default()
    }
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kept")
    }
}

impl Kept {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<std::sync::Arc<validate::ChangesSince>>> {
        crate::store::lock(&self.0)
    }
}

impl Chart {
    /// Loads a chart saved with [`Chart::save`] (or any automerge save of a chart document).
    /// Bytes that are not an automerge document, or a document that is not a chart, are refused.
    pub fn load(bytes: &[u8]) -> Result<Chart, ChartError> {
        let doc = load_document(bytes)?;
        Chart::from_automerge(doc)
    }

    /// Wraps a document after checking it is a chart of the schema this version reads.
    pub fn from_automerge(doc: Automerge) -> Result<Chart, ChartError> {
        check_schema(&doc)?;
        Ok(Chart::of(doc))
    }

    /// The whole document, compressed.
    pub fn save(&mut self) -> Vec<u8> {
        let heads = self.doc.get_heads();
        match self.saved.0.take() {
            // As it arrived, if nothing was written since: not compressed again (automerge
            // sets up a compressor per column of every save).
            Some(saved) if saved.0 == heads => {
                std::sync::Arc::try_unwrap(saved).map_or_else(|s| s.1.clone(), |s| s.1)
            }
            _ => self.doc.save(),
        }
    }

    /// `bytes`: this chart's document as it arrived whole (a sync message carrying one
    /// document chunk, taken into an empty document), which [`Chart::save`] returns while
    /// nothing else is written. The tablet's client only: the bytes are the server's own
    /// save. The server saves what devices send itself, in automerge's encoding.
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    pub(crate) fn arrived_as(&mut self, bytes: Vec<u8>) {
        self.saved = Saved(Some(std::sync::Arc::new((self.doc.get_heads(), bytes))));
    }

    fn of(doc: Automerge) -> Chart {
        Chart {
            doc,
            kept: Kept::default(),
            saved: Saved::default(),
        }
    }

    /// The changes made since `heads`, for appending to a store.
    pub fn save_after(&self, heads: &[ChangeHash]) -> Vec<u8> {
        match self.kept_changes(heads) {
            Some(new) => new.bytes(),
            None => self.doc.save_after(heads),
        }
    }

    /// The changes this chart has beyond `since`, rebuilt from automerge's op set once: kept
    /// until the chart changes again or [`Chart::forget_new_changes`], so that the checks of
    /// a write and the store's commit of it (its bytes, what it touched) share them.
    pub fn new_changes(
        &self,
        since: &[ChangeHash],
    ) -> Result<validate::NewChanges<'_>, validate::Rejection> {
        if let Some(kept) = self.kept_changes(since) {
            return Ok(kept);
        }
        let new = validate::NewChanges::of(&self.doc, since)?;
        *self.kept.slot() = Some(new.shared());
        Ok(new)
    }

    /// The kept changes beyond `since`, if they are still the chart's newest.
    pub(crate) fn kept_changes(&self, since: &[ChangeHash]) -> Option<validate::NewChanges<'_>> {
        let kept = self.kept.slot().clone()?;
        (kept.since == since && kept.until == self.doc.get_heads())
            .then(|| validate::NewChanges::kept(&self.doc, kept))
    }

    /// Lets go of the changes [`Chart::new_changes`] kept (the store does, once they are
    /// committed: a chart in its cache holds no more than its document).
    pub fn forget_new_changes(&self) {
        *self.kept.slot() = None;
    }

    /// Applies bytes from [`Chart::save_after`] or [`Chart::save`] of another replica.
    /// These bypass the API's checks: use [`validate::validate_changes`] first on data from
    /// anywhere untrusted.
    /// Bytes that do not parse completely are refused whole, and nothing is applied
    /// (automerge's own `load_incremental` applies what parses and skips the rest). Bytes
    /// that parse but that automerge fails on while applying them are refused too, and may
    /// leave the chart part-changed: apply bytes from outside to a [`Chart::fork`].
    pub fn load_incremental(&mut self, bytes: &[u8]) -> Result<(), ChartError> {
        let mut changes = Vec::new();
        let mut documents = Vec::new();
        for chunk in chunks(bytes)? {
            if chunk.kind == CHUNK_DOCUMENT {
                documents.push(load_document(chunk.bytes)?);
            } else {
                changes.push(parse_change(chunk.bytes)?);
            }
        }
        // A change whose dependencies are neither here nor in the same bytes would wait in
        // automerge's queue, invisible and unsaved: refuse the bytes instead.
        let arriving: std::collections::HashSet<ChangeHash> =
            changes.iter().map(|c| c.hash()).collect();
        let known = |h: &ChangeHash| {
            arriving.contains(h)
                || self.doc.get_change_meta_by_hash(h).is_some()
                || documents
                    .iter()
                    .any(|d| d.get_change_meta_by_hash(h).is_some())
        };
        if let Some(missing) = changes.iter().flat_map(|c| c.deps()).find(|h| !known(h)) {
            return Err(ChartError::Corrupt(format!(
                "a change depends on change {missing}, which this chart does not have"
            )));
        }
        // automerge can panic applying a change that parsed (fuzzing found a change naming an
        // actor its own table lacks): an error instead. The chart may then be part-changed,
        // which is why bytes from outside are applied to a fork first (as the server does).
        let doc = &mut self.doc;
        unpanicked(|| {
            for mut d in documents {
                doc.merge(&mut d)?;
            }
            doc.apply_changes(changes)?;
            Ok(())
        })
    }

    /// Merges another replica of the same chart into this one.
    pub fn merge(&mut self, other: &Chart) -> Result<(), ChartError> {
        let mut other = other.doc.clone();
        self.doc.merge(&mut other)?;
        Ok(())
    }

    /// A replica of this chart to write on elsewhere: the same content under a new automerge
    /// actor id. (A `clone()` keeps the actor id; two copies writing under one actor id would
    /// make changes that cannot be merged.)
    pub fn fork(&self) -> Chart {
        let mut doc = self.doc.fork();
        crate::seeded::set_actor(&mut doc);
        Chart::of(doc)
    }

    /// Who made a change of this chart, as the change's author says (changes written through
    /// the chart API name their writer; others, an automerge-repo app's say, name no one).
    pub fn author_of(&self, change: &automerge::Change) -> Option<Staff> {
        author_in(&self.doc, change)
    }

    /// The document's current heads.
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The underlying document, for the store and the sync protocol.
    pub fn doc(&self) -> &Automerge {
        &self.doc
    }

    /// For the sync protocol, which applies received changes itself.
    pub(crate) fn doc_mut(&mut self) -> &mut Automerge {
        &mut self.doc
    }

    /// The chart as plain data.
    pub fn view(&self) -> Result<ChartView, ChartError> {
        let r = Reader::new(&self.doc);
        let signatures = r.log(keys::SIGNATURES, |r, o, p| r.signature(o, p))?;
        let amendments = r.log(keys::AMENDMENTS, |r, o, p| r.amendment(o, p))?;
        let mut entries = r.records(keys::ENTRIES, |r, id, o| r.entry(id, o))?;
        for e in &mut entries {
            signing::derive_entry_state(e, &signatures, &amendments)?;
        }
        entries.sort_by(|a, b| (a.content.recorded_at, &a.id).cmp(&(b.content.recorded_at, &b.id)));
        let mut coding = r.records(keys::CODING, |r, id, o| r.coding(id, o))?;
        coding
            .sort_by(|a, b| (a.sequence, a.coded_at, &a.id).cmp(&(b.sequence, b.coded_at, &b.id)));
        let mut queries = r.records(keys::QUERIES, |r, id, o| r.query(id, o))?;
        queries.sort_by(|a, b| (a.asked_at, &a.id).cmp(&(b.asked_at, &b.id)));
        let mut forms = r.records(keys::FORMS, |r, id, o| r.form(id, o))?;
        forms.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let mut roi_requests = r.records(keys::ROI_REQUESTS, |r, id, o| r.roi_request(id, o))?;
        roi_requests.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
        Ok(ChartView {
            schema: r.schema()?,
            patient: r.patient()?,
            encounter: r.encounter()?,
            events: r.log(keys::EVENTS, |r, o, p| r.event(o, p))?,
            entries,
            signatures,
            amendments,
            coding,
            queries,
            forms,
            roi_requests,
            disclosures: r.log(keys::DISCLOSURES, |r, o, p| r.disclosure(o, p))?,
            case_log: r.log(keys::CASE_LOG, |r, o, p| r.case_log(o, p))?,
            handovers: r.log(keys::HANDOVERS, |r, o, p| r.handover(o, p))?,
            conflicts: self.conflicts(),
        })
    }

    /// Who the chart is about, without reading the rest of it.
    pub fn patient(&self) -> Result<PatientView, ChartError> {
        Reader::new(&self.doc).patient()
    }

    /// Where the patient is and whether the stay is over, without reading the rest.
    pub fn encounter(&self) -> Result<EncounterView, ChartError> {
        Reader::new(&self.doc).encounter()
    }

    /// One entry, with its signed and amended state.
    pub fn entry(&self, entry_id: &str) -> Result<EntryView, ChartError> {
        let r = Reader::new(&self.doc);
        let obj = self.record(keys::ENTRIES, "entry", entry_id)?;
        let mut entry = r.entry(entry_id, &obj)?;
        let signatures = r.log(keys::SIGNATURES, |r, o, p| r.signature(o, p))?;
        let amendments = r.log(keys::AMENDMENTS, |r, o, p| r.amendment(o, p))?;
        signing::derive_entry_state(&mut entry, &signatures, &amendments)?;
        Ok(entry)
    }

    /// The files the chart's scanned documents name, in entry order.
    pub fn attachments(&self) -> Result<Vec<AttachmentRef>, ChartError> {
        let r = Reader::new(&self.doc);
        let entries = r.section(keys::ENTRIES)?;
        let mut out = Vec::new();
        for (id, obj) in r.map_entries(&entries, keys::ENTRIES)? {
            let content = r.entry_content(&obj, &format!("{}/{id}", keys::ENTRIES))?;
            out.extend(content.attachment);
        }
        Ok(out)
    }

    /// The file of the scanned document that names `hash`, if one does.
    pub fn attachment_ref(&self, hash: &str) -> Result<Option<AttachmentRef>, ChartError> {
        Ok(self.attachments()?.into_iter().find(|a| a.hash == hash))
    }

    /// The entry's content as its most recent signer saw it: the authoritative version of a
    /// signed entry, whatever concurrent edits merged in afterwards.
    pub fn signed_content(&self, entry_id: &str) -> Result<Option<EntryContent>, ChartError> {
        let r = Reader::new(&self.doc);
        let signatures = r.log(keys::SIGNATURES, |r, o, p| r.signature(o, p))?;
        let Some(sig) = signatures.iter().rev().find(|s| s.entry_id == entry_id) else {
            return Ok(None);
        };
        signing::content_at(&self.doc, entry_id, &sig.heads).map(Some)
    }

    /// Entries whose content changed concurrently with a signature.
    pub fn edited_after_signing(&self) -> Result<Vec<String>, ChartError> {
        Ok(self
            .view()?
            .entries
            .into_iter()
            .filter(|e| e.edited_after_signing)
            .map(|e| e.id)
            .collect())
    }

    /// The object of a record in a section keyed by id.
    fn record(
        &self,
        section: &str,
        what: &'static str,
        id: &str,
    ) -> Result<automerge::ObjId, ChartError> {
        let r = Reader::new(&self.doc);
        let map = r.section(section)?;
        match self.doc.get(&map, id)? {
            Some((automerge::Value::Object(automerge::ObjType::Map), obj)) => Ok(obj),
            _ => Err(ChartError::NotFound {
                what,
                id: id.to_string(),
            }),
        }
    }
}

/// Runs automerge on bytes from outside, a panic inside it turned into an error. automerge
/// 0.12 still panics on some malformed input (fuzzing found a change whose op id overflows:
/// `OpId::new` unwraps), and a panic on a server's worker, or across a tablet app's FFI, is
/// not an answer. Only for parsing, and for applying what parsed: a document left half
/// changed by a panic is dropped by the caller with the error.
pub fn unpanicked<T>(f: impl FnOnce() -> Result<T, ChartError>) -> Result<T, ChartError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(ChartError::Corrupt(
            "automerge could not read the data (it failed inside)".into(),
        ))
    })
}

/// A whole document from bytes from outside (`unpanicked`, `known_chunks`).
pub fn load_document(bytes: &[u8]) -> Result<Automerge, ChartError> {
    known_chunks(bytes)?;
    let mut doc =
        unpanicked(|| Automerge::load(bytes).map_err(|e| ChartError::Corrupt(e.to_string())))?;
    crate::seeded::set_actor(&mut doc);
    Ok(doc)
}

/// Whether `doc` says it is a chart of the schema this version reads (its `schema` key).
pub fn check_schema(doc: &Automerge) -> Result<(), ChartError> {
    let schema = Reader::new(doc).schema()?;
    if schema != keys::SCHEMA_V1 {
        return Err(ChartError::UnsupportedSchema { found: schema });
    }
    Ok(())
}

/// Who `doc` says wrote `change` (see [`Chart::author_of`]).
pub(crate) fn author_in(doc: &Automerge, change: &automerge::Change) -> Option<Staff> {
    doc.get_author_for_actor(change.actor_id())
        .and_then(|a| serde_json::from_slice::<Staff>(a.as_bytes()).ok())
}

/// One change from bytes from outside (`unpanicked`, `known_chunks`).
pub fn parse_change(bytes: &[u8]) -> Result<automerge::Change, ChartError> {
    known_chunks(bytes)?;
    unpanicked(|| {
        automerge::Change::try_from(bytes).map_err(|e| ChartError::Corrupt(e.to_string()))
    })
}

/// Refuses chunks other than documents and changes (plain or compressed). chartsync never
/// writes or sends the others (automerge's bundles), and automerge 0.12 expands a bundle's
/// run-length-encoded columns into memory with no limit: fuzzing found 140 bytes that took
/// over 2 GB.
fn known_chunks(bytes: &[u8]) -> Result<(), ChartError> {
    match chunks(bytes)?.iter().find(|c| c.kind > CHUNK_COMPRESSED) {
        Some(c) => Err(ChartError::Corrupt(format!(
            "a chunk of kind {} (only documents and changes are read)",
            c.kind
        ))),
        None => Ok(()),
    }
}

pub(crate) const CHUNK_DOCUMENT: u8 = 0;
/// A change chunk whose body is deflated: the last kind chartsync reads.
const CHUNK_COMPRESSED: u8 = 2;

pub(crate) struct Chunk<'a> {
    pub(crate) kind: u8,
    pub(crate) bytes: &'a [u8],
}

/// Splits automerge's storage format into its chunks: magic (4 bytes), checksum (4), type (1),
/// body length (unsigned LEB128), body. automerge parses one chunk strictly but a sequence of
/// them only leniently, so the store splits them itself.
pub(crate) fn chunks(mut bytes: &[u8]) -> Result<Vec<Chunk<'_>>, ChartError> {
    const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
    let bad = |what: &str| ChartError::Corrupt(format!("not automerge data: {what}"));
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 10 || bytes[..4] != MAGIC {
            return Err(bad("no chunk header"));
        }
        let kind = bytes[8];
        let (mut len, mut shift, mut at) = (0u64, 0u32, 9usize);
        loop {
            let b = *bytes.get(at).ok_or_else(|| bad("truncated chunk length"))?;
            at += 1;
            if shift > 56 {
                return Err(bad("chunk length too long"));
            }
            len |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad("truncated chunk"))?;
        out.push(Chunk {
            kind,
            bytes: &bytes[..end],
        });
        bytes = &bytes[end..];
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Ana Rivera, admitted to 4west bed 12A by `by` at `at`: the unit tests' chart.
    pub(crate) fn admitted(by: &Staff, at: Timestamp) -> Chart {
        let patient = NewPatient {
            mrn: "MRN-0042".into(),
            family_name: "Rivera".into(),
            given_names: "Ana".into(),
            birth_date: None,
            sex: None,
            address: None,
            phone: None,
        };
        let encounter = NewEncounter {
            ward: "4west".into(),
            bed: Some("12A".into()),
            class: EncounterClass::Inpatient,
            admit_source: None,
            attending: None,
        };
        Chart::create(patient, encounter, by, at).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_that_arrived_whole_is_saved_as_it_came_until_it_is_written() {
        let nurse = Staff::new("rn.park", Role::Nurse, "tablet-4west-02");
        let at = Timestamp::parse("2026-12-02T08:00:00Z").unwrap();
        let mut sent = testing::admitted(&nurse, at);
        let bytes = sent.save();
        let mut chart = Chart::load(&bytes).unwrap();
        chart.arrived_as(bytes.clone());
        assert_eq!(chart.save(), bytes);

        chart
            .add_entry(&nurse, at, NewEntry::note(EntryKind::NursingNote, "Seen"))
            .unwrap();
        chart.arrived_as(bytes.clone());
        chart
            .add_entry(
                &nurse,
                at,
                NewEntry::note(EntryKind::NursingNote, "Settled"),
            )
            .unwrap();
        let saved = chart.save();
        assert_ne!(saved, bytes);
        let again = Chart::load(&saved).unwrap();
        assert_eq!(again.heads(), chart.heads());
        assert_eq!(again.view().unwrap().entries.len(), 2);
    }
}
