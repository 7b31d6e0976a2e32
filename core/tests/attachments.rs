//! Scanned documents, as the chart and the store keep them (docs/chart-schema.md, "Scanned
//! documents"; docs/records-office.md): the entry that names a file, who may file, sign and
//! amend it, what the server's checks refuse, and the file's bytes in the store: kept once
//! by their hash, fetched by a tablet part by part (resuming after a restart, under a chart
//! still on its wards, refusing parts that do not hash to the name), and gone with the last
//! chart that names them.

mod common;

use automerge::transaction::Transactable;
use automerge::ReadDoc;
use chartsync_core::chart::validate::{check_writer, validate_changes, Violation};
use chartsync_core::chart::*;
use chartsync_core::store::*;
use common::*;

fn clerk_actor() -> Actor {
    Actor {
        user: technician().user,
        role: "technician".into(),
        device: "records-pc-1".into(),
    }
}

fn consent() -> ScannedDocument {
    ScannedDocument {
        media_type: MediaType::Pdf,
        pages: 2,
        title: "Consent to surgery".into(),
        document_type: DocumentType::Consent,
        document_date: Some("2026-11-30".into()),
        body: String::new(),
    }
}

/// A file of `n` bytes that is no two parts alike.
fn file_of(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn attachment_of(bytes: &[u8]) -> AttachmentRef {
    AttachmentRef {
        hash: attachment_hash(bytes),
        media_type: MediaType::Pdf,
        size: bytes.len() as u64,
        pages: 2,
        title: "Consent to surgery".into(),
        document_type: DocumentType::Consent,
        document_date: None,
    }
}

#[test]
fn records_staff_file_sign_and_amend_scanned_documents_and_clinicians_amend_them() {
    let mut chart = admitted();
    let a = attachment_of(b"%PDF-1.4 two pages");
    let doc = NewScannedDocument {
        attachment: a.clone(),
        body: "received from the surgeon's office".into(),
    };
    assert!(matches!(
        chart.add_scanned_document(&coder(), t(1), doc.clone()),
        Err(ChartError::NotPermitted(_))
    ));
    let id = chart
        .add_scanned_document(&technician(), t(1), doc.clone())
        .unwrap();
    let entry = chart.entry(&id).unwrap();
    assert_eq!(entry.content.kind, EntryKind::ScannedDocument);
    assert_eq!(entry.content.attachment.as_ref(), Some(&a));
    assert_eq!(entry.status, EntryStatus::Draft);
    // Not a note someone writes: a scanned document comes with its file.
    let mut note = NewEntry::note(EntryKind::ScannedDocument, "a scan");
    note.shift = None;
    assert!(chart.add_entry(&day_nurse(), t(2), note).is_err());
    // A technician signs what they filed, and amends it; but not a nurse's note.
    chart
        .sign_entry(&technician(), t(3), &id, SignatureMeaning::Author)
        .unwrap();
    let nursing = chart
        .add_entry(
            &day_nurse(),
            t(4),
            NewEntry::note(EntryKind::NursingNote, "Settled"),
        )
        .unwrap();
    assert!(matches!(
        chart.sign_entry(&technician(), t(5), &nursing, SignatureMeaning::Verify),
        Err(ChartError::NotPermitted(_))
    ));
    let amend = |kind, target: &str| NewAmendment {
        target_entry_id: target.to_string(),
        kind,
        reason: "page 2 rescanned, legible".into(),
        body: "Page 2 replaced by a legible scan in the paper record.".into(),
    };
    chart
        .amend(&technician(), t(6), amend(AmendmentKind::Addendum, &id))
        .unwrap();
    assert!(chart
        .amend(
            &technician(),
            t(6),
            amend(AmendmentKind::Addendum, &nursing)
        )
        .is_err());
    chart
        .amend(&day_nurse(), t(7), amend(AmendmentKind::Addendum, &id))
        .unwrap();
    let view = chart.view().unwrap();
    let entry = view.entries.iter().find(|e| e.id == id).unwrap();
    assert!(entry.signed);
    assert_eq!(entry.status, EntryStatus::Amended);
    // The signature covers the file: its hash is in the signed content.
    let signature = view.signatures.iter().find(|s| s.entry_id == id).unwrap();
    let json = serde_json::to_string(&entry.content).unwrap();
    assert!(
        json.ends_with(&format!(
            ",\"attachment\":{}}}",
            serde_json::to_string(&a).unwrap()
        )),
        "{json}"
    );
    assert_eq!(
        signature.content_hash,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(json.as_bytes()))
    );
    // Every other entry's signed content is as it always was: no attachment key.
    let nursing = view.entries.iter().find(|e| e.id == nursing).unwrap();
    assert!(!serde_json::to_string(&nursing.content)
        .unwrap()
        .contains("attachment"));
}

