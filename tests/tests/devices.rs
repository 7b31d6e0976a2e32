//! Shared ward tablets (docs/adr/0008-shared-tablets.md): an administrator keeps the staff
//! directory and enrols a tablet with a one-time code; each nurse signs in on the tablet once
//! online and gets a certificate for a key that then stays on the tablet sealed under her PIN;
//! offline, she signs in with the PIN, and every change she makes carries her proof, which the
//! server checks before the change reaches the record. Revocations and directory changes take
//! certificates away; what they would have let through is held for review.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chartsync_core::chart::*;
use chartsync_core::client::SyncState;
use chartsync_core::protocol::HoldReason;
use chartsync_core::tablet::{EnrolResponse, SignInResponse, Tablet, TabletError};
use chartsync_core::trust::{DeviceKey, KdfParams, SignedCertificate};
use common::*;
use serde_json::{json, Value};

#[test]
fn a_nurse_signs_in_on_an_enrolled_tablet_and_her_certificate_names_her_the_tablet_and_their_wards()
{
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    add_staff(&server, "rn.park", "nurse", &["4west", "5east"]);
    let code = enrolment_code(&server, "T-07", "4west");
    assert_eq!(code.len(), 14, "{code}");

    // The tablet enrols with the code, typed as a person would.
    let secret = [7u8; 32];
    let (status, answer) = enrol(&server, &secret, &code.to_lowercase());
    assert_eq!(status, 200, "{answer}");
    let device = DeviceKey::from_secret(&secret).unwrap();
    assert_eq!(answer["device"], device.id().to_string());
    assert_eq!(
        (answer["label"].as_str(), &answer["wards"]),
        (Some("T-07"), &json!(["4west"]))
    );
    assert_eq!(answer["policy"]["pin_attempts"], 5);
    let answer: EnrolResponse = serde_json::from_value(answer).unwrap();
    let store = tablet_store(&devices, "t07");
    let tablet = Tablet::finish_enrolment(
        store.clone(),
        &secret,
        "http://server",
        &answer,
        KdfParams::INSECURE_FOR_TESTS,
    )
    .unwrap();

    // The code works once; another tablet cannot use it.
    let (status, body) = enrol(&server, &[8u8; 32], &code);
    assert_eq!(status, 403, "{body}");

    // Rn.park signs in: her certificate covers the wards she shares with the tablet.
    let (status, answer, pending) = sign_in(&tablet, &server, "rn.park", PASSWORD);
    assert_eq!(status, 200, "{answer}");
    let bytes = B64.decode(answer["certificate"].as_str().unwrap()).unwrap();
    let cert = SignedCertificate::from_bytes(&bytes, &tablet.enrolment().issuer_keys).unwrap();
    let c = cert.certificate();
    assert_eq!((c.user.as_str(), c.role), ("rn.park", Role::Nurse));
    assert_eq!(c.wards, vec!["4west".to_string()]);
    assert_eq!(c.device, device.id());
    let days = (c.not_after - c.issued_at) as f64 / 86_400.0;
    assert!((days - 7.0).abs() < 0.01, "{days} days");
    let answer: SignInResponse = serde_json::from_value(answer).unwrap();
    let session = tablet.finish_sign_in(pending, &answer, "482913").unwrap();
    assert_eq!(session.staff().device, device.id().to_string());

    // Later, offline: the PIN opens her key; a wrong one is counted.
    drop(session);
    assert!(tablet.unlock("rn.park", "482913").is_ok());
    assert!(matches!(
        tablet.unlock("rn.park", "482914"),
        Err(TabletError::WrongPin { remaining: 4, .. })
    ));

    // Wrong password, unknown person: refused alike. A tablet that never enrolled: refused.
    let (status, wrong, _) = sign_in(&tablet, &server, "rn.park", "not her password");
    assert_eq!(status, 401);
    let (status, unknown, _) = sign_in(&tablet, &server, "rn.nobody", PASSWORD);
    assert_eq!(status, 401);
    assert_eq!(
        wrong, unknown,
        "an unknown person looks like a wrong password"
    );
    let stranger = tempfile::tempdir().unwrap();
    let other = Tablet::finish_enrolment(
        tablet_store(&stranger, "x"),
        &[9u8; 32],
        "http://server",
        &EnrolResponse {
            device: DeviceKey::from_secret(&[9u8; 32]).unwrap().id().to_string(),
            ..answer_of(&tablet)
        },
        KdfParams::INSECURE_FOR_TESTS,
    )
    .unwrap();
    let (status, _, _) = sign_in(&other, &server, "rn.park", PASSWORD);
    assert_eq!(status, 403, "a tablet that never enrolled");

    // A person with no ward the tablet covers gets no certificate.
    add_staff(&server, "rn.icu", "nurse", &["icu"]);
    let (status, body, _) = sign_in(&tablet, &server, "rn.icu", PASSWORD);
    assert_eq!(status, 403, "{body}");
}

/// What the tablet was told at enrolment, to stand in for another tablet's answer.
fn answer_of(tablet: &Tablet) -> EnrolResponse {
    let e = tablet.enrolment();
    EnrolResponse {
        device: e.device.to_string(),
        label: e.label.clone(),
        wards: e.wards.clone(),
        issuer_keys: e.issuer_keys.iter().map(|k| B64.encode(k)).collect(),
        policy: e.policy,
    }
}

