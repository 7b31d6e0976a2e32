//! FHIR Bulk Data export with SMART Backend Services, end to end against a real server: an
//! exchange partner's system, registered with its public key, gets a token with an assertion
//! it signed, kicks off an export of 2,000 charts, polls it, and downloads NDJSON files that
//! `tests/fhir/run.sh` validates line by line with the project's two FHIR validators; each
//! chart it received is in its patient's accounting of disclosures. A client holding a wrongly
//! signed assertion, a replayed one, or none at all gets nothing.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use chartsync_core::chart::*;
use common::*;
use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The partner's key (P-384), a test fixture: its public half is registered with the server.
const PARTNER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDR9aaNT2OPUgqbTmyD
n0rDWSEJFneENRazHmO7ly4XfE//9RjwDSQ9nnR1auXHwAahZANiAARgLS9AVGOL
+2hTcC+KEShu3ysWW65vZK63EVHYYs3H/3zm39kzYcNVdfahyRGR43KRC7vcDFky
n0/xTyQnZ3eqAJjvPfbVMk4Z9R49tr/EclrtA0clUu0Ep3IGMEuy0/c=
-----END PRIVATE KEY-----
";

/// Another P-384 key, registered with no one: what an impostor signs with.
const IMPOSTOR_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDATrPEJkvjCtcedkPqX
+I129TkWT25VfM1RI9+dSjDSH3SICmynEXbxLARkz+9QgcKhZANiAATQeqc/tBsq
19K1Mcne/sUSL4xWUX5T4qjIDczL8p5an0r2hNtKa1fD+j9TMSA4ipwJ5YGK29hW
CfT/meYbVm6JZAMdwAYqLlxt+g4Dj9qo9o1MlBoR4YF10qp0N1AESuI=
-----END PRIVATE KEY-----
";

const CHARTS: usize = 2_000;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A PKCS#8 PEM key as a signing key.
fn ec_key(pem: &str) -> EncodingKey {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    EncodingKey::from_ec_der(&der)
}

