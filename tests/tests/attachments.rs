//! Scanned documents (docs/records-office.md, "Scanned documents"), end to end: a records
//! technician files a three-page consent with `chartsync-records attach` and an outside
//! report through the REST API; the server refuses what is not a document, too large, or not
//! the person's to file, and changes nothing; the chart reaches the ward tablet without the
//! files; the nurse opens one and it comes in parts, checked against its hash; the consent
//! is signed and amended, the other entered in error; and the chart's FHIR export carries
//! both as DocumentReferences with their files (validated by tests/fhir/run.sh).

mod common;

use std::time::Duration;

use base64::Engine;
use chartsync_core::chart::*;
use chartsync_core::client::{AttachmentOpened, ChartEvent, ClientConfig, SyncClient};
use chartsync_core::store::ATTACHMENT_PART_BYTES;
use common::*;
use serde_json::Value;

const CONSENT: &[u8] = include_bytes!("../fixtures/consent-3-pages.pdf");

/// A PNG whose header reads (an outside report's scan): `n` bytes, so it goes in parts.
fn scan_png(n: usize) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\x09\xb0\0\0\x0c\xe4\x08\0\0\0\0".to_vec();
    png.extend([0x3a, 0x98, 0x1b, 0x5e]);
    let mut x: u32 = 0x9e37_79b9;
    while png.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        png.push(x as u8);
    }
    png
}

