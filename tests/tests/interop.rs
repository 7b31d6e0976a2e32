//! automerge-repo 2.5 in Node (pinned by tests/interop/package-lock.json; `bash
//! scripts/test.sh` installs it), as a client of our server and as a server for our device
//! client: charts written from docs/chart-schema.md alone, with edits flowing both ways.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chartsync_core::chart::*;
use chartsync_core::client::{ClientConfig, SyncClient};
use common::*;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// One of the Node scripts in tests/interop, and the lines it prints.
struct Node {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Node {
    fn run(script: &str, args: &[String]) -> Node {
        let dir = interop_dir();
        assert!(
            dir.join("node_modules/@automerge/automerge-repo").is_dir(),
            "the JavaScript packages are missing: run `bash scripts/test.sh` (it installs them in tests/interop)"
        );
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is needed for the interoperability test");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Node { child, lines }
    }

    /// The rest of the next line that starts with `prefix` (60 s at most).
    async fn expect(&mut self, prefix: &str) -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no {prefix} from the Node script"))
                .unwrap_or_else(|| panic!("the Node script exited before {prefix}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
            assert!(!line.starts_with("TIMEOUT"), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automerge_repo_client_and_our_tablet_share_a_chart() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let clerk = server.token("him.jones", "technician", &["4west"]);
    let mut node = Node::run(
        "interop.mjs",
        &[format!("ws://{}/sync", server.addr), clerk],
    );

    // The chart it made, fetched by our device client.
    let id: ChartId = node.expect("CREATED").await.parse().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let store = tablet_store(&devices, "tablet");
    let mut config = ClientConfig::new(
        format!("ws://{}/sync", server.addr),
        server.token("rn.park", "nurse", &["4west"]),
        "tablet-4west-01",
    );
    config.wards = vec!["4west".into()];
    let client = SyncClient::start(store.clone(), config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !store.contains(id).unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the JavaScript chart never reached the tablet"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = store.read(id, |c| c.view().unwrap()).unwrap();
    assert_eq!(view.patient.mrn, "MRN-7001");
    assert_eq!(view.encounter.ward, "4west");

    // Our nurse records an observation; the JavaScript client sees it.
    let nurse = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    store
        .update(id, |c| {
            c.add_entry(
                &nurse,
                Timestamp::now(),
                NewEntry {
                    kind: EntryKind::Observation,
                    shift: Some(Shift::Night),
                    effective_at: None,
                    codes: vec![],
                    value: Some("38.4".into()),
                    unit: Some("Cel".into()),
                    body: "Temp axillary".into(),
                },
            )
        })
        .unwrap();
    assert_eq!(node.expect("SAW_ENTRY").await, "38.4");

    // Its change of phone number reaches our tablet.
    node.expect("CHANGED").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let phone = store.read(id, |c| c.patient().unwrap().phone).unwrap();
        if phone.as_deref() == Some("555-0199") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the JavaScript edit never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.stop().await;
    let status = node.child.wait().unwrap();
    assert!(status.success(), "the JavaScript client failed: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_tablet_syncs_with_automerge_repos_own_server() {
    let mut node = Node::run("serve.mjs", &[]);
    let port = node.expect("LISTENING").await;
    let id: ChartId = node.expect("CHART").await.parse().unwrap();

    let devices = tempfile::tempdir().unwrap();
    let store = tablet_store(&devices, "tablet");
    // automerge-repo's server takes no token; ours sends one anyway.
    let client = SyncClient::start(
        store.clone(),
        ClientConfig::new(
            format!("ws://127.0.0.1:{port}"),
            "no-token-needed",
            "tablet-5east-01",
        ),
    );
    client.fetch(id);
    assert!(
        client.wait_until_up_to_date(Duration::from_secs(60)).await,
        "{:?}",
        client.status().borrow()
    );
    assert_eq!(
        store.read(id, |c| c.patient().unwrap().mrn).unwrap(),
        "MRN-8002"
    );

    let nurse = Staff::new("rn.haddad", Role::Nurse, "tablet-5east-01");
    store
        .update(id, |c| {
            c.add_entry(
                &nurse,
                Timestamp::now(),
                NewEntry {
                    kind: EntryKind::Observation,
                    shift: Some(Shift::Day),
                    effective_at: None,
                    codes: vec![],
                    value: Some("96".into()),
                    unit: Some("%".into()),
                    body: "SpO2 on room air".into(),
                },
            )
        })
        .unwrap();
    assert_eq!(node.expect("SAW_ENTRY").await, "96");
    client.stop().await;
    assert!(node.child.wait().unwrap().success());
}

/// An automerge-repo 2.5.6 app breaks a rule on one chart (it rewrites an MRN): the server
/// holds that change, the app hears which chart and why as an `ephemeral-message` on the
/// chart's handle, and its other chart goes on syncing over the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automerge_repo_client_hears_a_per_chart_refusal_and_carries_on() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let clerk = server.token("him.jones", "technician", &["4west"]);
    let mut node = Node::run(
        "held.mjs",
        &[format!("ws://{}/sync", server.addr), clerk.clone()],
    );
    let created = node.expect("CREATED").await;
    let (held, other) = created.split_once(' ').unwrap();
    let (held, other): (ChartId, ChartId) = (held.parse().unwrap(), other.parse().unwrap());

    let notice: serde_json::Value = serde_json::from_str(&node.expect("HELD").await).unwrap();
    assert_eq!(notice["type"], "chartsync/held");
    assert_eq!(notice["reason"], "breaks_chart_rules");
    assert!(notice["hold"].as_i64().unwrap() > 0);
    node.expect("CHANGED").await;

    let chart = |id: ChartId| {
        let (status, body) = http_get(&server.addr, &format!("/api/charts/{id}"), Some(&clerk));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while chart(other)["patient"]["phone"] != "555-0142" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other chart stopped syncing after the refusal"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        chart(held)["patient"]["mrn"],
        "MRN-7101",
        "the MRN was not rewritten"
    );
    assert_eq!(
        server.metric("connections_opened_total"),
        1.0,
        "the app stayed on one connection"
    );
    assert!(node.child.wait().unwrap().success());
}

/// A chart whose history is larger than one outgoing message (here 16 KiB) reaches an
/// automerge-repo 2.5.6 app whole: the server sends it in several sync messages, each a
/// complete automerge message of whole changes, and the app's automerge takes them as they
/// come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automerge_repo_client_gets_a_chart_sent_in_several_messages_whole() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        data.path(),
        "127.0.0.1:0",
        &["--max-outgoing-message-kib", "16"],
    );
    let clerk = server.token("him.jones", "technician", &["4west"]);
    let devices = tempfile::tempdir().unwrap();
    let store = tablet_store(&devices, "tablet");
    let id = store.create(admit()).unwrap();
    let url = format!("ws://{}/sync", server.addr);
    let c = client(url.clone(), &clerk, "records-pc-1", &store);
    assert!(
        c.wait_until_up_to_date(WAIT).await,
        "{:?}",
        c.status().borrow()
    );
    c.stop().await;
    let nurse = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
    for n in 0..12 {
        store
            .update(id, |c| {
                c.add_entry(&nurse, at(n), long_note(8_000, n as u64 + 1))
            })
            .unwrap();
    }
    let size = store.read(id, |c| c.doc().save().len()).unwrap();
    assert!(
        size > 2 * 16 * 1024,
        "{size} bytes: not larger than two messages"
    );
    let nurse_token = server.token("rn.park", "nurse", &["4west"]);
    let c = client(url.clone(), &nurse_token, "tablet-4west-01", &store);
    assert!(
        c.wait_until_up_to_date(WAIT).await,
        "{:?}",
        c.status().borrow()
    );
    c.stop().await;
    let sent_before = server.metric("messages_sent_total");
    let mut node = Node::run("find.mjs", &[url, clerk, id.to_string(), "12".into()]);
    assert_eq!(node.expect("FOUND").await, "12");
    assert!(node.child.wait().unwrap().success());
    assert!(
        server.metric("messages_sent_total") - sent_before >= 3.0,
        "the chart went in one message"
    );
}