#[test]
fn five_wrong_pins_erase_the_key_and_only_an_online_sign_in_brings_it_back() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    add_staff(&server, "rn.park", "nurse", &["4west"]);
    let store = tablet_store(&devices, "t07");
    let code = enrolment_code(&server, "T-07", "4west");
    let tablet = enrolled(&server, store.clone(), &[7u8; 32], &code);
    drop(signed_in(&tablet, &server, "rn.park", "135790"));

    for remaining in (1..5).rev() {
        match tablet.unlock("rn.park", "000000") {
            Err(TabletError::WrongPin { remaining: r, .. }) => assert_eq!(r, remaining),
            other => panic!("{other:?}"),
        }
    }
    // A right PIN in between starts the count again.
    assert!(tablet.unlock("rn.park", "135790").is_ok());
    for _ in 0..4 {
        assert!(tablet.unlock("rn.park", "000000").is_err());
    }
    assert!(matches!(
        tablet.unlock("rn.park", "000000"),
        Err(TabletError::WrongPin { remaining: 0, .. })
    ));
    // The fifth wrong PIN erased the key: the right PIN no longer opens anything, even after
    // the tablet restarts.
    drop(tablet);
    drop(store);
    let store = tablet_store(&devices, "t07");
    let tablet = Tablet::open(store.clone(), &[7u8; 32], KdfParams::INSECURE_FOR_TESTS)
        .unwrap()
        .unwrap();
    assert!(matches!(
        tablet.unlock("rn.park", "135790"),
        Err(TabletError::NoKey { .. })
    ));
    let credential = store.credential("rn.park").unwrap().unwrap();
    assert_eq!(credential.erased_why.as_deref(), Some("pin_attempts"));
    assert!(credential.sealed.is_none());
    // Online, she signs in again with a new PIN.
    drop(signed_in(&tablet, &server, "rn.park", "975310"));
    assert!(tablet.unlock("rn.park", "975310").is_ok());
}

/// 4west, a shift in: `charts` patients admitted at the registration PC, `nurses` (user,
/// PIN) in the directory, and tablet T-07 enrolled for the ward, on which each nurse signed in
/// once online and which has taken the ward's charts and gone offline again.
struct Ward {
    url: String,
    store: std::sync::Arc<chartsync_core::store::ChartStore>,
    tablet: Tablet,
    sessions: Vec<chartsync_core::tablet::Session>,
    token: String,
    charts: Vec<ChartId>,
}

/// Tablet T-07, enrolled for 4west and 5east, with its store.
fn tablet_on_4west_and_5east(
    server: &Server,
    devices: &tempfile::TempDir,
) -> (std::sync::Arc<chartsync_core::store::ChartStore>, Tablet) {
    let store = tablet_store(devices, "t07");
    let code = server.admin(
        &[
            "device", "enroll", "--label", "T-07", "--ward", "4west", "--ward", "5east",
        ],
        "",
    );
    let tablet = enrolled(server, store.clone(), &[7u8; 32], code.trim());
    (store, tablet)
}

async fn ward(
    server: &Server,
    devices: &tempfile::TempDir,
    nurses: &[(&str, &str)],
    charts: usize,
) -> Ward {
    let url = format!("ws://{}/sync", server.addr);
    for (user, _) in nurses {
        add_staff(server, user, "nurse", &["4west"]);
    }
    let mrns: Vec<String> = (0..charts).map(|n| format!("MRN-{n:04}")).collect();
    let Pc {
        client: pc, charts, ..
    } = registration_pc(server, devices, &["4west"], &mrns).await;
    pc.stop().await;
    let store = tablet_store(devices, "t07");
    let code = enrolment_code(server, "T-07", "4west");
    let tablet = enrolled(server, store.clone(), &[7u8; 32], &code);
    let sessions = nurses
        .iter()
        .map(|(user, pin)| signed_in(&tablet, server, user, pin))
        .collect();
    let token = device_token(&tablet, server);
    let c = client(url.clone(), &token, "tablet-t07", &store);
    eventually("the ward's charts did not arrive", || {
        charts.iter().all(|id| store.contains(*id).unwrap())
    })
    .await;
    assert!(c.wait_until_up_to_date(WAIT).await);
    c.stop().await;
    Ward {
        url,
        store,
        tablet,
        sessions,
        token,
        charts,
    }
}