/// Posts a document as the REST API takes it (multipart/form-data); (status, body).
fn post_document(
    server: &Server,
    token: &str,
    chart: ChartId,
    fields: &[(&str, &str)],
    file: &[u8],
) -> (u16, Value) {
    use ureq::unversioned::multipart::{Form, Part};
    let mut form = Form::new().part("file", Part::bytes(file).file_name("scan"));
    for (k, v) in fields {
        form = form.text(k, v);
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(format!(
            "http://{}/api/charts/{chart}/attachments",
            server.addr
        ))
        .header("Authorization", format!("Bearer {token}"))
        .send(form)
        .unwrap();
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn scanned(chart: &ChartView) -> Vec<&EntryView> {
    chart
        .entries
        .iter()
        .filter(|e| e.content.kind == EntryKind::ScannedDocument)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scanned_consent_is_filed_opened_on_the_ward_amended_and_exported() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start_with(data.path(), "127.0.0.1:0", &["--max-attachment-mib", "1"]);
    let url = format!("ws://{}/sync", server.addr);
    let pc = registration_pc(&server, &devices, &["4west"], &["MRN-7001".into()]).await;
    let chart = pc.charts[0];
    let tablet = tablet_store(&devices, "tablet");
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let mut config = ClientConfig::new(&url, &nurse, "tablet-4west-01");
    config.wards = vec!["4west".into()];
    config.backoff_min = Duration::from_millis(100);
    let client = SyncClient::start(tablet.clone(), config);
    let mut events = client.chart_events();
    eventually("the chart never reached the tablet", || {
        tablet.contains(chart).unwrap()
    })
    .await;
    let tech = server.token("him.jones", "technician", &["4west"]);

    // The consent, with the records office's command line.
    let dir = tempfile::tempdir().unwrap();
    let consent_path = dir.path().join("consent.pdf");
    std::fs::write(&consent_path, CONSENT).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-records"))
        .args([
            "--server",
            &format!("http://{}", server.addr),
            "--token",
            &tech,
        ])
        .args(["attach", &chart.to_string()])
        .arg(&consent_path)
        .args([
            "--title",
            "Consent to surgery",
            "--type",
            "consent",
            "--date",
            "2026-11-30",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("3 page(s)"), "{said}");

    // The outside report, through the REST API: 700 KB, three parts on the way to a tablet.
    let report = scan_png(700 * 1024);
    let (status, filed) = post_document(
        &server,
        &tech,
        chart,
        &[
            ("title", "Outside imaging report"),
            ("document_type", "outside_record"),
        ],
        &report,
    );
    assert_eq!(status, 201, "{filed}");
    let report_hash = filed["attachment"]["hash"].as_str().unwrap().to_string();
    assert_eq!(filed["attachment"]["media_type"], "image/png");
    assert_eq!(filed["attachment"]["size"], report.len());
    assert_eq!(report_hash, chartsync_core::store::attachment_hash(&report));

    // Refused, and nothing changes: not a document, too large, a coder, another ward's nurse.
    let before = on_server(&server, &tech, chart);
    let fields = [("title", "Scan"), ("document_type", "other")];
    let (status, body) = post_document(&server, &tech, chart, &fields, b"GIF89a not a scan");
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a PDF, JPEG or PNG"),
        "{body}"
    );
    let (status, body) = post_document(&server, &tech, chart, &fields, b"%PDF-1.7 torn in half");
    assert_eq!(status, 422, "{body}");
    let (status, body) = post_document(&server, &tech, chart, &fields, &scan_png(1536 * 1024));
    assert_eq!(status, 413, "{body}");
    let (status, body) = post_document(
        &server,
        &tech,
        chart,
        &[("title", "Scan"), ("document_type", "photograph")],
        CONSENT,
    );
    assert_eq!(status, 422, "{body}");
    let coder = server.token("cd.lee", "coder", &["4west"]);
    let (status, body) = post_document(&server, &coder, chart, &fields, CONSENT);
    assert_eq!(status, 403, "{body}");
    let elsewhere = server.token("rn.ito", "nurse", &["5east"]);
    let (status, body) = post_document(&server, &elsewhere, chart, &fields, CONSENT);
    assert_eq!(status, 403, "{body}");
    assert_eq!(on_server(&server, &tech, chart), before);

    // The chart reaches the tablet with both entries, and without their files.
    eventually("the scanned documents never reached the tablet", || {
        tablet
            .read(chart, |c| scanned(&c.view().unwrap()).len())
            .unwrap()
            == 2
    })
    .await;
    let view = tablet.read(chart, |c| c.view()).unwrap().unwrap();
    let docs = scanned(&view);
    let consent = docs
        .iter()
        .find(|e| e.content.attachment.as_ref().unwrap().document_type == DocumentType::Consent)
        .unwrap();
    let consent_file = consent.content.attachment.clone().unwrap();
    assert_eq!(consent_file.pages, 3);
    assert_eq!(consent_file.media_type, MediaType::Pdf);
    assert_eq!(consent_file.document_date.as_deref(), Some("2026-11-30"));
    assert_eq!(consent.content.author, "him.jones");
    assert!(tablet.attachment(&consent_file.hash).unwrap().is_none());
    assert!(tablet.attachment(&report_hash).unwrap().is_none());

    // The nurse opens the report: it comes in parts, then opens from the tablet's store.
    assert!(report.len() > 2 * ATTACHMENT_PART_BYTES);
    assert_eq!(
        client.open_attachment(chart, &report_hash).unwrap(),
        AttachmentOpened::Fetching
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(ChartEvent::AttachmentReady { chart: c, hash })) if c == chart => {
                assert_eq!(hash, report_hash);
                break;
            }
            Ok(Ok(ChartEvent::AttachmentFailed { reason, .. })) => panic!("failed: {reason}"),
            Ok(Ok(_)) => {}
            _ => panic!("the report never came"),
        }
    }
    assert_eq!(
        client.open_attachment(chart, &report_hash).unwrap(),
        AttachmentOpened::Here(report.clone())
    );
    // The consent was not opened: still not on the tablet.
    assert!(tablet.attachment(&consent_file.hash).unwrap().is_none());
    // A file the chart does not name is not asked for.
    assert!(client.open_attachment(chart, &"ab".repeat(32)).is_err());

    // Signed by the technician who filed it, amended at the bedside, and the report entered
    // in error (filed on the wrong patient).
    let report_entry = docs
        .iter()
        .find(|e| e.content.attachment.as_ref().unwrap().hash == report_hash)
        .unwrap()
        .id
        .clone();
    let consent_entry = consent.id.clone();
    eventually("the PC never had the documents", || {
        pc.store
            .read(chart, |c| scanned(&c.view().unwrap()).len())
            .unwrap()
            == 2
    })
    .await;
    pc.store
        .update(chart, |c| {
            c.sign_entry(&pc.clerk, at(60), &consent_entry, SignatureMeaning::Author)?;
            c.amend(
                &pc.clerk,
                at(61),
                NewAmendment {
                    target_entry_id: report_entry.clone(),
                    kind: AmendmentKind::EnteredInError,
                    reason: "filed on the wrong patient's chart".into(),
                    body: String::new(),
                },
            )
        })
        .unwrap();
    let rn = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    tablet
        .update(chart, |c| {
            c.amend(
                &rn,
                at(62),
                NewAmendment {
                    target_entry_id: consent_entry.clone(),
                    kind: AmendmentKind::Addendum,
                    reason: "consent confirmed at the bedside".into(),
                    body: "Patient confirmed consent before transfer to theatre.".into(),
                },
            )
        })
        .unwrap();
    assert!(client.wait_until_up_to_date(WAIT).await);
    assert!(pc.client.wait_until_up_to_date(WAIT).await);
    eventually("the amendments never reached the server", || {
        on_server(&server, &tech, chart)["amendments"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    })
    .await;
    let record = on_server(&server, &tech, chart);
    let entries = record["entries"].as_array().unwrap();
    let status_of = |id: &str| {
        entries.iter().find(|e| e["id"] == id).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status_of(&consent_entry), "amended");
    assert_eq!(status_of(&report_entry), "entered_in_error");

    // The records office opens the consent; every opening is in the chart's audit trail.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(format!(
            "http://{}/api/charts/{chart}/attachments/{}",
            server.addr, consent_file.hash
        ))
        .header("Authorization", format!("Bearer {tech}"))
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    assert_eq!(response.body_mut().read_to_vec().unwrap(), CONSENT);
    let (status, _) = http_get(
        &server.addr,
        &format!("/api/charts/{chart}/attachments/{}", consent_file.hash),
        Some(&elsewhere),
    );
    assert_eq!(status, 403);
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let (status, body) = http_get(
        &server.addr,
        &format!("/api/audit?chart={chart}"),
        Some(&sup),
    );
    assert_eq!(status, 200, "{body}");
    let trail: Vec<Value> = serde_json::from_str(&body).unwrap();
    let reads: Vec<&str> = trail
        .iter()
        .filter(|r| r["action"] == "read")
        .filter_map(|r| r["detail"].as_str())
        .filter(|d| d.starts_with("scanned document"))
        .collect();
    assert!(
        reads.contains(
            &format!("scanned document {} sent to the device", &report_hash[..12]).as_str()
        ),
        "{reads:?}"
    );
    assert!(
        reads.contains(&format!("scanned document {} opened", &consent_file.hash[..12]).as_str()),
        "{reads:?}"
    );

    // The FHIR export: each document a DocumentReference with its file.
    let (status, body) = http_get(
        &server.addr,
        &format!("/api/charts/{chart}/fhir"),
        Some(&tech),
    );
    assert_eq!(status, 200, "{body}");
    let bundle: Value = serde_json::from_str(&body).unwrap();
    let resources: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let scans: Vec<&&Value> = resources
        .iter()
        .filter(|r| {
            r["resourceType"] == "DocumentReference"
                && r["category"][0]["text"] == "scanned document"
        })
        .collect();
    assert_eq!(scans.len(), 2);
    let consent_ref = scans
        .iter()
        .find(|r| r["description"] == "Consent to surgery")
        .unwrap();
    assert_eq!(consent_ref["type"]["coding"][0]["code"], "59284-0");
    assert_eq!(consent_ref["status"], "current");
    assert_eq!(consent_ref["docStatus"], "amended");
    assert_eq!(
        consent_ref["identifier"][0]["value"],
        consent_file.hash.as_str()
    );
    let attachment = &consent_ref["content"][0]["attachment"];
    assert_eq!(attachment["contentType"], "application/pdf");
    assert_eq!(attachment["creation"], "2026-11-30");
    assert_eq!(attachment["size"], CONSENT.len());
    assert_eq!(attachment["extension"][0]["valuePositiveInt"], 3);
    let data = base64::engine::general_purpose::STANDARD
        .decode(attachment["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, CONSENT);
    let report_ref = scans
        .iter()
        .find(|r| r["description"] == "Outside imaging report")
        .unwrap();
    assert_eq!(report_ref["status"], "entered-in-error");
    // Filed on the wrong patient's chart: listed, without the file.
    assert!(report_ref["content"][0]["attachment"]["data"].is_null());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fhir-bundles");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("scanned-documents.json"), &body).unwrap();

    client.stop().await;
    pc.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_records_technician_files_a_scan_on_the_console_and_opens_it_there() {
    use common::console::{csrf, get, sign_in};
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let pc = registration_pc(&server, &devices, &["4west"], &["MRN-7002".into()]).await;
    let chart = pc.charts[0];
    add_staff(&server, "him.cole", "technician", &["4west"]);
    let cookie = sign_in(&server.addr, "him.cole");
    let page = get(
        &server.addr,
        &format!("/console/chart?id={chart}"),
        Some(&cookie),
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("File a scanned document"));
    let token = csrf(&page.body);

    use ureq::unversioned::multipart::{Form, Part};
    let send = |csrf: &str, origin: &str| {
        let form = Form::new()
            .text("csrf", csrf)
            .text("title", "Advance directive")
            .text("document_type", "advance_directive")
            .text("document_date", "2025-02-14")
            .part("file", Part::bytes(CONSENT).file_name("directive.pdf"));
        common::console::page(
            common::console::agent()
                .post(format!(
                    "http://{}/console/chart/attach?id={chart}",
                    server.addr
                ))
                .header("Cookie", &cookie)
                .header("Origin", origin)
                .send(form)
                .unwrap(),
        )
    };
    // A form from another site, or without the page's token, files nothing.
    let refused = send(&token, "http://elsewhere.example");
    assert_eq!(refused.status, 403, "{}", refused.body);
    let refused = send(&"0".repeat(64), &format!("http://{}", server.addr));
    assert_eq!(refused.status, 403, "{}", refused.body);
    let page = get(
        &server.addr,
        &format!("/console/chart?id={chart}"),
        Some(&cookie),
    );
    assert!(!page.body.contains("Open the scanned document"));

    let filed = send(&token, &format!("http://{}", server.addr));
    assert_eq!(filed.status, 303, "{}", filed.body);
    assert_eq!(filed.location, format!("/console/chart?id={chart}"));
    let page = get(&server.addr, &filed.location, Some(&cookie));
    assert!(page.body.contains("Advance directive"), "{}", page.body);
    assert!(
        page.body
            .contains("Open the scanned document</a> (PDF, 3 pages, 2 KB)"),
        "{}",
        page.body
    );
    let hash = chartsync_core::store::attachment_hash(CONSENT);
    let mut response = common::console::agent()
        .get(format!(
            "http://{}/console/chart/file?id={chart}&hash={hash}",
            server.addr
        ))
        .header("Cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    assert_eq!(response.body_mut().read_to_vec().unwrap(), CONSENT);
    pc.client.stop().await;
}