#[test]
fn the_server_refuses_a_file_swapped_and_records_staff_writing_clinical_entries() {
    let mut chart = admitted();
    let id = chart
        .add_scanned_document(
            &technician(),
            t(1),
            NewScannedDocument {
                attachment: attachment_of(b"the consent"),
                body: String::new(),
            },
        )
        .unwrap();
    let before = chart.doc().clone();

    // Another file under the same entry, unsigned or not: refused.
    let mut swapped = before.clone();
    {
        let entries = swapped.get(automerge::ROOT, "entries").unwrap().unwrap().1;
        let entry = swapped.get(&entries, id.as_str()).unwrap().unwrap().1;
        let file = swapped.get(&entry, "attachment").unwrap().unwrap().1;
        let mut tx = swapped.transaction();
        tx.put(&file, "hash", attachment_hash(b"another file"))
            .unwrap();
        tx.commit();
    }
    let err = validate_changes(&before, &swapped).unwrap_err();
    assert!(
        err.violations
            .iter()
            .any(|v| v.to_string().contains("attachment")),
        "{err:?}"
    );

    // A scanned document made anywhere but on the server (a tablet naming a file it never
    // gave, another chart's say): refused.
    let mut made_on_a_device = replica(&mut chart);
    made_on_a_device
        .add_scanned_document(
            &technician(),
            t(2),
            NewScannedDocument {
                attachment: attachment_of(b"another patient's consent"),
                body: String::new(),
            },
        )
        .unwrap();
    let err = validate_changes(chart.doc(), made_on_a_device.doc()).unwrap_err();
    assert!(
        err.violations
            .iter()
            .any(|v| matches!(v, Violation::ScannedDocumentFromDevice { .. })),
        "{err:?}"
    );

    // A technician's signature of a scanned document passes the writer check; of a nurse's
    // note it does not.
    let nursing = chart
        .add_entry(
            &day_nurse(),
            t(2),
            NewEntry::note(EntryKind::NursingNote, "Settled"),
        )
        .unwrap();
    let heads = chart.heads();
    let mut signed = replica(&mut chart);
    signed
        .sign_entry(&technician(), t(3), &id, SignatureMeaning::Author)
        .unwrap();
    check_writer(&heads, &signed, "him.jones", Role::Technician).unwrap();
    // A nursing note's body edited by a technician (no API allows it).
    let mut doc = chart.doc().clone();
    {
        let entries = doc.get(automerge::ROOT, "entries").unwrap().unwrap().1;
        let entry = doc.get(&entries, nursing.as_str()).unwrap().unwrap().1;
        let body = doc.get(&entry, "body").unwrap().unwrap().1;
        let mut tx = doc.transaction();
        tx.splice_text(&body, 0, 0, "x").unwrap();
        tx.commit();
    }
    let forged = Chart::from_automerge(doc).unwrap();
    let err = check_writer(&heads, &forged, "him.jones", Role::Technician).unwrap_err();
    assert!(
        err.violations
            .iter()
            .any(|v| matches!(v, Violation::RoleMayNotWrite { .. })),
        "{err:?}"
    );
}