/// Two nurses on one tablet through a night with no network: both sign in with their PINs and
/// chart on the same chart and on others; one reconnect brings every change of both to the
/// record, each under the nurse who made it as the server verified it, on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nurses_chart_offline_on_one_tablet_and_one_reconnect_brings_every_change_under_its_verified_author(
) {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let nurses = [("rn.park", "135790"), ("rn.lee", "246802")];
    let Ward {
        url,
        store,
        tablet,
        token,
        charts,
        ..
    } = ward(&server, &devices, &nurses, 3).await;

    // The network goes. Rn.park signs in with her PIN and charts on two charts; then rn.lee
    // on the first (the same chart) and the third, including a late entry for 40 minutes ago.
    let now = Timestamp::now().unix();
    let t = |minutes_ago: i64| Timestamp::from_unix(now - minutes_ago * 60).unwrap();
    let park = tablet.unlock("rn.park", "135790").unwrap();
    for (id, bpm) in [(charts[0], 88), (charts[1], 92)] {
        park.with_key(|k| {
            store.update_signed(k, id, |ch| {
                ch.add_entry(park.staff(), t(5), heart_rate(bpm))
            })
        })
        .unwrap()
        .unwrap();
    }
    park.lock();
    let lee = tablet.unlock("rn.lee", "246802").unwrap();
    for (id, bpm, ago) in [(charts[0], 90, 2), (charts[2], 77, 40)] {
        lee.with_key(|k| {
            store.update_signed(k, id, |ch| {
                ch.add_entry(lee.staff(), t(ago), heart_rate(bpm))
            })
        })
        .unwrap()
        .unwrap();
    }

    // One reconnect.
    let opened = server.metric("connections_opened_total");
    let c = client(url, &token, "tablet-t07", &store);
    let done = until(&c, "both nurses' changes acknowledged", |s| {
        s.state == SyncState::UpToDate && s.unacknowledged == 0 && s.unacknowledged_commits == 0
    })
    .await;
    assert!(done.held.is_empty(), "{done:?}");
    assert_eq!(server.metric("connections_opened_total") - opened, 1.0);

    // On the server: each entry under its author, and the audit trail names each verified
    // writer of each change.
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let authors = |id: ChartId| -> Vec<String> {
        let mut a: Vec<String> = on_server(&server, &sup, id)["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["author"].as_str().unwrap().to_string())
            .collect();
        a.sort();
        a
    };
    assert_eq!(authors(charts[0]), ["rn.lee", "rn.park"]);
    assert_eq!(authors(charts[1]), ["rn.park"]);
    assert_eq!(authors(charts[2]), ["rn.lee"]);
    let writers = |id: ChartId| -> Vec<(String, String)> {
        let (status, body) = http_get(&server.addr, &format!("/api/audit?chart={id}"), Some(&sup));
        assert_eq!(status, 200, "{body}");
        let trail: Value = serde_json::from_str(&body).unwrap();
        trail
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "write")
            .map(|r| {
                (
                    r["user"].as_str().unwrap().into(),
                    r["device"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let w = writers(charts[0]);
    assert!(
        w.contains(&("rn.park".into(), "tablet-t07".into())),
        "{w:?}"
    );
    assert!(w.contains(&("rn.lee".into(), "tablet-t07".into())), "{w:?}");
    assert_eq!(
        writers(charts[2]),
        [("rn.lee".to_string(), "tablet-t07".to_string())]
    );
    // Each write row says which certificate the writer signed under.
    let (_, body) = http_get(
        &server.addr,
        &format!("/api/audit?chart={}", charts[2]),
        Some(&sup),
    );
    assert!(body.contains("signed under certificate "), "{body}");
    c.stop().await;
}

/// A change signed with rn.park's key that claims to be rn.lee's is held, never merged; the
/// other charts on the tablet sync as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_signed_by_one_nurse_claiming_another_is_held_and_the_rest_sync() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let nurses = [("rn.park", "135790"), ("rn.lee", "246802")];
    let Ward {
        url,
        store,
        mut sessions,
        token,
        charts,
        ..
    } = ward(&server, &devices, &nurses, 2).await;
    let lee = sessions.pop().unwrap();
    let park = sessions.pop().unwrap();

    // Written as rn.lee, signed with rn.park's key.
    let now = Timestamp::now();
    park.with_key(|k| {
        store.update_signed(k, charts[0], |ch| {
            ch.add_entry(lee.staff(), now, heart_rate(150))
        })
    })
    .unwrap()
    .unwrap();
    // And honest work on the other chart.
    park.with_key(|k| {
        store.update_signed(k, charts[1], |ch| {
            ch.add_entry(park.staff(), now, heart_rate(80))
        })
    })
    .unwrap()
    .unwrap();

    let c = client(url, &token, "tablet-t07", &store);
    let status = until(
        &c,
        "the forged change is held and the other acknowledged",
        |s| s.held.len() == 1 && s.unacknowledged == 1,
    )
    .await;
    assert_eq!(status.held[0].chart, charts[0]);
    assert_eq!(status.held[0].reason, HoldReason::ForgedAuthor);
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    assert!(on_server(&server, &sup, charts[0])["entries"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        on_server(&server, &sup, charts[1])["entries"][0]["author"],
        "rn.park"
    );
    // The holding area names the signer, and the hold cannot be accepted.
    let (_, body) = http_get(&server.addr, "/api/holds", Some(&sup));
    let holds: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(holds[0]["reason"], "forged_author");
    assert_eq!(holds[0]["user"], "rn.park");
    assert_eq!(
        holds[0]["signer"], "rn.park",
        "the signature verified; the claim did not"
    );
    let id = holds[0]["id"].as_i64().unwrap();
    let (status, _) = http_post(
        &server.addr,
        &format!("/api/holds/{id}/accept"),
        Some(&sup),
        "{}",
    );
    assert_eq!(status, 409);
    c.stop().await;
}

#[test]
fn administrators_manage_the_directory_and_revocations_take_certificates_away() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let admin = server.token("admin.kim", "admin", &["*"]);
    let nurse = server.token("rn.park", "nurse", &["4west"]);

    // Only admins see or change the directory.
    let (status, _) = http_get(&server.addr, "/api/staff", Some(&nurse));
    assert_eq!(status, 403);
    let (status, _) = http_put(
        &server.addr,
        "/api/staff/rn.lee",
        Some(&nurse),
        r#"{"role": "admin", "wards": ["*"]}"#,
    );
    assert_eq!(status, 403);
    let (status, body) = http_put(
        &server.addr,
        "/api/staff/rn.lee",
        Some(&admin),
        &json!({"role": "nurse", "wards": ["4west"], "password": "short"}).to_string(),
    );
    assert_eq!(status, 422, "a short password is refused: {body}");
    let (status, body) = http_put(
        &server.addr,
        "/api/staff/rn.lee",
        Some(&admin),
        &json!({"role": "nurse", "wards": ["4west"], "password": PASSWORD}).to_string(),
    );
    assert_eq!(status, 204, "{body}");
    let (_, body) = http_get(&server.addr, "/api/staff", Some(&admin));
    let staff: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(staff[0]["user"], "rn.lee");
    assert_eq!(staff[0]["has_password"], true);
    assert!(
        !body.contains("argon2"),
        "password hashes never leave the store"
    );

    // A code from REST, a tablet, a sign-in.
    let (status, body) = http_post(
        &server.addr,
        "/api/devices/enrolments",
        Some(&admin),
        r#"{"label": "T-11", "wards": ["4west"]}"#,
    );
    assert_eq!(status, 201, "{body}");
    let code: Value = serde_json::from_str(&body).unwrap();
    let devices = tempfile::tempdir().unwrap();
    let store = tablet_store(&devices, "t11");
    let tablet = enrolled(&server, store, &[11u8; 32], code["code"].as_str().unwrap());
    let (status, first, _) = sign_in(&tablet, &server, "rn.lee", PASSWORD);
    assert_eq!(status, 200);
    let (_, body) = http_get(&server.addr, "/api/certificates?user=rn.lee", Some(&admin));
    let certs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(certs.as_array().unwrap().len(), 1);
    assert_eq!(certs[0]["serial"], first["serial"]);

    // Moving her to 5east revokes the certificate that says 4west.
    let (status, _) = http_put(
        &server.addr,
        "/api/staff/rn.lee",
        Some(&admin),
        r#"{"role": "nurse", "wards": ["5east"]}"#,
    );
    assert_eq!(status, 204);
    let (_, body) = http_get(&server.addr, "/api/revocations", Some(&admin));
    let revocations: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(revocations[0]["kind"], "certificate");
    assert_eq!(revocations[0]["subject"], first["serial"]);
    assert_eq!(revocations[0]["severity"], "administrative");

    // The tablet is stolen: revoked as compromised, it signs no one in again.
    let (status, body) = http_post(
        &server.addr,
        "/api/revocations",
        Some(&admin),
        &json!({"kind": "device", "subject": tablet.device().to_string(),
                "severity": "compromised", "reason": "stolen from the nurses' station"})
        .to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let (status, _) = http_put(
        &server.addr,
        "/api/staff/rn.lee",
        Some(&admin),
        r#"{"role": "nurse", "wards": ["4west"]}"#,
    );
    assert_eq!(status, 204);
    let (status, _, _) = sign_in(&tablet, &server, "rn.lee", PASSWORD);
    assert_eq!(status, 403);
    let (_, body) = http_get(&server.addr, "/api/devices", Some(&admin));
    let devices: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(devices[0]["status"], "revoked");

    // A revocation needs a reason, and something to revoke.
    let (status, _) = http_post(
        &server.addr,
        "/api/revocations",
        Some(&admin),
        r#"{"kind": "person", "subject": "rn.lee", "severity": "administrative", "reason": " "}"#,
    );
    assert_eq!(status, 422);
    let (status, _) = http_post(
        &server.addr,
        "/api/revocations",
        Some(&admin),
        r#"{"kind": "person", "subject": "rn.nobody", "severity": "administrative", "reason": "left"}"#,
    );
    assert_eq!(status, 404);
}

/// A tablet is stolen with a nurse's session open, and the thief writes on it offline with
/// the key still in memory. Revoked as compromised, the tablet hears so as soon as it is back
/// on the network and erases the sealed key; what the thief wrote is held, never merged;
/// another tablet on the same chart carries on; and the stolen tablet's next session is a
/// quarantine in which it can sign no one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_tablet_once_revoked_has_its_later_changes_held_and_other_tablets_carry_on() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let url = format!("ws://{}/sync", server.addr);
    add_staff(&server, "rn.park", "nurse", &["4west"]);
    add_staff(&server, "rn.lee", "nurse", &["4west"]);
    let mrns = vec!["MRN-0001".to_string()];
    let Pc {
        client: pc, charts, ..
    } = registration_pc(&server, &devices, &["4west"], &mrns).await;
    pc.stop().await;
    let chart = charts[0];

    let mut tablets = Vec::new();
    for (label, secret, user, pin) in [
        ("T-07", 7u8, "rn.park", "135790"),
        ("T-08", 8u8, "rn.lee", "246802"),
    ] {
        let store = tablet_store(&devices, label);
        let code = enrolment_code(&server, label, "4west");
        let tablet = enrolled(&server, store.clone(), &[secret; 32], &code);
        let session = signed_in(&tablet, &server, user, pin);
        let token = device_token(&tablet, &server);
        let c = client(url.clone(), &token, label, &store);
        eventually("the chart did not arrive", || {
            store.contains(chart).unwrap()
        })
        .await;
        assert!(c.wait_until_up_to_date(WAIT).await);
        tablets.push((tablet, store, session, c));
    }
    let (stolen, stolen_store, park, c_stolen) = tablets.remove(0);
    let (_, other_store, lee, c_other) = &tablets[0];
    // The thief takes the tablet off the network, and writes with the key still in memory.
    c_stolen.stop().await;
    let now = Timestamp::now();
    park.with_key(|k| {
        stolen_store.update_signed(k, chart, |ch| {
            ch.add_entry(park.staff(), now, heart_rate(40))
        })
    })
    .unwrap()
    .unwrap();

    // Reported stolen: the administrator revokes the tablet as compromised.
    let admin = server.token("admin.kim", "admin", &["*"]);
    let (status, body) = http_post(
        &server.addr,
        "/api/revocations",
        Some(&admin),
        &json!({"kind": "device", "subject": stolen.device().to_string(),
                "severity": "compromised", "reason": "stolen from the nurses' station"})
        .to_string(),
    );
    assert_eq!(status, 201, "{body}");
    lee.with_key(|k| {
        other_store.update_signed(k, chart, |ch| {
            ch.add_entry(lee.staff(), now, heart_rate(72))
        })
    })
    .unwrap()
    .unwrap();

    // The stolen tablet comes back on the network: it hears of the revocation at once and
    // erases the sealed key; what the thief wrote is held, never merged, and the chart stays
    // on the tablet only as held (docs/records-office.md, "Charts leave tablets").
    let token = device_token(&stolen, &server);
    let c_stolen = client(url.clone(), &token, "T-07", &stolen_store);
    let mut events = c_stolen.chart_events();
    let heard = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("the stolen tablet never heard")
        .unwrap();
    assert!(
        matches!(&heard, chartsync_core::client::ChartEvent::SignedOut { user } if user == "rn.park"),
        "{heard:?}"
    );
    let credential = stolen_store.credential("rn.park").unwrap().unwrap();
    assert_eq!(credential.erased_why.as_deref(), Some("revoked"));
    assert!(matches!(
        stolen.unlock("rn.park", "135790"),
        Err(TabletError::NoKey { .. })
    ));
    let held = until(&c_stolen, "the stolen tablet's change is held", |s| {
        !s.held.is_empty()
    })
    .await;
    assert_eq!(held.held[0].reason, HoldReason::Revoked);

    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let (status, body) = http_get(
        &server.addr,
        &format!("/api/holds?chart={chart}"),
        Some(&sup),
    );
    assert_eq!(status, 200, "{body}");
    let holds: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(holds[0]["reason"], HoldReason::Revoked.token());
    assert!(c_other.wait_until_up_to_date(WAIT).await);
    assert_eq!(c_other.status().borrow().unacknowledged, 0);
    let entries = on_server(&server, &sup, chart)["entries"].clone();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!(entries[0]["author"], "rn.lee");

    // Its next session is a quarantine: no one signs in on it again.
    let (status, _, _) = sign_in(&stolen, &server, "rn.park", PASSWORD);
    assert_eq!(status, 403);
    let _quarantined = device_token(&stolen, &server);
    c_stolen.stop().await;
    for (_, _, _, c) in tablets {
        c.stop().await;
    }
}

/// A certificate lasts as long as the server says; after that the PIN opens nothing and a
/// session still open writes nothing: the nurse signs in online again.
#[test]
fn after_its_certificate_ends_a_nurse_must_sign_in_online_again() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        data.path(),
        "127.0.0.1:0",
        &["--certificate-validity", "2s"],
    );
    add_staff(&server, "rn.park", "nurse", &["4west"]);
    let store = tablet_store(&devices, "t07");
    let code = enrolment_code(&server, "T-07", "4west");
    let tablet = enrolled(&server, store.clone(), &[7u8; 32], &code);
    let session = signed_in(&tablet, &server, "rn.park", "135790");
    assert!(session.with_key(|_| ()).is_ok());
    // The certificate started five minutes back (for a tablet's slow clock) and ends 2 s
    // after it was issued.
    std::thread::sleep(std::time::Duration::from_millis(3100));
    assert!(matches!(
        session.with_key(|_| ()),
        Err(TabletError::Expired { .. })
    ));
    assert!(matches!(
        tablet.unlock("rn.park", "135790"),
        Err(TabletError::Expired { .. })
    ));
    // Online again: a new certificate, and the PIN works.
    drop(signed_in(&tablet, &server, "rn.park", "135790"));
    assert!(tablet.unlock("rn.park", "135790").is_ok());
}

/// A code blue on 5east: rn.park, on a 4west tablet, opens the patient's chart with
/// break-glass (emergency treatment, in her words), charts on it under her own name, and the
/// privacy review queue lists the grant until a supervisor reviews it; the chart's FHIR
/// export carries it as an AuditEvent with its purpose of use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_from_a_tablet_opens_a_chart_on_another_ward_and_waits_for_review() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let url = format!("ws://{}/sync", server.addr);
    add_staff(&server, "rn.park", "nurse", &["4west"]);
    let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let pc_store = tablet_store(&devices, "pc");
    let chart = pc_store
        .create(admit_at("MRN-0500", "5east", at(0), &clerk))
        .unwrap();
    let pc_token = server.token("him.jones", "technician", &["5east"]);
    let pc = client(url.clone(), &pc_token, "records-pc-1", &pc_store);
    assert!(pc.wait_until_up_to_date(WAIT).await);
    pc.stop().await;

    let store = tablet_store(&devices, "t07");
    let code = enrolment_code(&server, "T-07", "4west");
    let tablet = enrolled(&server, store.clone(), &[7u8; 32], &code);
    let park = signed_in(&tablet, &server, "rn.park", "135790");
    let token = device_token(&tablet, &server);
    let c = client(url, &token, "tablet-t07", &store);
    assert!(c.wait_until_up_to_date(WAIT).await);
    assert!(
        !store.contains(chart).unwrap(),
        "a 5east chart is not on a 4west tablet"
    );

    // Break-glass, signed by rn.park's key.
    let request = park
        .break_glass_request(
            &chart,
            chartsync_core::store::BreakGlassReason::EmergencyTreatment,
            "code blue in the corridor, no 5east nurse at hand",
        )
        .unwrap();
    let path = format!("/api/devices/{}/break-glass", tablet.device());
    let (status, body) = http_post(
        &server.addr,
        &path,
        None,
        &serde_json::to_string(&request).unwrap(),
    );
    assert_eq!(status, 201, "{body}");
    let grant: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (grant["user"].as_str(), grant["reason"].as_str()),
        (Some("rn.park"), Some("ETREAT"))
    );
    let hours = (Timestamp::parse(grant["ends_at"].as_str().unwrap())
        .unwrap()
        .unix()
        - Timestamp::parse(grant["starts_at"].as_str().unwrap())
            .unwrap()
            .unix()) as f64
        / 3600.0;
    assert!((hours - 4.0).abs() < 0.01, "{hours} h");
    // The same request again (a retry): a signed request is filed once.
    let (status, again) = http_post(
        &server.addr,
        &path,
        None,
        &serde_json::to_string(&request).unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&again).unwrap()["id"],
        grant["id"]
    );

    // The tablet fetches the chart, and she charts on it.
    c.fetch(chart);
    eventually("the 5east chart did not arrive", || {
        store.contains(chart).unwrap()
    })
    .await;
    signed_heart_rate(&store, &park, chart, 130);
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    assert!(c.wait_until_up_to_date(WAIT).await);
    assert_eq!(c.status().borrow().unacknowledged, 0);
    assert_eq!(
        on_server(&server, &sup, chart)["entries"][0]["author"],
        "rn.park"
    );
    c.stop().await;

    // The audit trail has the start; the review queue lists it.
    let (_, body) = http_get(
        &server.addr,
        &format!("/api/audit?chart={chart}"),
        Some(&sup),
    );
    assert!(body.contains("\"action\":\"break_glass\""), "{body}");
    let (status, body) = http_get(&server.addr, "/api/break-glass", Some(&sup));
    assert_eq!(status, 200);
    let queue: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(queue.as_array().unwrap().len(), 1, "{queue}");
    assert_eq!(queue[0]["device"], tablet.device().to_string());
    let id = queue[0]["id"].as_i64().unwrap();
    let nurse = server.token("rn.lee", "nurse", &["4west"]);
    let (status, _) = http_get(&server.addr, "/api/break-glass", Some(&nurse));
    assert_eq!(status, 403, "the queue is for supervisors");
    let review = format!("/api/break-glass/{id}/review");
    let (status, _) = http_post(&server.addr, &review, Some(&sup), r#"{"note": " "}"#);
    assert_eq!(status, 422, "a review needs a note");
    let (status, body) = http_post(
        &server.addr,
        &review,
        Some(&sup),
        r#"{"note": "code blue confirmed with the 5east charge nurse"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = http_post(&server.addr, &review, Some(&sup), r#"{"note": "again"}"#);
    assert_eq!(status, 409);
    let (_, body) = http_get(&server.addr, "/api/break-glass", Some(&sup));
    assert_eq!(body, "[]");

    // The FHIR export carries it as an AuditEvent for emergency treatment.
    let (status, body) = http_get(
        &server.addr,
        &format!("/api/charts/{chart}/fhir"),
        Some(&sup),
    );
    assert_eq!(status, 200, "{body}");
    let bundle: Value = serde_json::from_str(&body).unwrap();
    let event = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "AuditEvent" && r["type"]["code"] == "110113")
        .expect("a break-glass AuditEvent");
    assert_eq!(event["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");
    assert_eq!(event["agent"][0]["who"]["display"], "rn.park");
}

/// Under a person's token: break-glass is refused for a chart already on her wards, opens one
/// that is not, and ends when she says so, after which the chart is closed to her again.
#[test]
fn break_glass_under_a_token_opens_a_chart_until_it_ends() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let devices = tempfile::tempdir().unwrap();
    let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let store = tablet_store(&devices, "pc");
    let on_4west = store
        .create(admit_at("MRN-0600", "4west", at(0), &clerk))
        .unwrap();
    let on_icu = store
        .create(admit_at("MRN-0601", "icu", at(0), &clerk))
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let token = server.token("him.jones", "technician", &["*"]);
        let c = client(format!("ws://{}/sync", server.addr), &token, "pc", &store);
        for id in [on_4west, on_icu] {
            c.fetch(id);
        }
        assert!(c.wait_until_up_to_date(WAIT).await);
        c.stop().await;
    });
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    let ask = |chart: ChartId, reason: &str| {
        http_post(
            &server.addr,
            "/api/break-glass",
            Some(&nurse),
            &json!({"chart": chart.to_string(), "reason": reason, "text": "rapid response"})
                .to_string(),
        )
    };
    let chart_path = format!("/api/charts/{on_icu}");
    assert_eq!(http_get(&server.addr, &chart_path, Some(&nurse)).0, 404);
    assert_eq!(
        ask(on_4west, "ETREAT").0,
        409,
        "her own ward needs no break-glass"
    );
    assert_eq!(
        ask(on_icu, "CURIOSITY").0,
        422,
        "the reasons are a closed list"
    );
    let (status, body) = ask(on_icu, "BTG");
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();
    assert_eq!(http_get(&server.addr, &chart_path, Some(&nurse)).0, 200);
    let other = server.token("rn.lee", "nurse", &["4west"]);
    assert_eq!(
        http_get(&server.addr, &chart_path, Some(&other)).0,
        404,
        "hers alone"
    );
    let end = format!("/api/break-glass/{id}/end");
    assert_eq!(http_post(&server.addr, &end, Some(&other), "{}").0, 403);
    assert_eq!(http_post(&server.addr, &end, Some(&nurse), "{}").0, 200);
    assert_eq!(http_get(&server.addr, &chart_path, Some(&nurse)).0, 404);
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let (_, body) = http_get(
        &server.addr,
        &format!("/api/audit?chart={on_icu}"),
        Some(&sup),
    );
    let trail: Value = serde_json::from_str(&body).unwrap();
    let details: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "break_glass")
        .map(|r| r["detail"].as_str().unwrap())
        .collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(
        details[0].contains("start (BTG") && details[1].contains("end"),
        "{details:?}"
    );
}

