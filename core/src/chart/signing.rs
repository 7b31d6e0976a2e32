//! What a signature covers and how a signed entry's state is derived.
//!
//! A signature records the heads the signer saw and the SHA-256 of the entry's content there.
//! The content is hashed as the compact JSON of [`EntryContent`] (fields in declaration order),
//! which docs/chart-schema.md spells out so that other clients can sign too.

use automerge::{Automerge, ChangeHash, ObjId, ObjType, ReadDoc, Value};
use sha2::{Digest, Sha256};

use super::error::ChartError;
use super::keys;
use super::read::Reader;
use super::types::{AmendmentKind, EntryStatus};
use super::view::{AmendmentView, EntryContent, EntryView, SignatureView};

/// Hex SHA-256 of an entry's signed content.
pub(crate) fn content_hash(content: &EntryContent) -> String {
    // Serializing a struct of strings and enums to JSON cannot fail.
    let json = serde_json::to_vec(content).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

pub(crate) fn parse_heads(heads: &[String]) -> Result<Vec<ChangeHash>, ChartError> {
    heads
        .iter()
        .map(|h| {
            h.parse::<ChangeHash>().map_err(|_| ChartError::Schema {
                path: keys::SIGNATURES.into(),
                reason: "heads must be hex change hashes".into(),
            })
        })
        .collect()
}

/// The entry's content as it was at `heads`.
pub(crate) fn content_at<D: ReadDoc>(
    doc: &D,
    entry_id: &str,
    heads: &[String],
) -> Result<EntryContent, ChartError> {
    let heads = parse_heads(heads)?;
    for h in &heads {
        if doc.get_change_by_hash(h).is_none() {
            return Err(ChartError::Schema {
                path: keys::SIGNATURES.into(),
                reason: format!("a signature names heads {h} that this chart does not have"),
            });
        }
    }
    let r = Reader::at(doc, &heads);
    let entries = r.section(keys::ENTRIES)?;
    let obj = entry_obj_at(doc, &entries, entry_id, &heads)?;
    r.entry_content(&obj, &format!("{}/{entry_id}", keys::ENTRIES))
}

fn entry_obj_at<D: ReadDoc>(
    doc: &D,
    entries: &ObjId,
    entry_id: &str,
    heads: &[ChangeHash],
) -> Result<ObjId, ChartError> {
    match doc.get_at(entries, entry_id, heads)? {
        Some((Value::Object(ObjType::Map), obj)) => Ok(obj),
        _ => Err(ChartError::NotFound {
            what: "entry at the signature's heads",
            id: entry_id.to_string(),
        }),
    }
}

/// Fills in `signed`, `edited_after_signing` and the derived status of an entry.
pub(crate) fn derive_entry_state(
    entry: &mut EntryView,
    signatures: &[SignatureView],
    amendments: &[AmendmentView],
) -> Result<(), ChartError> {
    let current = content_hash(&entry.content);
    let mut signed = false;
    for sig in signatures.iter().filter(|s| s.entry_id == entry.id) {
        signed = true;
        if sig.content_hash != current {
            entry.edited_after_signing = true;
        }
    }
    entry.signed = signed;
    let mut amended = false;
    for a in amendments.iter().filter(|a| a.target_entry_id == entry.id) {
        if a.kind == AmendmentKind::EnteredInError {
            entry.status = EntryStatus::EnteredInError;
            return Ok(());
        }
        amended = true;
    }
    if amended {
        entry.status = EntryStatus::Amended;
    }
    Ok(())
}

/// Whether `ancestor` is in the causal history of `change` (not counting `change` itself).
pub(crate) fn is_ancestor(doc: &Automerge, ancestor: &ChangeHash, change: &ChangeHash) -> bool {
    let mut stack: Vec<ChangeHash> = match doc.get_change_meta_by_hash(change) {
        Some(meta) => meta.deps.to_vec(),
        None => return false,
    };
    let mut seen = std::collections::HashSet::new();
    while let Some(h) = stack.pop() {
        if &h == ancestor {
            return true;
        }
        if !seen.insert(h) {
            continue;
        }
        if let Some(meta) = doc.get_change_meta_by_hash(&h) {
            stack.extend(meta.deps.iter().copied());
        }
    }
    false
}