#[test]
fn a_file_is_kept_once_by_its_hash_and_goes_with_the_last_chart_that_names_it() {
    let place = place();
    let store = place.open(StoreOptions::default()).unwrap();
    let bytes = file_of(3 * ATTACHMENT_PART_BYTES + 17);
    let first = store.create(admitted()).unwrap();
    let second = store.create(admitted_to("4west", 2)).unwrap();
    let (entry, a) = store
        .file_scanned_document(
            &clerk_actor(),
            &technician(),
            first,
            t(1),
            consent(),
            &bytes,
        )
        .unwrap();
    assert_eq!(a.hash, attachment_hash(&bytes));
    assert_eq!(a.size, bytes.len() as u64);
    store
        .file_scanned_document(
            &clerk_actor(),
            &technician(),
            second,
            t(2),
            consent(),
            &bytes,
        )
        .unwrap();
    let stored = store.attachment(&a.hash).unwrap().unwrap();
    assert_eq!((stored.parts, stored.complete), (4, true));
    assert_eq!(store.attachment_bytes(&a.hash).unwrap().unwrap(), bytes);
    assert!(store.chart_names_attachment(first, &a.hash).unwrap());
    assert!(store
        .read(first, |c| c.entry(&entry).unwrap().content.attachment)
        .unwrap()
        .is_some());

    // A coder may not file; nothing is stored.
    let other = file_of(100);
    let refused =
        store.file_scanned_document(&clerk_actor(), &coder(), first, t(3), consent(), &other);
    assert!(matches!(refused, Err(StoreError::Chart { .. })));
    assert!(store
        .attachment(&attachment_hash(&other))
        .unwrap()
        .is_none());

    // Both charts leave this store: the file goes with the second.
    for id in [first, second] {
        let heads = store.read(id, |c| c.heads()).unwrap();
        store.acknowledge(id, &heads).unwrap();
    }
    store
        .purge(first, chartsync_core::protocol::LeftReason::Discharged)
        .unwrap()
        .unwrap();
    assert!(store.attachment(&a.hash).unwrap().is_some());
    store
        .purge(second, chartsync_core::protocol::LeftReason::Discharged)
        .unwrap()
        .unwrap();
    assert!(store.attachment(&a.hash).unwrap().is_none());
    assert!(store.attachment_part(&a.hash, 0).unwrap().is_none());
}

