//! A hostile device's edits, made with automerge's own API so they are valid automerge (as
//! any client can produce) but of any shape: puts, deletes, objects, list inserts, text
//! splices and counters anywhere in a chart. The validator decides; whatever it accepts
//! must read as a chart. Never a panic.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Unstructured;
use automerge::transaction::Transactable;
use automerge::{Automerge, ObjId, ObjType, ReadDoc, ScalarValue, Value};
use chartsync_core::chart::validate::validate_changes;
use chartsync_core::chart::Chart;
use libfuzzer_sys::fuzz_target;

#[path = "../support.rs"]
mod chartsync_fuzz_support;

fn chart() -> &'static Chart {
    static CHART: OnceLock<Chart> = OnceLock::new();
    CHART.get_or_init(chartsync_fuzz_support::with_entries)
}

/// Keys the chart schema uses, and a few it does not.
const KEYS: &[&str] = &[
    "schema",
    "patient",
    "encounter",
    "entries",
    "id",
    "kind",
    "body",
    "author",
    "role",
    "recorded_at",
    "status",
    "signatures",
    "signer",
    "codes",
    "system",
    "code",
    "value",
    "unit",
    "forms",
    "ward",
    "bed",
    "mrn",
    "deficiencies",
    "amends",
    "coding",
    "x",
    "",
];

/// Every object in `doc`, breadth first, at most 256 of them.
fn objects(doc: &Automerge) -> Vec<(ObjId, ObjType)> {
    let mut out = vec![(automerge::ROOT, ObjType::Map)];
    let mut at = 0;
    while at < out.len() && out.len() < 256 {
        let (obj, kind) = out[at].clone();
        at += 1;
        let children: Vec<(Value<'_>, ObjId)> = match kind {
            ObjType::Map | ObjType::Table => doc
                .keys(&obj)
                .filter_map(|k| doc.get(&obj, k.as_str()).ok().flatten())
                .collect(),
            ObjType::List | ObjType::Text => (0..doc.length(&obj).min(64))
                .filter_map(|i| doc.get(&obj, i).ok().flatten())
                .collect(),
        };
        for (value, id) in children {
            if let Value::Object(kind) = value {
                out.push((id, kind));
            }
        }
    }
    out
}

fn scalar(u: &mut Unstructured<'_>) -> arbitrary::Result<ScalarValue> {
    Ok(match u.int_in_range(0..=6)? {
        0 => ScalarValue::Str(u.arbitrary::<String>()?.into()),
        1 => ScalarValue::Int(u.arbitrary()?),
        2 => ScalarValue::F64(u.arbitrary()?),
        3 => ScalarValue::Boolean(u.arbitrary()?),
        4 => ScalarValue::Null,
        5 => ScalarValue::Timestamp(u.arbitrary()?),
        _ => ScalarValue::counter(u.arbitrary()?),
    })
}

fn edit(u: &mut Unstructured<'_>, doc: &mut Automerge) -> arbitrary::Result<()> {
    let objects = objects(doc);
    let mut tx = doc.transaction();
    for _ in 0..u.int_in_range(1..=12)? {
        let (obj, kind) = u.choose(&objects)?.clone();
        let key = *u.choose(KEYS)?;
        let op = u.int_in_range(0..=5)?;
        let len = tx.length(&obj);
        let index = if len == 0 {
            0
        } else {
            u.int_in_range(0..=len)?
        };
        let _ = match (kind, op) {
            (ObjType::Map | ObjType::Table, 0) => tx.put(&obj, key, scalar(u)?).map(|_| ()),
            (ObjType::Map | ObjType::Table, 1) => tx.delete(&obj, key),
            (ObjType::Map | ObjType::Table, 2) => {
                let kind = *u.choose(&[ObjType::Map, ObjType::List, ObjType::Text])?;
                tx.put_object(&obj, key, kind).map(|_| ())
            }
            (ObjType::Map | ObjType::Table, _) => tx.increment(&obj, key, u.arbitrary()?),
            (ObjType::List, 0) => tx.insert(&obj, index, scalar(u)?),
            (ObjType::List, 1) if index < len => tx.delete(&obj, index),
            (ObjType::List, 2) => tx.insert_object(&obj, index, ObjType::Map).map(|_| ()),
            (ObjType::List, _) if index < len => tx.put(&obj, index, scalar(u)?),
            (ObjType::Text, _) => {
                let del = if index < len {
                    u.int_in_range(0..=(len - index) as isize)?
                } else {
                    0
                };
                tx.splice_text(&obj, index, del, &u.arbitrary::<String>()?)
            }
            _ => Ok(()),
        };
    }
    tx.commit();
    Ok(())
}

fuzz_target!(init: chartsync_fuzz_support::keep_caught_panics(), |data: &[u8]| {
    let chart = chart();
    let mut doc = chart.doc().clone();
    let mut u = Unstructured::new(data);
    // automerge's own API can fail inside on what the device made it do (it sums a
    // counter's increments past `i64::MAX` as it reads one, while picking what to edit
    // next): that is the hostile device's automerge failing, not chartsync. Nothing made.
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| edit(&mut u, &mut doc)));
    if !matches!(made, Ok(Ok(()))) {
        return;
    }
    if validate_changes(chart.doc(), &doc).is_ok() {
        let edited = Chart::from_automerge(doc).expect("a validated chart loads");
        edited.view().expect("a validated chart reads");
    }
});
