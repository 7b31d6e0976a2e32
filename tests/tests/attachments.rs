//! Scanned documents (docs/records-office.md, "Scanned documents"), end to end: a records
//! technician files a three-page consent with `chartsync-records attach` and an outside
//! report through the REST API; the server refuses what is not a document, too large, or not
//! the person's to file, and changes nothing; the chart reaches the ward tablet without the
//! files; the nurse opens one and it comes in parts, checked against its hash; the consent
//! is signed and amended, the other entered in error; and the chart's FHIR export carries
//! both as DocumentReferences with their files (validated by tests/fhir/run.sh). On a slow
//! ward network that drops, a fetch resumes where it stopped; a file whose patient left the
//! ward while the tablet was offline is refused once, and not asked for again.

mod common;

use std::time::Duration;

use base64::Engine;
use chartsync_core::chart::*;
use chartsync_core::client::{AttachmentOpened, ChartEvent, ClientConfig, SyncClient};
use chartsync_core::store::{ChartStore, ATTACHMENT_PART_BYTES};
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

/// `chartsync-records --server … attach CHART FILE ARGS`, which must succeed: what it said.
fn attach_with_cli(
    server: &Server,
    token: &str,
    chart: ChartId,
    file: &[u8],
    args: &[&str],
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("document.pdf");
    std::fs::write(&path, file).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-records"))
        .args([
            "--server",
            &format!("http://{}", server.addr),
            "--token",
            token,
        ])
        .args(["attach", &chart.to_string()])
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

/// The 4west nurse's tablet, syncing with the server at `url`.
fn ward_tablet(url: &str, nurse: &str, store: &std::sync::Arc<ChartStore>) -> SyncClient {
    let mut config = ClientConfig::new(url, nurse, "tablet-4west-01");
    config.wards = vec!["4west".into()];
    config.backoff_min = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(300);
    SyncClient::start(store.clone(), config)
}

/// An HTTP client that reads refusals as answers.
fn api_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
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
    let mut response = api_agent()
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

/// Files a document through the REST API, which must take it: (its entry, its file's hash).
fn filed(
    server: &Server,
    token: &str,
    chart: ChartId,
    title: &str,
    document_type: &str,
    file: &[u8],
) -> (String, String) {
    let fields = [("title", title), ("document_type", document_type)];
    let (status, filed) = post_document(server, token, chart, &fields, file);
    assert_eq!(status, 201, "{filed}");
    assert_eq!(filed["restored"], false);
    let text = |v: &Value| v.as_str().unwrap().to_string();
    (text(&filed["entry_id"]), text(&filed["attachment"]["hash"]))
}

/// Waits until `store` has `n` scanned documents on `chart`.
async fn documents_reach(store: &ChartStore, chart: ChartId, n: usize, what: &str) {
    eventually(what, || {
        store.contains(chart).unwrap()
            && store
                .read(chart, |c| scanned(&c.view().unwrap()).len())
                .unwrap()
                == n
    })
    .await;
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
    let client = ward_tablet(&url, &nurse, &tablet);
    let mut events = client.chart_events();
    eventually("the chart never reached the tablet", || {
        tablet.contains(chart).unwrap()
    })
    .await;
    let tech = server.token("him.jones", "technician", &["4west"]);

    // The consent, with the records office's command line.
    let said = attach_with_cli(
        &server,
        &tech,
        chart,
        CONSENT,
        &[
            "--title",
            "Consent to surgery",
            "--type",
            "consent",
            "--date",
            "2026-11-30",
        ],
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
    documents_reach(
        &tablet,
        chart,
        2,
        "the scanned documents never reached the tablet",
    )
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
    fetched(&client, &mut events, chart, &report_hash).await;
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
    documents_reach(&pc.store, chart, 2, "the PC never had the documents").await;
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
    let mut response = api_agent()
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
    let server = Server::start_with(data.path(), "127.0.0.1:0", &["--max-attachment-mib", "1"]);
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
    let send_file = |csrf: &str, origin: &str, file: &[u8]| {
        let form = Form::new()
            .text("csrf", csrf)
            .text("title", "Advance directive")
            .text("document_type", "advance_directive")
            .text("document_date", "2025-02-14")
            .part("file", Part::bytes(file).file_name("directive.pdf"));
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
    let send = |csrf: &str, origin: &str| send_file(csrf, origin, CONSENT);
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

    // A scan past the server's limit (1 MiB here): refused with the reason, nothing filed.
    let refused = send_file(
        &token,
        &format!("http://{}", server.addr),
        &scan_png(1536 * 1024),
    );
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert!(
        refused.body.contains("larger than the 1 MiB"),
        "{}",
        refused.body
    );
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

/// The network between a tablet and the server, as the test makes it: slow (each 32 KiB the
/// server sends takes 25 ms, so a file's part takes a fifth of a second), and able to be cut
/// (every connection through it dropped) or taken down (none let through) at any moment.
struct Link {
    addr: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Connections let through so far.
    connections: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bytes the server sent the tablet through the link since the last [`Link::count_afresh`].
    to_tablet: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Link {
    async fn start(server: &str) -> Link {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let link = Link {
            addr: listener.local_addr().unwrap().to_string(),
            up: Default::default(),
            generation: Default::default(),
            connections: Default::default(),
            to_tablet: Default::default(),
        };
        link.up.store(true, SeqCst);
        let (up, generation, to_tablet, connections) = (
            link.up.clone(),
            link.generation.clone(),
            link.to_tablet.clone(),
            link.connections.clone(),
        );
        let server = server.to_string();
        tokio::spawn(async move {
            while let Ok((tablet, _)) = listener.accept().await {
                if !up.load(SeqCst) {
                    continue;
                }
                let Ok(upstream) = tokio::net::TcpStream::connect(&server).await else {
                    continue;
                };
                connections.fetch_add(1, SeqCst);
                let born = generation.load(SeqCst);
                let (tablet_rx, tablet_tx) = tablet.into_split();
                let (server_rx, server_tx) = upstream.into_split();
                let pump = |mut from: tokio::net::tcp::OwnedReadHalf,
                            mut to: tokio::net::tcp::OwnedWriteHalf,
                            counted: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>| {
                    let generation = generation.clone();
                    async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 32 * 1024];
                        while generation.load(SeqCst) == born {
                            let read = tokio::time::timeout(
                                Duration::from_millis(20),
                                from.read(&mut buf),
                            )
                            .await;
                            let n = match read {
                                Err(_) => continue,
                                Ok(Ok(0) | Err(_)) => break,
                                Ok(Ok(n)) => n,
                            };
                            if generation.load(SeqCst) != born || to.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            if let Some(c) = &counted {
                                c.fetch_add(n as u64, SeqCst);
                                tokio::time::sleep(Duration::from_millis(25)).await;
                            }
                        }
                    }
                };
                tokio::spawn(pump(tablet_rx, server_tx, None));
                tokio::spawn(pump(server_rx, tablet_tx, Some(to_tablet.clone())));
            }
        });
        link
    }

    /// Drops every connection through the link, and lets none through until [`Link::up`].
    fn down(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.up.store(false, SeqCst);
        self.generation.fetch_add(1, SeqCst);
    }

    fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn count_afresh(&self) {
        self.to_tablet.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn to_tablet(&self) -> u64 {
        self.to_tablet.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The app opens a file not on the tablet, and it comes.
async fn fetched(
    client: &SyncClient,
    events: &mut tokio::sync::broadcast::Receiver<ChartEvent>,
    chart: ChartId,
    hash: &str,
) {
    assert_eq!(
        client.open_attachment(chart, hash).unwrap(),
        AttachmentOpened::Fetching
    );
    match attachment_event(events, hash).await {
        ChartEvent::AttachmentReady { chart: c, .. } => assert_eq!(c, chart),
        other => panic!("{other:?}"),
    }
}

/// The app opens a file not on the tablet; the link goes down once a part of it is here.
async fn opened_then_cut(
    client: &SyncClient,
    tablet: &chartsync_core::store::ChartStore,
    link: &Link,
    chart: ChartId,
    hash: &str,
) {
    assert_eq!(
        client.open_attachment(chart, hash).unwrap(),
        AttachmentOpened::Fetching
    );
    eventually("no part of the file came", || {
        tablet.next_part(hash).unwrap().is_some_and(|n| n >= 1)
    })
    .await;
    link.down();
}

/// The next attachment event about `hash`, within the test's wait.
async fn attachment_event(
    events: &mut tokio::sync::broadcast::Receiver<ChartEvent>,
    hash: &str,
) -> ChartEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(e)) => match &e {
                ChartEvent::AttachmentReady { hash: h, .. }
                | ChartEvent::AttachmentFailed { hash: h, .. }
                    if h == hash =>
                {
                    return e
                }
                _ => {}
            },
            other => panic!("no word of the file: {other:?}"),
        }
    }
}

/// A nurse opens a long outside record on a slow ward network that drops mid-file; the
/// tablet app is restarted; on the next connection the file resumes from the first part
/// missing, not from the start, and opens whole. Another file is half fetched when the
/// tablet goes offline and, meanwhile, its patient is transferred off the ward: back
/// online, the tablet is told once that the file is not its to have, drops what it had of
/// it, and asks no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_cut_off_mid_fetch_resumes_and_one_whose_patient_left_the_ward_is_refused_once() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let pc = registration_pc(
        &server,
        &devices,
        &["4west"],
        &["MRN-7101".into(), "MRN-7102".into()],
    )
    .await;
    let (stays, moves) = (pc.charts[0], pc.charts[1]);
    let tech = server.token("him.jones", "technician", &["4west"]);
    let fields = [
        ("title", "Outside cardiology records"),
        ("document_type", "outside_record"),
    ];
    let long = scan_png(5 * ATTACHMENT_PART_BYTES + 1000);
    let (_, long_hash) = filed(&server, &tech, stays, fields[0].1, fields[1].1, &long);
    let other = scan_png(3 * ATTACHMENT_PART_BYTES + 10);
    let (_, other_hash) = filed(&server, &tech, moves, fields[0].1, fields[1].1, &other);

    let link = Link::start(&server.addr).await;
    let tablet = tablet_store(&devices, "tablet");
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let start = || ward_tablet(&format!("ws://{}/sync", link.addr), &nurse, &tablet);
    let client = start();
    for id in [stays, moves] {
        documents_reach(&tablet, id, 1, "the documents never reached the tablet").await;
    }

    // The long record: the network drops after its first part, and the app is restarted.
    opened_then_cut(&client, &tablet, &link, stays, &long_hash).await;
    client.stop().await;
    let had = tablet.next_part(&long_hash).unwrap().expect("cut mid-file");
    assert!((1..6).contains(&had), "{had} parts of 6 before the cut");
    assert!(tablet.attachment_bytes(&long_hash).unwrap().is_none());

    // Restarted and back online: the rest of the file only, then it opens whole.
    link.count_afresh();
    link.up();
    let client = start();
    let mut events = client.chart_events();
    match attachment_event(&mut events, &long_hash).await {
        ChartEvent::AttachmentReady { chart, .. } => assert_eq!(chart, stays),
        other => panic!("{other:?}"),
    }
    let rest = long.len() as u64 - had as u64 * ATTACHMENT_PART_BYTES as u64;
    assert!(
        link.to_tablet() < rest + ATTACHMENT_PART_BYTES as u64 / 2,
        "{} bytes came for the {rest} left of the file",
        link.to_tablet()
    );
    assert_eq!(
        client.open_attachment(stays, &long_hash).unwrap(),
        AttachmentOpened::Here(long.clone())
    );

    // The other file: half fetched when the tablet goes offline.
    opened_then_cut(&client, &tablet, &link, moves, &other_hash).await;
    assert!(tablet.attachment_bytes(&other_hash).unwrap().is_none());
    // Meanwhile the patient is transferred to another ward.
    pc.store
        .update(moves, |c| {
            c.transfer(&pc.clerk, Timestamp::now(), "5east", Some("12"))
        })
        .unwrap();
    assert!(pc.client.wait_until_up_to_date(WAIT).await);
    link.up();
    match attachment_event(&mut events, &other_hash).await {
        ChartEvent::AttachmentFailed { chart, reason, .. } => {
            assert_eq!(chart, moves);
            assert_eq!(reason, "not_permitted");
        }
        other => panic!("{other:?}"),
    }
    // What it had of the file is gone, and nothing is asked for again, on this connection or
    // the next.
    assert!(tablet.wanted_attachments().unwrap().is_empty());
    assert!(tablet.attachment(&other_hash).unwrap().is_none());
    assert!(client.wait_until_up_to_date(WAIT).await);
    let before = link.connections();
    link.down();
    link.up();
    eventually("the tablet never connected again", || {
        link.connections() > before
    })
    .await;
    assert!(client.wait_until_up_to_date(WAIT).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(
                e,
                ChartEvent::AttachmentFailed { .. } | ChartEvent::AttachmentReady { .. }
            ),
            "{e:?}"
        );
    }
    // The long record stays on the tablet with its chart.
    assert_eq!(tablet.attachment_bytes(&long_hash).unwrap().unwrap(), long);
    client.stop().await;
}