#[test]
fn a_tablet_fetches_a_file_part_by_part_resumes_after_a_restart_and_drops_a_bad_one() {
    let place = place();
    let bytes = file_of(2 * ATTACHMENT_PART_BYTES + 5);
    let parts: Vec<&[u8]> = bytes.chunks(ATTACHMENT_PART_BYTES).collect();
    let a = attachment_of(&bytes);
    let id;
    {
        let store = place.open(StoreOptions::default()).unwrap();
        id = store.create(admitted()).unwrap();
        assert_eq!(store.want_attachment(id, &a).unwrap(), Some(0));
        assert_eq!(
            store.wanted_attachments().unwrap(),
            vec![(id, a.hash.clone(), 0)]
        );
        // A part of the wrong length, or past the end, is not the file the chart describes:
        // nothing is kept, and nothing more is asked for on its account.
        assert_eq!(
            store
                .store_attachment_part(&a.hash, 0, &parts[0][1..])
                .unwrap(),
            PartStored::Corrupt
        );
        assert_eq!(
            store.store_attachment_part(&a.hash, 3, parts[0]).unwrap(),
            PartStored::Corrupt
        );
        assert_eq!(
            store.store_attachment_part(&a.hash, 0, parts[0]).unwrap(),
            PartStored::More(1)
        );
        // The same part again (an ask answered twice): kept once, nothing more asked.
        assert_eq!(
            store.store_attachment_part(&a.hash, 0, parts[0]).unwrap(),
            PartStored::Unwanted
        );
        // Not whole yet: not readable.
        assert!(store.attachment_bytes(&a.hash).unwrap().is_none());
    }
    // The tablet restarts: it asks again from the part it lacks.
    let store = place.open(StoreOptions::default()).unwrap();
    assert_eq!(
        store.wanted_attachments().unwrap(),
        vec![(id, a.hash.clone(), 1)]
    );
    // Named by a second chart too (an outside record filed on both stays): asked for under
    // one still on the tablet's wards, never under one that left them, which the server
    // would refuse.
    let second = store.create(admitted()).unwrap();
    assert_eq!(store.want_attachment(second, &a).unwrap(), Some(1));
    let (left, stays) = if id.to_string() < second.to_string() {
        (id, second)
    } else {
        (second, id)
    };
    let heads = store.read(left, |c| c.heads()).unwrap();
    store.acknowledge(left, &heads).unwrap();
    assert!(store
        .set_departed(
            left,
            chartsync_core::protocol::LeftReason::Transferred,
            None
        )
        .unwrap());
    assert_eq!(
        store.wanted_attachments().unwrap(),
        vec![(stays, a.hash.clone(), 1)]
    );
    assert_eq!(
        store.store_attachment_part(&a.hash, 1, parts[1]).unwrap(),
        PartStored::More(2)
    );
    assert_eq!(
        store.store_attachment_part(&a.hash, 2, parts[2]).unwrap(),
        PartStored::Complete
    );
    assert_eq!(store.attachment_bytes(&a.hash).unwrap().unwrap(), bytes);
    assert!(store.wanted_attachments().unwrap().is_empty());
    assert_eq!(store.want_attachment(id, &a).unwrap(), None);

    // Parts that do not hash to the name: all dropped, and the file is not kept.
    let other = file_of(ATTACHMENT_PART_BYTES + 9);
    let b = attachment_of(&other);
    store.want_attachment(id, &b).unwrap();
    let mut tampered = other[ATTACHMENT_PART_BYTES..].to_vec();
    tampered[0] ^= 1;
    assert_eq!(
        store
            .store_attachment_part(&b.hash, 0, &other[..ATTACHMENT_PART_BYTES])
            .unwrap(),
        PartStored::More(1)
    );
    assert_eq!(
        store.store_attachment_part(&b.hash, 1, &tampered).unwrap(),
        PartStored::Corrupt
    );
    assert!(store.attachment_bytes(&b.hash).unwrap().is_none());
    assert_eq!(store.next_part(&b.hash).unwrap(), Some(0));
    store.drop_wanted_attachment(&b.hash).unwrap();
    assert!(store.attachment(&b.hash).unwrap().is_none());
}

