//! Shared ward tablets, the server's side (docs/adr/0008-shared-tablets.md): an administrator
//! keeps the staff directory and enrols a tablet with a one-time code; a nurse signs in on the
//! tablet once online and gets a certificate for a key that then stays on the tablet sealed
//! under her PIN; revocations and directory changes take her certificates away.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chartsync_core::chart::Role;
use chartsync_core::trust::{DeviceKey, KdfParams, SignedCertificate, UnlockedKey};
use common::*;
use serde_json::{json, Value};

fn challenge(server: &Server) -> Vec<u8> {
    let (status, body) = http_post(&server.addr, "/api/devices/challenge", None, "{}");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    B64.decode(v["challenge"].as_str().unwrap()).unwrap()
}

fn enrol(server: &Server, device: &DeviceKey, code: &str) -> (u16, Value) {
    let c = challenge(server);
    let body = json!({
        "code": code,
        "public_key": B64.encode(device.public_key()),
        "challenge": B64.encode(&c),
        "signature": B64.encode(device.sign_challenge(&c)),
    });
    let (status, body) = http_post(&server.addr, "/api/devices/enrol", None, &body.to_string());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A person's online sign-in on `device`, as a tablet app makes it.
fn sign_in(
    server: &Server,
    device: &DeviceKey,
    key: &UnlockedKey,
    user: &str,
    password: &str,
) -> (u16, Value) {
    let c = challenge(server);
    let mut with_key = c.clone();
    with_key.extend_from_slice(&key.public_key());
    let mut with_device = c.clone();
    with_device.extend_from_slice(&device.id().0);
    let body = json!({
        "user": user,
        "password": password,
        "public_key": B64.encode(key.public_key()),
        "challenge": B64.encode(&c),
        "possession": B64.encode(key.sign_possession(&with_device)),
        "device_signature": B64.encode(device.sign_challenge(&with_key)),
    });
    let path = format!("/api/devices/{}/sign-in", device.id());
    let (status, body) = http_post(&server.addr, &path, None, &body.to_string());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

const PASSWORD: &str = "night shift 4west";

#[test]
fn a_nurse_signs_in_on_an_enrolled_tablet_and_her_certificate_names_her_the_tablet_and_their_wards()
{
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    server.admin(
        &[
            "staff",
            "add",
            "--user",
            "rn.park",
            "--role",
            "nurse",
            "--ward",
            "4west",
            "--ward",
            "5east",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    let code = server.admin(
        &["device", "enroll", "--label", "T-07", "--ward", "4west"],
        "",
    );
    let code = code.trim();
    assert_eq!(code.len(), 14, "{code}");

    // The tablet enrols with the code, typed as a person would.
    let tablet = DeviceKey::from_secret(&[7; 32]).unwrap();
    let (status, enrolled) = enrol(&server, &tablet, &code.to_lowercase());
    assert_eq!(status, 200, "{enrolled}");
    assert_eq!(enrolled["device"], tablet.id().to_string());
    assert_eq!(enrolled["label"], "T-07");
    assert_eq!(enrolled["wards"], json!(["4west"]));
    assert_eq!(enrolled["policy"]["pin_attempts"], 5);
    let issuer_keys: Vec<[u8; 32]> = enrolled["issuer_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| B64.decode(k.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();

    // The code works once; another tablet cannot use it.
    let thief = DeviceKey::from_secret(&[8; 32]).unwrap();
    let (status, body) = enrol(&server, &thief, code);
    assert_eq!(status, 403, "{body}");

    // Rn.park signs in: her certificate covers the wards she shares with the tablet.
    let key = UnlockedKey::generate("rn.park");
    let (status, certified) = sign_in(&server, &tablet, &key, "rn.park", PASSWORD);
    assert_eq!(status, 200, "{certified}");
    let bytes = B64
        .decode(certified["certificate"].as_str().unwrap())
        .unwrap();
    let cert = SignedCertificate::from_bytes(&bytes, &issuer_keys).unwrap();
    let c = cert.certificate();
    assert_eq!((c.user.as_str(), c.role), ("rn.park", Role::Nurse));
    assert_eq!(c.wards, vec!["4west".to_string()]);
    assert_eq!((c.device, c.key), (tablet.id(), key.public_key()));
    let days = (c.not_after - c.issued_at) as f64 / 86_400.0;
    assert!((days - 7.0).abs() < 0.01, "{days} days");

    // Her key is sealed on the tablet under her PIN, and opens only with it.
    let key = key.certified(c.serial);
    let sealed = key
        .seal(&tablet, "482913", KdfParams::INSECURE_FOR_TESTS)
        .unwrap();
    assert_eq!(
        sealed.unseal("482913", &tablet).unwrap().public_key(),
        c.key
    );
    assert!(sealed.unseal("482914", &tablet).is_err());

    // Wrong password, unknown person, another tablet's signature: refused, alike.
    let other = UnlockedKey::generate("rn.park");
    let (status, wrong) = sign_in(&server, &tablet, &other, "rn.park", "not her password");
    assert_eq!(status, 401);
    let (status, unknown) = sign_in(&server, &tablet, &other, "rn.nobody", PASSWORD);
    assert_eq!(status, 401);
    assert_eq!(
        wrong, unknown,
        "an unknown person looks like a wrong password"
    );
    let (status, _) = sign_in(&server, &thief, &other, "rn.park", PASSWORD);
    assert_eq!(status, 403, "a tablet that never enrolled");

    // A person with no ward the tablet covers gets no certificate.
    server.admin(
        &[
            "staff",
            "add",
            "--user",
            "rn.icu",
            "--role",
            "nurse",
            "--ward",
            "icu",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    let (status, body) = sign_in(
        &server,
        &tablet,
        &UnlockedKey::generate("rn.icu"),
        "rn.icu",
        PASSWORD,
    );
    assert_eq!(status, 403, "{body}");
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
    let tablet = DeviceKey::from_secret(&[11; 32]).unwrap();
    assert_eq!(
        enrol(&server, &tablet, code["code"].as_str().unwrap()).0,
        200
    );
    let (status, first) = sign_in(
        &server,
        &tablet,
        &UnlockedKey::generate("rn.lee"),
        "rn.lee",
        PASSWORD,
    );
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
        &json!({"kind": "device", "subject": tablet.id().to_string(),
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
    let (status, _) = sign_in(
        &server,
        &tablet,
        &UnlockedKey::generate("rn.lee"),
        "rn.lee",
        PASSWORD,
    );
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