/// No network on the ward. A 5east patient whose chart the tablet carries (it serves both
/// wards) collapses in the corridor; rn.park, whose own access is 4west, uses break-glass on
/// the tablet offline and charts under it; on another 5east chart she charts without it. On
/// reconnect the grant is filed for review, what she charted under it reaches the record, and
/// the other change is held as outside her wards: nothing dropped, nothing merged unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_offline_is_filed_on_sync_and_what_was_charted_under_it_reaches_the_record() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let url = format!("ws://{}/sync", server.addr);
    add_staff(&server, "rn.park", "nurse", &["4west"]);
    let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let pc_store = tablet_store(&devices, "pc");
    let charts: Vec<ChartId> = (0..2)
        .map(|n| {
            pc_store
                .create(admit_at(&format!("MRN-07{n:02}"), "5east", at(n), &clerk))
                .unwrap()
        })
        .collect();
    let pc_token = server.token("him.jones", "technician", &["5east"]);
    let pc = client(url.clone(), &pc_token, "records-pc-1", &pc_store);
    assert!(pc.wait_until_up_to_date(WAIT).await);
    pc.stop().await;

    let (store, tablet) = tablet_on_4west_and_5east(&server, &devices);
    drop(signed_in(&tablet, &server, "rn.park", "135790"));
    let token = device_token(&tablet, &server);
    let c = client(url.clone(), &token, "tablet-t07", &store);
    for id in &charts {
        c.fetch(*id);
    }
    eventually("the 5east charts did not arrive", || {
        charts.iter().all(|id| store.contains(*id).unwrap())
    })
    .await;
    assert!(c.wait_until_up_to_date(WAIT).await);
    c.stop().await;

    // Offline: break-glass on the first chart, and vitals on both.
    let park = tablet.unlock("rn.park", "135790").unwrap();
    let grant = tablet
        .break_glass_offline(
            &park,
            charts[0],
            chartsync_core::store::BreakGlassReason::EmergencyTreatment,
            "collapsed in the corridor, no 5east nurse near",
        )
        .unwrap();
    assert_eq!(grant.granted, "offline");
    assert_eq!(store.unfiled_break_glass(charts[0]).unwrap().len(), 1);
    for id in &charts {
        signed_heart_rate(&store, &park, *id, 44);
    }

    // Reconnect.
    let c = client(url, &token, "tablet-t07", &store);
    let status = until(&c, "one chart taken, the other held", |s| {
        s.held.len() == 1 && s.unacknowledged == 1
    })
    .await;
    assert_eq!(status.held[0].chart, charts[1]);
    assert_eq!(status.held[0].reason, HoldReason::OutsideWards);
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    assert_eq!(
        on_server(&server, &sup, charts[0])["entries"][0]["author"],
        "rn.park"
    );
    eventually("the tablet heard the grant was filed", || {
        store.unfiled_break_glass(charts[0]).unwrap().is_empty()
    })
    .await;
    let (_, body) = http_get(&server.addr, "/api/break-glass", Some(&sup));
    let queue: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(queue.as_array().unwrap().len(), 1, "{queue}");
    assert_eq!(queue[0]["granted"], "offline");
    assert_eq!(queue[0]["user"], "rn.park");
    assert_eq!(queue[0]["device"], tablet.device().to_string());
    c.stop().await;
}