/// A server restored from a backup older than a filing has the chart's entry back (a tablet
/// sent it) and not its file: the file is missing, until filed again or sent back by a
/// tablet, part by part, with what a tablet sent so far replaced by a whole filing.
#[test]
fn a_file_a_restore_lost_is_missing_until_filed_again_or_sent_back() {
    let before_place = place();
    let filed = before_place.open(StoreOptions::default()).unwrap();
    let id = filed.create(admitted()).unwrap();
    let bytes = file_of(2 * ATTACHMENT_PART_BYTES + 3);
    let (entry, a) = filed
        .file_scanned_document(&clerk_actor(), &technician(), id, t(1), consent(), &bytes)
        .unwrap();
    let other = file_of(ATTACHMENT_PART_BYTES + 1);
    let (_, b) = filed
        .file_scanned_document(&clerk_actor(), &technician(), id, t(2), consent(), &other)
        .unwrap();
    assert_eq!(filed.named_file(id, &a.hash).unwrap(), NamedFile::Here);
    let chart = filed.read(id, |c| c.fork()).unwrap();

    // The restored server: the chart (as a tablet sent it back) without its files.
    let place = place();
    let store = place.open(StoreOptions::default()).unwrap();
    store.insert(id, chart).unwrap();
    assert_eq!(
        store.named_file(id, &a.hash).unwrap(),
        NamedFile::Missing(a.clone())
    );
    assert_eq!(
        store.named_file(id, &"ab".repeat(32)).unwrap(),
        NamedFile::NotNamed
    );
    let mut missing: Vec<String> = store
        .missing_attachments(id)
        .unwrap()
        .into_iter()
        .map(|m| m.hash)
        .collect();
    missing.sort();
    let mut both = vec![a.hash.clone(), b.hash.clone()];
    both.sort();
    assert_eq!(missing, both);
    assert!(store.attachment_files(id).unwrap().is_empty());

    // Bytes the chart does not name restore nothing.
    assert_eq!(
        store
            .restore_attachment(&clerk_actor(), id, &file_of(10), "filed again")
            .unwrap(),
        None
    );
    // A tablet had sent back one part of the first when the office filed it again: the
    // whole replaces the part, and the file is here, once.
    assert_eq!(store.want_attachment(id, &a).unwrap(), Some(0));
    assert_eq!(
        store
            .store_attachment_part(&a.hash, 0, &bytes[..ATTACHMENT_PART_BYTES])
            .unwrap(),
        PartStored::More(1)
    );
    assert_eq!(
        store.named_file(id, &a.hash).unwrap(),
        NamedFile::Missing(a.clone())
    );
    assert_eq!(
        store
            .restore_attachment(&clerk_actor(), id, &bytes, "filed again")
            .unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.named_file(id, &a.hash).unwrap(), NamedFile::Here);
    assert_eq!(store.attachment_bytes(&a.hash).unwrap().unwrap(), bytes);
    assert_eq!(
        store
            .restore_attachment(&clerk_actor(), id, &bytes, "filed again")
            .unwrap(),
        None
    );
    let trail = store.audit_trail(id).unwrap();
    assert_eq!(
        trail
            .iter()
            .filter(|r| r.detail.as_deref()
                == Some(&format!("scanned document {} restored (filed again)", &a.hash[..12])[..]))
            .count(),
        1
    );
    // The second, sent back by two tablets at once: the second's copy of a part is not
    // kept twice, and its bad part costs the first's progress nothing.
    assert_eq!(store.want_attachment(id, &b).unwrap(), Some(0));
    let first_part = &other[..ATTACHMENT_PART_BYTES];
    assert_eq!(
        store.store_attachment_part(&b.hash, 0, first_part).unwrap(),
        PartStored::More(1)
    );
    assert_eq!(
        store.store_attachment_part(&b.hash, 0, first_part).unwrap(),
        PartStored::Unwanted
    );
    assert_eq!(
        store.store_attachment_part(&b.hash, 1, b"short").unwrap(),
        PartStored::Corrupt
    );
    assert_eq!(store.next_part(&b.hash).unwrap(), Some(1));
    assert_eq!(
        store
            .store_attachment_part(&b.hash, 1, &other[ATTACHMENT_PART_BYTES..])
            .unwrap(),
        PartStored::Complete
    );
    // Whole: a late or bad part changes nothing.
    assert_eq!(
        store.store_attachment_part(&b.hash, 1, b"short").unwrap(),
        PartStored::Unwanted
    );
    assert_eq!(store.attachment_bytes(&b.hash).unwrap().unwrap(), other);
    assert!(store.missing_attachments(id).unwrap().is_empty());
    assert_eq!(store.attachment_files(id).unwrap().len(), 2);
    // The entry is the one filed before the restore: nothing new was written on the chart.
    assert!(store
        .read(id, |c| c.entry(&entry).unwrap().content.attachment)
        .unwrap()
        .is_some());
    assert_eq!(
        store.read(id, |c| c.attachments().unwrap().len()).unwrap(),
        2
    );
}