/// A file through the REST API: (status, bytes).
fn download(server: &Server, token: &str, chart: ChartId, hash: &str) -> (u16, Vec<u8>) {
    let mut response = api_agent()
        .get(format!(
            "http://{}/api/charts/{chart}/attachments/{hash}",
            server.addr
        ))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_vec().unwrap())
}

/// The server is restored from last night's backup, taken before two documents were filed
/// this morning. The tablets send the chart's entries back, as for any change, but files
/// travel only on demand: the tablet where the nurse opened the outside report sends its
/// file back on its own; the consent, opened nowhere, is shown on the console as missing,
/// and a nurse opening it is told so, until the technician files the same PDF again — back
/// under the same entry, with no new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_a_restore_lost_come_back_from_the_tablet_that_has_them_or_are_filed_again() {
    use common::console::{get, sign_in};
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    // A fixed port, so that the restarted server is where the tablets look for it.
    let addr = fixed_addr();
    let server = Server::start_on(data.path(), &addr);
    let pc = registration_pc(&server, &devices, &["4west"], &["MRN-7201".into()]).await;
    let chart = pc.charts[0];
    let tablet = tablet_store(&devices, "tablet");
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let client = ward_tablet(&format!("ws://{addr}/sync"), &nurse, &tablet);
    let mut events = client.chart_events();
    eventually("the chart never reached the tablet", || {
        tablet.contains(chart).unwrap()
    })
    .await;

    // Last night's backup.
    let backup = backups.path().join("charts-backup.db");
    back_up(data.path(), &backup);

    // This morning: an outside report and a consent filed; the nurse opens the report.
    let tech = server.token("him.jones", "technician", &["4west"]);
    let report = scan_png(ATTACHMENT_PART_BYTES + 4000);
    let (_, report_hash) = filed(
        &server,
        &tech,
        chart,
        "Outside report",
        "outside_record",
        &report,
    );
    let (consent_entry, consent_hash) = filed(
        &server,
        &tech,
        chart,
        "Consent to transfusion",
        "consent",
        CONSENT,
    );
    documents_reach(&tablet, chart, 2, "the documents never reached the tablet").await;
    assert!(pc.client.wait_until_up_to_date(WAIT).await);
    fetched(&client, &mut events, chart, &report_hash).await;

    // The server's disk fails: restored from last night's backup.
    let (_, server) = restored(server, data.path(), &backup).await;

    // The entries come back from the tablets; the report's file from the nurse's tablet.
    eventually("the entries never came back", || {
        let (status, body) = http_get(&addr, &format!("/api/charts/{chart}"), Some(&tech));
        status == 200 && body.contains(&consent_entry)
    })
    .await;
    eventually("the report's file never came back", || {
        download(&server, &tech, chart, &report_hash) == (200, report.clone())
    })
    .await;
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let (status, body) = http_get(&addr, &format!("/api/audit?chart={chart}"), Some(&sup));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!(
            "scanned document {} restored (sent back by the device)",
            &report_hash[..12]
        )),
        "{body}"
    );

    // The consent's file is nowhere: the office sees it, and a nurse is told.
    let (status, body) = download(&server, &tech, chart, &consent_hash);
    assert_eq!(status, 404);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("filed after the backup"), "{body}");
    add_staff(&server, "him.cole", "technician", &["4west"]);
    let cookie = sign_in(&server.addr, "him.cole");
    let page = get(&addr, &format!("/console/chart?id={chart}"), Some(&cookie));
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.body
            .matches("The file of this document is not on the server")
            .count(),
        1,
        "{}",
        page.body
    );
    assert_eq!(page.body.matches("Open the scanned document").count(), 1);
    assert_eq!(
        client.open_attachment(chart, &consent_hash).unwrap(),
        AttachmentOpened::Fetching
    );
    match attachment_event(&mut events, &consent_hash).await {
        ChartEvent::AttachmentFailed { reason, .. } => assert_eq!(reason, "missing"),
        other => panic!("{other:?}"),
    }

    // Filed again from the paper, with the command line: the file is back, under the same
    // entry, and the chart has no new one.
    let said = attach_with_cli(
        &server,
        &tech,
        chart,
        CONSENT,
        &["--title", "Consent to transfusion", "--type", "consent"],
    );
    assert!(
        said.contains(&format!("the file restored, of entry {consent_entry}")),
        "{said}"
    );
    assert_eq!(
        download(&server, &tech, chart, &consent_hash),
        (200, CONSENT.to_vec())
    );
    let view: ChartView = serde_json::from_value(on_server(&server, &tech, chart)).unwrap();
    assert_eq!(scanned(&view).len(), 2);
    let (_, body) = http_get(&addr, &format!("/api/audit?chart={chart}"), Some(&sup));
    assert!(
        body.contains(&format!(
            "scanned document {} restored (filed again)",
            &consent_hash[..12]
        )),
        "{body}"
    );
    let page = get(&addr, &format!("/console/chart?id={chart}"), Some(&cookie));
    assert!(!page.body.contains("not on the server"), "{}", page.body);
    fetched(&client, &mut events, chart, &consent_hash).await;
    // Filed once more: the server has the file now, so this is a new filing, as any.
    filed(
        &server,
        &tech,
        chart,
        "Consent to transfusion, copy",
        "consent",
        CONSENT,
    );
    client.stop().await;
}