/// A client assertion (RFC 7523) as the partner's system signs it.
fn assertion(key_pem: &str, kid: &str, client: &str, aud: &str, jti: &str) -> String {
    let key = ec_key(key_pem);
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some(kid.into());
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(
        &header,
        &json!({"iss": client, "sub": client, "aud": aud, "exp": now() + 240, "jti": jti}),
        &key,
    )
    .unwrap()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `POST /fhir/auth/token` with `assertion`: the status and the answer.
fn token(addr: &str, assertion: &str) -> (u16, Value) {
    token_for(addr, assertion, "system/*.read")
}

fn token_for(addr: &str, assertion: &str, scope: &str) -> (u16, Value) {
    let mut r = agent()
        .post(format!("http://{addr}/fhir/auth/token"))
        .send_form([
            ("grant_type", "client_credentials"),
            ("scope", scope),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    (status, body)
}

/// A GET with a bearer token and the headers a Bulk Data client sends: status, the headers
/// asked for, the body.
fn get(url: &str, bearer: &str, want: &[&str]) -> (u16, Vec<String>, String) {
    let mut r = agent()
        .get(url)
        .header("Authorization", format!("Bearer {bearer}"))
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .call()
        .unwrap();
    let headers = want
        .iter()
        .map(|h| {
            r.headers()
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        })
        .collect();
    (
        r.status().as_u16(),
        headers,
        r.body_mut().read_to_string().unwrap(),
    )
}

const CONSENT: &[u8] = include_bytes!("../fixtures/consent-3-pages.pdf");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_partner_exports_2000_charts_with_a_signed_assertion_and_an_impostor_gets_nothing(
) {
    let data = tempfile::tempdir().unwrap();
    // 2,000 charts in the store, most with vitals, some discharged, before the server starts.
    {
        let store = open_server_store(data.path());
        let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
        let nurse = Staff::new("rn.park", Role::Nurse, "tablet-4west-01");
        let coder = Staff::new("cod.lee", Role::Coder, "records-pc-2");
        for n in 0..CHARTS {
            let ward = if n % 4 == 0 { "5east" } else { "4west" };
            let mut chart = admit_at(&format!("MRN-{n:05}"), ward, at(n as i64), &clerk);
            let entry = chart
                .add_entry(&nurse, at(n as i64 + 5), heart_rate(60 + (n % 40) as u32))
                .unwrap();
            // Some signed, some coded: Provenance and Condition in the export too.
            if n % 5 == 0 {
                chart
                    .sign_entry(&nurse, at(n as i64 + 6), &entry, SignatureMeaning::Author)
                    .unwrap();
                chart
                    .assign_code(&coder, at(n as i64 + 7), pneumonia())
                    .unwrap();
            }
            if n % 3 == 0 {
                chart.discharge(&clerk, at(n as i64 + 60), "home").unwrap();
            }
            let id = store.create(chart).unwrap();
            // One patient's scanned consent: exported with its file.
            if n == 1 {
                let actor = chartsync_core::store::Actor {
                    user: "him.jones".into(),
                    role: "technician".into(),
                    device: "records-pc-1".into(),
                };
                let consent = chartsync_core::store::ScannedDocument {
                    media_type: MediaType::Pdf,
                    pages: 3,
                    title: "Consent to research use".into(),
                    document_type: DocumentType::Consent,
                    document_date: None,
                    body: String::new(),
                };
                store
                    .file_scanned_document(&actor, &clerk, id, at(n as i64 + 8), consent, CONSENT)
                    .unwrap();
            }
        }
    }
    let server = Server::start(data.path());
    let addr = server.addr.clone();
    let aud = format!("http://{addr}/fhir/auth/token");

    // The administrator registers the partner's system with the public half of its key.
    let public = Jwk::from_encoding_key(&ec_key(PARTNER_KEY), Algorithm::ES384).unwrap();
    let mut jwk = serde_json::to_value(&public).unwrap();
    jwk["kid"] = "partner-2026".into();
    let admin = server.token("admin.kim", "admin", &["*"]);
    let registration = json!({
        "client_id": "hie-partner",
        "name": "Regional health information exchange",
        "jwks": {"keys": [jwk]},
        "disclosure": "research",
        "recipient": "Regional HIE research registry",
        "recipient_address": "1 Exchange Way, Springfield",
    });
    let (status, body) = http_post(
        &addr,
        "/api/bulk-clients",
        Some(&admin),
        &registration.to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let nurse_token = server.token("rn.park", "nurse", &["4west"]);
    let (status, _) = http_post(
        &addr,
        "/api/bulk-clients",
        Some(&nurse_token),
        &registration.to_string(),
    );
    assert_eq!(status, 403);

    // An impostor signs with a key of its own under the partner's name and key id: refused.
    let forged = assertion(
        IMPOSTOR_KEY,
        "partner-2026",
        "hie-partner",
        &aud,
        "jti-forged",
    );
    let (status, body) = token(&addr, &forged);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    assert!(body.get("access_token").is_none());
    // No token, no export.
    let (status, _, _) = get(
        &format!("http://{addr}/fhir/Patient/$export"),
        "nothing",
        &[],
    );
    assert_eq!(status, 401);
    // A person's token is not a system's.
    let (status, _, _) = get(&format!("http://{addr}/fhir/Patient/$export"), &admin, &[]);
    assert_eq!(status, 401);

    // The partner, signing with its own key: a token, once per assertion.
    let signed = assertion(PARTNER_KEY, "partner-2026", "hie-partner", &aud, "jti-1");
    let (status, body) = token(&addr, &signed);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    let access = body["access_token"].as_str().unwrap().to_string();
    let (status, body) = token(&addr, &signed);
    assert_eq!(status, 401, "a replayed assertion: {body}");
    // The wrong audience: refused.
    let elsewhere = assertion(
        PARTNER_KEY,
        "partner-2026",
        "hie-partner",
        "https://elsewhere/token",
        "jti-2",
    );
    assert_eq!(token(&addr, &elsewhere).0, 401);

    // Kick-off without Prefer: respond-async, or with an unknown type: refused.
    let mut r = agent()
        .get(format!("http://{addr}/fhir/Patient/$export"))
        .header("Authorization", format!("Bearer {access}"))
        .call()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        400,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
    let (status, _, body) = get(
        &format!("http://{addr}/fhir/Patient/$export?_type=Nonsense"),
        &access,
        &[],
    );
    assert_eq!(status, 400, "{body}");

    // The export: kicked off, polled, its manifest, its files.
    let started = Instant::now();
    let (status, headers, body) = get(
        &format!("http://{addr}/fhir/Patient/$export?_outputFormat=application/fhir%2Bndjson"),
        &access,
        &["content-location"],
    );
    assert_eq!(status, 202, "{body}");
    let status_url = headers[0].clone();
    assert!(status_url.contains("/fhir/bulkstatus/"), "{status_url}");
    let mut progress_seen = Vec::new();
    let (manifest, expires): (Value, String) = loop {
        let (status, headers, body) = get(&status_url, &access, &["x-progress", "expires"]);
        match status {
            202 => {
                progress_seen.push(headers[0].clone());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            200 => break (serde_json::from_str(&body).unwrap(), headers[1].clone()),
            other => panic!("status {other}: {body}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the export never finished"
        );
    };
    let took = started.elapsed();
    assert!(
        progress_seen.iter().all(|p| p.contains("charts")),
        "{progress_seen:?}"
    );
    assert_eq!(manifest["requiresAccessToken"], true);
    // The files are kept a day (`--bulk-files-ttl`), and the manifest says until when.
    let expires = httpdate::parse_http_date(&expires).expect(&expires);
    let kept = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(
        kept > Duration::from_secs(23 * 3600) && kept <= Duration::from_secs(24 * 3600),
        "{kept:?}"
    );
    let output = manifest["output"].as_array().unwrap();
    let count_of = |ty: &str| {
        output
            .iter()
            .find(|o| o["type"] == ty)
            .map(|o| o["count"].as_u64().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(count_of("Patient"), CHARTS as u64);
    assert_eq!(count_of("Encounter"), CHARTS as u64);
    assert!(count_of("Observation") >= CHARTS as u64);

    // Downloaded, kept for the validators (tests/fhir/run.sh), each line a resource.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fhir-bulk");
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = 0;
    for o in output {
        let url = o["url"].as_str().unwrap();
        let (status, _, body) = get(url, &access, &[]);
        assert_eq!(status, 200);
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len() as u64, o["count"].as_u64().unwrap());
        for line in &lines {
            let resource: Value = serde_json::from_str(line).unwrap();
            assert_eq!(resource["resourceType"], o["type"]);
            assert!(
                !line.contains("urn:uuid:"),
                "a reference left bundle-relative: {line}"
            );
        }
        bytes += body.len();
        std::fs::write(
            dir.join(format!("{}.ndjson", o["type"].as_str().unwrap())),
            &body,
        )
        .unwrap();
    }
    // The scanned consent, with its file, among the DocumentReferences.
    let documents = std::fs::read_to_string(dir.join("DocumentReference.ndjson")).unwrap();
    let hash = chartsync_core::store::attachment_hash(CONSENT);
    let consent: Value = documents
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["identifier"][0]["value"] == hash.as_str())
        .expect("the scanned consent is exported");
    let data = consent["content"][0]["attachment"]["data"]
        .as_str()
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
        CONSENT
    );
    eprintln!(
        "bulk export of {CHARTS} charts: {took:?} from kick-off to manifest; {} files, {bytes} bytes of NDJSON; progress seen: {:?}",
        output.len(),
        progress_seen.first()
    );
    // The files need a token.
    let (status, _, _) = get(output[0]["url"].as_str().unwrap(), "nothing", &[]);
    assert_eq!(status, 401);

    // A Group export of one ward, only Patients, only charts changed since a time to come: none.
    let (status, headers, body) = get(
        &format!(
            "http://{addr}/fhir/Group/5east/$export?_type=Patient&_since=2099-01-01T00:00:00Z"
        ),
        &access,
        &["content-location"],
    );
    assert_eq!(status, 202, "{body}");
    let manifest: Value = loop {
        let (status, _, body) = get(&headers[0], &access, &[]);
        if status == 200 {
            break serde_json::from_str(&body).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(manifest["output"].as_array().unwrap().len(), 0);
    let (status, _, _) = get(
        &format!("http://{addr}/fhir/Group/nowhere/$export"),
        &access,
        &[],
    );
    assert_eq!(status, 404);

    // Each chart the partner received is in its patient's accounting, as a disclosure for
    // research to the registry; and in the chart's audit trail.
    let sup = server.token("him.sup", "records_supervisor", &["*"]);
    let (status, body) = http_get(&addr, "/api/disclosures?mrn=MRN-00007", Some(&sup));
    assert_eq!(status, 200, "{body}");
    let accounting: Value = serde_json::from_str(&body).unwrap();
    let disclosures = accounting["disclosures"].as_array().unwrap();
    assert_eq!(disclosures.len(), 1, "{accounting}");
    assert_eq!(
        disclosures[0]["recipient"],
        "Regional HIE research registry"
    );
    assert_eq!(disclosures[0]["purpose"], "research");

    // Another registered system (the hospital's analytics, its own key) cannot see the
    // partner's job; a scope narrower than what an export gives is refused, not widened.
    let analytics_key = Jwk::from_encoding_key(&ec_key(IMPOSTOR_KEY), Algorithm::ES384).unwrap();
    let mut analytics_jwk = serde_json::to_value(&analytics_key).unwrap();
    analytics_jwk["kid"] = "warehouse-1".into();
    let (status, body) = http_post(
        &addr,
        "/api/bulk-clients",
        Some(&admin),
        &json!({"client_id": "analytics", "name": "Data warehouse", "jwks": {"keys": [analytics_jwk]}})
            .to_string(),
    );
    assert_eq!(status, 201, "{body}");
    let narrow = assertion(IMPOSTOR_KEY, "warehouse-1", "analytics", &aud, "w-1");
    let (status, body) = token_for(&addr, &narrow, "system/Patient.read");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_scope");
    let (status, body) = token(
        &addr,
        &assertion(IMPOSTOR_KEY, "warehouse-1", "analytics", &aud, "w-2"),
    );
    assert_eq!(status, 200, "{body}");
    let analytics = body["access_token"].as_str().unwrap().to_string();
    let (status, _, _) = get(&status_url, &analytics, &[]);
    assert_eq!(status, 404, "another client's job");
    let (status, _, _) = get(output[0]["url"].as_str().unwrap(), &analytics, &[]);
    assert_eq!(status, 404, "another client's file");

    // Cleared by the client: gone.
    let mut r = agent()
        .delete(&status_url)
        .header("Authorization", format!("Bearer {access}"))
        .call()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        202,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
    let (status, _, _) = get(&status_url, &access, &[]);
    assert_eq!(status, 404);

    // Revoked: its next token request is refused.
    let (status, _) = http_post(
        &addr,
        "/api/bulk-clients/hie-partner/revoke",
        Some(&admin),
        "{}",
    );
    assert_eq!(status, 204);
    let again = assertion(PARTNER_KEY, "partner-2026", "hie-partner", &aud, "jti-3");
    assert_eq!(token(&addr, &again).0, 401);
    // The token it already holds opens nothing more.
    let (status, _, _) = get(&format!("http://{addr}/fhir/Patient/$export"), &access, &[]);
    assert_eq!(status, 403);
    // Its id is never given to another registration.
    let (status, body) = http_post(
        &addr,
        "/api/bulk-clients",
        Some(&admin),
        &registration.to_string(),
    );
    assert_eq!(status, 422, "{body}");
}