/// A change on the tablet that no proof stands for (written without a signature) is held
/// back on the tablet, named as waiting for its author, while the other charts sync; nothing
/// of it reaches the server's holding area. When its author signs in, she signs her own
/// work and it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_no_proof_stands_for_waits_on_the_tablet_for_its_author_to_sign_in() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let nurses = [("rn.park", "135790"), ("rn.silva", "246802")];
    let Ward {
        url,
        store,
        tablet,
        sessions,
        token,
        charts,
    } = ward(&server, &devices, &nurses, 2).await;
    let park = &sessions[0];

    // rn.silva's observation, written with no proof; rn.park's, signed, on the other chart.
    let silva = Staff::new("rn.silva", Role::Nurse, tablet.device().to_string());
    store
        .update(charts[0], |ch| {
            ch.add_entry(&silva, Timestamp::now(), heart_rate(101))
        })
        .unwrap();
    signed_heart_rate(&store, &park, charts[1], 80);

    let c = client(url, &token, "tablet-t07", &store);
    let status = until(&c, "rn.silva's chart held back, rn.park's sent", |s| {
        s.held.len() == 1 && s.unacknowledged == 1
    })
    .await;
    assert_eq!(status.held[0].chart, charts[0]);
    assert_eq!(
        status.held[0].hold, None,
        "held on the tablet, not by the server"
    );
    assert_eq!(
        status.held[0].summary,
        "waiting for rn.silva to sign in on this tablet"
    );
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    assert_eq!(
        on_server(&server, &sup, charts[1])["entries"][0]["author"],
        "rn.park"
    );
    let (_, body) = http_get(&server.addr, "/api/holds", Some(&sup));
    assert_eq!(body, "[]", "nothing reached the holding area");

    // She signs in with her PIN: her observation is signed and goes.
    drop(tablet.unlock("rn.silva", "246802").unwrap());
    until(&c, "rn.silva's observation acknowledged", |s| {
        s.held.is_empty() && s.unacknowledged == 0
    })
    .await;
    assert_eq!(
        on_server(&server, &sup, charts[0])["entries"][0]["author"],
        "rn.silva"
    );
    c.stop().await;
}

