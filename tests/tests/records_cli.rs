//! `chartsync-records`, as the records office runs it: importing a night's admissions from the
//! old system (all or nothing, with the line that is wrong), listing deficiencies, exporting
//! FHIR and the accounting of disclosures from the store or through a running server, and
//! compacting and verifying the store.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use chartsync_core::chart::*;
use chartsync_core::store::ChartStore;
use common::*;

const RECORDS: &str = env!("CARGO_BIN_EXE_e2e-records");

/// `chartsync-records` on the store of the data directory `data`: its database, when the
/// suite runs on PostgreSQL and the directory is a server's (a mistyped one has none).
fn records(data: &Path, args: &[&str]) -> Output {
    let database = data.exists().then(|| test_database(data)).flatten();
    Command::new(RECORDS)
        .arg("--data-dir")
        .arg(data)
        .args(database.map(|url| format!("--database-url={url}")))
        .args(["--user", "him.jones"])
        .args(args)
        .env_remove("CHARTSYNC_TOKEN")
        .env("CHARTSYNC_STORE_KEY", STORE_KEY)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An admission as the old system's export writes it, one per line.
fn admission(mrn: &str, bed: &str, admitted: &str) -> String {
    serde_json::json!({
        "patient": {
            "mrn": mrn,
            "family_name": "Rivera",
            "given_names": "Ana",
            "birth_date": "1957-03-14",
            "sex": "female"
        },
        "encounter": {
            "ward": "4west",
            "bed": bed,
            "class": "inpatient",
            "attending": "dr.okafor"
        },
        "admitted_at": admitted
    })
    .to_string()
}

/// A saved chart, as another store exports it, in which a signed note was edited afterwards
/// by a client that ignored the rules.
fn saved_chart_signed_then_edited() -> String {
    use automerge::transaction::Transactable;
    use automerge::ReadDoc;
    use base64::Engine;
    let mut chart = admit();
    let doctor = Staff::new("dr.okafor", Role::Physician, "tablet-4west-01");
    let note = chart
        .add_entry(
            &doctor,
            at(5),
            NewEntry::note(EntryKind::ProgressNote, "Stable."),
        )
        .unwrap();
    chart
        .sign_entry(&doctor, at(6), &note, SignatureMeaning::Author)
        .unwrap();
    let mut doc = chart.doc().clone();
    let mut tx = doc.transaction();
    let entries = tx.get(automerge::ROOT, "entries").unwrap().unwrap().1;
    let entry = tx.get(&entries, note.as_str()).unwrap().unwrap().1;
    let body = tx.get(&entry, "body").unwrap().unwrap().1;
    tx.splice_text(&body, 0, 0, "NOT ").unwrap();
    tx.commit();
    let bytes = doc.save();
    serde_json::json!({
        "id": ChartId::random().to_string(),
        "automerge": base64::engine::general_purpose::STANDARD.encode(bytes),
    })
    .to_string()
}

/// A data directory with two patients imported from the old system, admitted on 1 and 2
/// November.
fn two_admissions(first: (&str, &str), second: (&str, &str)) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("admissions.ndjson");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            admission(first.0, first.1, "2026-11-01T10:00:00Z"),
            admission(second.0, second.1, "2026-11-02T10:00:00Z")
        ),
    )
    .unwrap();
    let out = records(data.path(), &["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    data
}

fn open(data: &Path) -> ChartStore {
    open_server_store(data)
}

#[test]
fn a_nights_admissions_import_all_or_nothing_and_a_bad_line_is_named() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("admissions.ndjson");
    let good = [
        admission("MRN-1001", "01A", "2026-11-29T22:10:00Z"),
        admission("MRN-1002", "01B", "2026-11-29T23:40:00Z"),
    ];
    // Line 3 has an MRN with a space in it; line 4 would have been fine.
    let bad = admission("MRN 1003", "02A", "2026-11-30T01:05:00Z");
    let fourth = admission("MRN-1004", "02B", "2026-11-30T02:30:00Z");
    std::fs::write(
        &file,
        format!("{}\n{}\n{bad}\n{fourth}\n", good[0], good[1]),
    )
    .unwrap();
    let out = records(data.path(), &["import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("mrn"), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
    assert!(
        !err.contains("MRN 1003") && !err.contains("Rivera"),
        "{err}"
    );
    assert!(open(data.path())
        .list(&Default::default())
        .unwrap()
        .is_empty());

    // Other mistakes, each named by its line and what is wrong, none echoing the data.
    for (content, line, says) in [
        (format!("{}\n{{\"patient\": ", good[0]), 2, "not JSON"),
        (
            good[0].replace("\"family_name\"", "\"surname\""),
            1,
            "unknown field `surname`",
        ),
        (
            good[0].replace("\"female\"", "\"femal\""),
            1,
            "unknown value",
        ),
        (
            good[0].replace("2026-11-29T22:10:00Z", "29/11/2026 22:10"),
            1,
            "not an RFC 3339 timestamp",
        ),
        (
            format!("[\n  {},\n  {}\n  {}\n]", good[0], good[1], fourth),
            4,
            "not a JSON array",
        ),
        (format!("{}\n{}\n", good[0], good[0]), 2, "also on line 1"),
        (
            good[0].replace("\"bed\":\"01A\"", "\"bed\":7"),
            1,
            "encounter.bed: wrong type, expected a string",
        ),
        (
            saved_chart_signed_then_edited(),
            1,
            "the chart breaks its rules (1 problem): change ",
        ),
    ] {
        std::fs::write(&file, &content).unwrap();
        let out = records(data.path(), &["import", file.to_str().unwrap()]);
        assert!(!out.status.success(), "{content}");
        let err = stderr(&out);
        assert!(err.contains(&format!("line {line}:")), "{err}");
        assert!(err.contains(says), "{says}: {err}");
        assert!(!err.contains("femal\"") && !err.contains("29/11"), "{err}");
        if says.starts_with("the chart breaks") {
            assert!(
                err.contains("after it was signed"),
                "which record, and what: {err}"
            );
        }
    }
    assert!(open(data.path())
        .list(&Default::default())
        .unwrap()
        .is_empty());

    // A JSON array of the good ones goes in whole, and is audited as the technician's.
    std::fs::write(
        &file,
        format!("[\n  {},\n  {},\n  {}\n]\n", good[0], good[1], fourth),
    )
    .unwrap();
    let out = records(data.path(), &["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("imported 3 charts"),
        "{}",
        stderr(&out)
    );
    let store = open(data.path());
    let charts = store.census("4west").unwrap();
    assert_eq!(charts.len(), 3);
    let trail = store.audit_trail(charts[0].id).unwrap();
    assert!(trail
        .iter()
        .any(|r| r.actor.user == "him.jones"
            && r.action == chartsync_core::store::AuditAction::Create));
    drop(store);

    // The same file again: the admissions are already there, and nothing is doubled.
    let out = records(data.path(), &["import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 2:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("already in this store"));
    assert_eq!(open(data.path()).census("4west").unwrap().len(), 3);

    // While a server runs on the directory, imports wait for it to stop.
    let server = Server::start(data.path());
    let out = records(data.path(), &["import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("running chartsync-server"),
        "{}",
        stderr(&out)
    );
    server.stop();
}

#[test]
fn the_records_office_reads_deficiencies_fhir_and_accountings_from_the_store_or_the_server() {
    let data = two_admissions(("MRN-2001", "03A"), ("MRN-2002", "03B"));
    // A disclosure to public health on the first, written as the technician would.
    let store = open(data.path());
    let first = store.charts_of_patient("MRN-2001").unwrap()[0].id;
    store
        .update(first, |c| {
            c.record_disclosure(
                &Staff::new("him.jones", Role::Technician, "records-pc-1"),
                Timestamp::parse("2026-11-05T09:00:00Z").unwrap(),
                NewDisclosure {
                    request_id: None,
                    recipient: "County Health Dept".into(),
                    recipient_address: "1 Main St".into(),
                    description: "Case report".into(),
                    purpose: DisclosurePurpose::PublicHealth,
                },
            )
        })
        .unwrap();
    drop(store);

    // From the store: both admissions lack an H&P, long overdue.
    let out = records(
        data.path(),
        &["deficiencies", "--ward", "4west", "--overdue"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert_eq!(
        table.matches("history_physical_missing").count(),
        2,
        "{table}"
    );
    assert!(table.contains("OVERDUE") && table.contains("MRN-2001"));
    let out = records(data.path(), &["deficiencies", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["deficiencies"].as_array().unwrap().len(), 2);

    let bundle_path = data.path().join("chart.json");
    let out = records(
        data.path(),
        &[
            "export-fhir",
            &first.to_string(),
            "-o",
            bundle_path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&bundle_path).unwrap()).unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fhir-bundles");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::copy(&bundle_path, kept.join("cli-export.json")).unwrap();
    // A mistyped data directory: said so, and nothing is made there.
    let nowhere = data.path().join("no-such-dir");
    let out = records(&nowhere, &["verify"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no store here"), "{}", stderr(&out));
    assert!(!nowhere.exists());
    let out = records(data.path(), &["export-fhir", "not-a-chart"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a chart id"));

    let out = records(data.path(), &["accounting", "--mrn", "MRN-2001", "--csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = stdout(&out);
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.contains("County Health Dept,1 Main St,Case report,public_health"));

    // Through a running server, with a token: the same answers, and its rules.
    let server = Server::start(data.path());
    let url = format!("http://{}", server.addr);
    let supervisor = server.token("him.sup", "records_supervisor", &["*"]);
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let remote = |token: &str, args: &[&str]| {
        let mut all = vec!["--server", url.as_str(), "--token", token];
        all.extend_from_slice(args);
        records(data.path(), &all)
    };
    let out = remote(&supervisor, &["deficiencies", "--ward", "4west", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["deficiencies"].as_array().unwrap().len(), 2);
    let out = remote(&supervisor, &["accounting", "--mrn", "MRN-2001", "--csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), csv.trim());
    let out = remote(&nurse, &["accounting", "--mrn", "MRN-2001"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the server answered 403"),
        "{}",
        stderr(&out)
    );
    let out = remote(&supervisor, &["export-fhir", &first.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        exported["entry"], bundle["entry"],
        "the same chart, the same bundle"
    );
    let out = remote(&nurse, &["export-fhir", &first.to_string()]);
    assert!(
        stderr(&out).contains("the server answered 403"),
        "{}",
        stderr(&out)
    );
    let out = remote(&supervisor, &["verify"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--data-dir"));
    server.stop();
}

#[test]
fn compact_and_verify_report_what_they_did_and_a_damaged_index_is_found() {
    let data = two_admissions(("MRN-3001", "04A"), ("MRN-3002", "04B"));
    let store = open(data.path());
    let id = store.census("4west").unwrap()[0].id;
    for n in 0..20 {
        store
            .update(id, |c| {
                c.add_entry(
                    &Staff::new("rn.park", Role::Nurse, "tablet-4west-02"),
                    Timestamp::parse("2026-11-01T12:00:00Z")
                        .unwrap()
                        .plus_seconds(n * 60),
                    heart_rate(70 + n as u32),
                )
            })
            .unwrap();
    }
    drop(store);

    let out = records(data.path(), &["compact"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("compacted 2 charts: 20 changes folded"),
        "{}",
        stderr(&out)
    );
    let out = records(data.path(), &["verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("2 charts load and agree"));
    let readings = open(data.path())
        .read(id, |c| c.view().unwrap().entries.len())
        .unwrap();
    assert_eq!(readings, 20, "compaction kept every observation");

    // Someone deletes the chart's deficiency rows by hand: verify names the chart.
    server_execute(
        data.path(),
        "DELETE FROM deficiencies WHERE chart = (SELECT key FROM charts WHERE id = ?1)",
        &[&id.to_string()],
    );
    let out = records(data.path(), &["verify"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&id.to_string()) && err.contains("deficiency index"),
        "{err}"
    );
    assert!(err.contains("1 problem found in 2 charts"), "{err}");
}

/// Someone with the file rewrites an audit row to hide a read: `verify` names the row and
/// fails, and until then it reports the chain whole, with its last link to note elsewhere.
#[test]
fn verify_finds_an_audit_row_edited_in_place() {
    let data = two_admissions(("MRN-3101", "05A"), ("MRN-3102", "05B"));
    let out = records(data.path(), &["verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rows, chained, ending in "),
        "{}",
        stderr(&out)
    );
    let seq: i64 = server_rows(data.path(), "SELECT min(seq) FROM audit_events", &[])[0][0]
        .parse()
        .unwrap();
    server_execute(
        data.path(),
        &format!("UPDATE audit_events SET \"user\" = 'nobody' WHERE seq = {seq}"),
        &[],
    );
    let out = records(data.path(), &["verify"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("the audit trail was changed at row {seq}")),
        "{err}"
    );
}

/// A restore from a file that is not a backup (a truncated copy, another application's
/// database) is refused with a clear error, and the store, its `restored` marker and
/// everything in the data directory stay as they were; a backup of a foreign file is refused
/// too, and writes nothing.
#[test]
fn a_restore_from_a_damaged_or_foreign_file_is_refused_and_changes_nothing() {
    let data = two_admissions(("MRN-1", "1A"), ("MRN-2", "2A"));
    let before = std::fs::read(data.path().join("charts.db")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();

    let truncated = elsewhere.path().join("truncated.db");
    std::fs::write(&truncated, &before[..before.len() / 3]).unwrap();
    let foreign = elsewhere.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    for bad in [&truncated, &foreign] {
        let out = records(data.path(), &["restore", bad.to_str().unwrap()]);
        assert!(!out.status.success(), "{}", stdout(&out));
        assert!(
            stderr(&out).contains("not restored, the store is as it was"),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            std::fs::read(data.path().join("charts.db")).unwrap(),
            before
        );
        assert!(!data.path().join("restored").exists());
        assert!(
            !data.path().join("charts.db.restoring").exists(),
            "no copy left behind"
        );
    }
    assert_eq!(open(data.path()).stats().unwrap().charts, 2);

    // A backup of a foreign database: refused, nothing written.
    let foreign_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&foreign, foreign_dir.path().join("charts.db")).unwrap();
    let to = elsewhere.path().join("backup.db");
    let out = records(foreign_dir.path(), &["backup", to.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(!to.exists() && !elsewhere.path().join("backup.db.partial").exists());
}

/// What a records technician types at the command line: an export saved with a byte-order
/// mark imports; filters by kind and responsible as the REST API has them; a mistyped kind,
/// ward or MRN is an error that says so, not an empty answer; and `deficiencies | head` stops
/// quietly.
#[test]
fn the_worklist_filters_and_a_mistyped_ward_kind_or_mrn_is_told_not_answered_empty() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("admissions.ndjson");
    std::fs::write(
        &file,
        format!(
            "\u{feff}{}",
            [
                admission("MRN-0001", "12A", "2026-11-01T08:00:00Z"),
                admission("MRN-0002", "12B", "2026-11-02T08:00:00Z"),
            ]
            .join("\r\n")
        ),
    )
    .unwrap();
    let out = records(data.path(), &["import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = records(
        data.path(),
        &[
            "deficiencies",
            "--kind",
            "history_physical_missing",
            "--responsible",
            "dr.okafor",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        list["deficiencies"].as_array().unwrap().len(),
        2,
        "the attending's two missing H&Ps"
    );
    let out = records(
        data.path(),
        &["deficiencies", "--responsible", "dr.adeyemi", "--json"],
    );
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(list["deficiencies"].as_array().unwrap().is_empty());

    let out = records(data.path(), &["deficiencies", "--kind", "missing_hp"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no deficiency kind \"missing_hp\"")
            && stderr(&out).contains("history_physical_missing"),
        "{}",
        stderr(&out)
    );
    let out = records(data.path(), &["deficiencies", "--ward", "4wset"]);
    assert!(
        !out.status.success(),
        "a mistyped ward gave an answer: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("no chart in this store is on ward \"4wset\" (the wards are: 4west)"),
        "{}",
        stderr(&out)
    );
    let out = records(data.path(), &["accounting", "--mrn", "MRN-0009"]);
    assert!(
        !out.status.success(),
        "an accounting of a mistyped MRN: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("no chart in this store has MRN MRN-0009"),
        "{}",
        stderr(&out)
    );

    // The reader goes away before the table is written: no error, no "Broken pipe".
    let mut child = Command::new(RECORDS)
        .arg("--data-dir")
        .arg(data.path())
        .args(test_database(data.path()).map(|url| format!("--database-url={url}")))
        .args(["--user", "him.jones", "deficiencies"])
        .env_remove("CHARTSYNC_TOKEN")
        .env("CHARTSYNC_STORE_KEY", STORE_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}