/// Work from before the tablet was enrolled names another device and no one can prove it:
/// the tablet sends it, the server holds it as unsigned under the author it claims, and a
/// records supervisor can accept it into the record as hers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unproven_work_from_before_enrolment_is_held_under_its_claimed_author_and_can_be_accepted()
{
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let Ward {
        url,
        store,
        token,
        charts,
        ..
    } = ward(&server, &devices, &[("rn.silva", "246802")], 1).await;
    let before_enrolment = Staff::new("rn.silva", Role::Nurse, "tablet-4west-02");
    store
        .update(charts[0], |ch| {
            ch.add_entry(&before_enrolment, Timestamp::now(), heart_rate(99))
        })
        .unwrap();

    let c = client(url, &token, "tablet-t07", &store);
    let status = until(&c, "the unproven work is held by the server", |s| {
        s.held.iter().any(|h| h.hold.is_some())
    })
    .await;
    assert_eq!(status.held[0].reason, HoldReason::Unsigned);
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let (_, body) = http_get(&server.addr, "/api/holds", Some(&sup));
    let holds: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        holds[0]["user"], "rn.silva",
        "filed under the author it claims"
    );
    assert_eq!(holds[0]["signer"], Value::Null, "and marked unverified");
    let id = holds[0]["id"].as_i64().unwrap();
    let (status, body) = http_post(
        &server.addr,
        &format!("/api/holds/{id}/accept"),
        Some(&sup),
        "{}",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        on_server(&server, &sup, charts[0])["entries"][0]["author"],
        "rn.silva"
    );
    c.stop().await;
}

/// Work no proof stands for, by someone whose access on this tablet was revoked: she can never
/// sign in here again, so it does not wait on the tablet for good; the server holds it for
/// review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unproven_work_of_a_revoked_author_goes_to_review_rather_than_wait_for_good() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let Ward {
        url,
        store,
        tablet,
        token,
        charts,
        ..
    } = ward(&server, &devices, &[("rn.silva", "246802")], 1).await;
    let silva = Staff::new("rn.silva", Role::Nurse, tablet.device().to_string());
    store
        .update(charts[0], |ch| {
            ch.add_entry(&silva, Timestamp::now(), heart_rate(101))
        })
        .unwrap();
    // As the tablet records a revocation it hears of.
    store.erase_credential("rn.silva", "revoked").unwrap();
    let c = client(url, &token, "tablet-t07", &store);
    let status = until(&c, "the server holds it for review", |s| {
        s.held.iter().any(|h| h.hold.is_some())
    })
    .await;
    assert_eq!(status.held[0].reason, HoldReason::Unsigned);
    c.stop().await;
}

/// Two nurses chart one after the other on the same chart of a shared tablet, offline; the
/// second's certificate does not cover the chart's ward (she works on 5east). One sync
/// message carries both: the first nurse's entry is taken into the record, the second's is
/// held for review, and the tablet is told. Across a restart the record still has exactly the
/// first entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_with_a_passing_writer_and_a_held_one_takes_the_first_and_holds_the_second() {
    let data = tempfile::tempdir().unwrap();
    let devices = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let url = format!("ws://{}/sync", server.addr);
    add_staff(&server, "rn.park", "nurse", &["4west"]);
    add_staff(&server, "rn.lee", "nurse", &["5east"]);
    let pc = registration_pc(&server, &devices, &["4west"], &["MRN-0901".to_string()]).await;
    pc.client.stop().await;
    let id = pc.charts[0];

    let (store, tablet) = tablet_on_4west_and_5east(&server, &devices);
    drop(signed_in(&tablet, &server, "rn.park", "135790"));
    drop(signed_in(&tablet, &server, "rn.lee", "246802"));
    let token = device_token(&tablet, &server);
    let c = client(url.clone(), &token, "tablet-t07", &store);
    eventually("the chart did not arrive", || store.contains(id).unwrap()).await;
    assert!(c.wait_until_up_to_date(WAIT).await);
    c.stop().await;

    // Offline: rn.park charts, then rn.lee on top of it.
    for (user, pin, bpm) in [("rn.park", "135790", 88), ("rn.lee", "246802", 90)] {
        let session = tablet.unlock(user, pin).unwrap();
        signed_heart_rate(&store, &session, id, bpm);
        session.lock();
    }

    let c = client(url, &token, "tablet-t07", &store);
    let status = until(&c, "rn.lee's entry held", |s| !s.held.is_empty()).await;
    assert_eq!(status.held.len(), 1, "{status:?}");
    assert_eq!(status.held[0].chart, id);
    assert_eq!(status.held[0].reason, HoldReason::OutsideWards);
    // rn.park's entry is in the record and acknowledged as such; only rn.lee's waits.
    let status = until(&c, "rn.park's entry acknowledged", |s| {
        s.unacknowledged_commits == 1
    })
    .await;
    assert_eq!(status.unacknowledged, 1, "{status:?}");
    assert_eq!(status.state, SyncState::WaitingForReview, "{status:?}");
    c.stop().await;

    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let authors = |server: &Server| -> Vec<String> {
        on_server(server, &sup, id)["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["author"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(authors(&server), ["rn.park"]);
    assert!(server.stop().success());
    let server = Server::start(data.path());
    assert_eq!(authors(&server), ["rn.park"]);
}
