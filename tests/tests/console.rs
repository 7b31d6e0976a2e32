//! The records console over HTTP, as a browser meets it (docs/adr/0010-records-console.md):
//! sign-in with the staff directory, the session cookie's flags, the worklist with its aging,
//! a nurse kept out, CSRF, automatic logoff, revocation, and the security headers. The same
//! screens in a real browser, with axe-core: tests/console/ (run by `console_browser` below).

mod common;

use std::path::Path;
use std::process::Command;

use common::console::{csrf, get, post, sign_in};
use common::*;

const RECORDS: &str = env!("CARGO_BIN_EXE_e2e-records");

/// A chart admitted to 4west 10 days ago whose H&P was written and signed 30 hours in: late,
/// 9 days past its due time, as a saved chart for the import.
fn late_history_physical() -> String {
    use chartsync_core::chart::*;
    let admitted = Timestamp::now().plus_seconds(-10 * 86_400 + 43_200);
    let patient = NewPatient {
        mrn: "MRN-0004".into(),
        family_name: "Okoye".into(),
        given_names: "Ben".into(),
        birth_date: Some("1961-07-02".into()),
        sex: Some(Sex::Male),
        address: None,
        phone: None,
    };
    let encounter = NewEncounter {
        ward: "4west".into(),
        bed: Some("14B".into()),
        class: EncounterClass::Inpatient,
        admit_source: None,
        attending: Some("dr.okafor".into()),
    };
    let physician = Staff::new("dr.okafor", Role::Physician, "tablet-4west-01");
    let technician = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let mut chart = Chart::create(patient, encounter, &technician, admitted).unwrap();
    let written = admitted.plus_seconds(30 * 3_600);
    let hp = chart
        .add_entry(
            &physician,
            written,
            NewEntry::note(EntryKind::HistoryPhysical, "History and physical."),
        )
        .unwrap();
    chart
        .sign_entry(&physician, written, &hp, SignatureMeaning::Author)
        .unwrap();
    use base64::Engine;
    serde_json::json!({
        "id": ChartId::random().to_string(),
        "automerge": base64::engine::general_purpose::STANDARD.encode(chart.save()),
    })
    .to_string()
}

/// A chart on `ward`, with its H&P written on time and signed, discharged `days_ago`; with its
/// discharge summary signed, or none (then it is delinquent 30 days after discharge).
fn discharged(mrn: &str, ward: &str, days_ago: i64, summary: bool) -> String {
    use chartsync_core::chart::*;
    let discharged_at = Timestamp::now().plus_seconds(-days_ago * 86_400);
    let admitted = discharged_at.plus_seconds(-3 * 86_400);
    let patient = NewPatient {
        mrn: mrn.into(),
        family_name: "Lindqvist".into(),
        given_names: "Eva".into(),
        birth_date: Some("1949-01-30".into()),
        sex: Some(Sex::Female),
        address: None,
        phone: None,
    };
    let encounter = NewEncounter {
        ward: ward.into(),
        bed: Some("2A".into()),
        class: EncounterClass::Inpatient,
        admit_source: None,
        attending: Some("dr.okafor".into()),
    };
    let physician = Staff::new("dr.okafor", Role::Physician, "tablet-4west-01");
    let technician = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let mut chart = Chart::create(patient, encounter, &technician, admitted).unwrap();
    let mut note = |kind: EntryKind, at: Timestamp| {
        let id = chart
            .add_entry(&physician, at, NewEntry::note(kind, "Documented."))
            .unwrap();
        chart
            .sign_entry(&physician, at, &id, SignatureMeaning::Author)
            .unwrap();
    };
    note(EntryKind::HistoryPhysical, admitted.plus_seconds(3_600));
    if summary {
        note(EntryKind::DischargeSummary, discharged_at);
    }
    chart.discharge(&technician, discharged_at, "home").unwrap();
    use base64::Engine;
    serde_json::json!({
        "id": ChartId::random().to_string(),
        "automerge": base64::engine::general_purpose::STANDARD.encode(chart.save()),
    })
    .to_string()
}

/// A store for the delinquency dashboard: on 4west, one record discharged 35 days ago with no
/// discharge summary (delinquent), one 45 days ago complete but for its coding; on icu, one
/// delinquent record the technician's wards do not cover.
/// Imports an NDJSON file of charts into the records store in `data` as him.jones.
fn import(data: &Path, file: &Path) {
    let out = Command::new(RECORDS)
        .arg("--data-dir")
        .arg(data)
        .args(test_database(data).map(|url| format!("--database-url={url}")))
        .args(["--user", "him.jones", "import"])
        .arg(file)
        .env("CHARTSYNC_STORE_KEY", STORE_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn discharged_store() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("discharged.ndjson");
    let lines = [
        discharged("MRN-0101", "4west", 35, false),
        discharged("MRN-0102", "4west", 45, true),
        discharged("MRN-0901", "icu", 40, false),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    import(data.path(), &file);
    data
}

/// A records store with four admissions to 4west and one to icu: three with no H&P, admitted
/// 3, 12 and 40 days before now, so their missing H&Ps are 2, 11 and 39 days overdue; and
/// MRN-0004, whose H&P came late (9 days overdue until acknowledged).
fn imported_store() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let now = chartsync_core::chart::Timestamp::now();
    let admission = |mrn: &str, ward: &str, days_ago: i64| {
        serde_json::json!({
            "patient": {"mrn": mrn, "family_name": "Rivera", "given_names": "Ana",
                        "birth_date": "1957-03-14", "sex": "female"},
            "encounter": {"ward": ward, "bed": "12A", "class": "inpatient", "attending": "dr.okafor"},
            // Half a day later than whole days ago, so the days overdue do not tick over
            // while the test runs.
            "admitted_at": now.plus_seconds(-days_ago * 86_400 + 43_200).to_string(),
        })
        .to_string()
    };
    let file = data.path().join("admissions.ndjson");
    let lines = [
        admission("MRN-0001", "4west", 3),
        admission("MRN-0002", "4west", 12),
        admission("MRN-0003", "4west", 40),
        admission("MRN-0900", "icu", 3),
        late_history_physical(),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    import(data.path(), &file);
    data
}

fn audit_rows(data: &Path) -> Vec<(String, String, String)> {
    server_rows(
        data,
        "SELECT \"user\", action, COALESCE(detail, '') FROM audit_events WHERE device = 'console' ORDER BY seq",
        &[],
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
    .collect()
}

#[test]
fn a_technician_signs_in_and_works_the_worklist_of_their_ward_with_its_aging() {
    let data = imported_store();
    let server = Server::start(data.path());
    add_staff(&server, "him.jones", "technician", &["4west"]);
    add_staff(&server, "dr.adeyemi", "physician", &["4west"]);
    let addr = &server.addr;

    // Before signing in: the sign-in page, and nothing else.
    let p = get(addr, "/console/worklist", None);
    assert_eq!((p.status, p.location.as_str()), (303, "/console/sign-in"));
    assert!(!p.body.contains("MRN-"));

    let p = post(
        addr,
        "/console/sign-in",
        None,
        Some(&format!("http://{addr}")),
        &[("user", "him.jones"), ("password", PASSWORD)],
    );
    assert_eq!(p.status, 303);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(
            p.set_cookie.contains(flag),
            "{flag} missing from {}",
            p.set_cookie
        );
    }
    assert!(
        !p.set_cookie.contains("Secure"),
        "plain HTTP here: a Secure cookie would never come back"
    );
    let cookie = p.set_cookie.split(';').next().unwrap().to_string();

    let p = get(addr, "/console/worklist", Some(&cookie));
    assert_eq!(p.status, 200);
    assert!(
        p.csp.contains("default-src 'none'") && p.csp.contains("frame-ancestors 'none'"),
        "{}",
        p.csp
    );
    assert!(!p.csp.contains("unsafe-inline"));
    // Their ward's three charts, not the icu's; each missing H&P in its aging bucket.
    for mrn in ["MRN-0001", "MRN-0002", "MRN-0003"] {
        assert!(p.body.contains(mrn), "{mrn} missing");
    }
    assert!(!p.body.contains("MRN-0900"), "another ward's chart shown");
    assert!(
        p.body.contains("<td>2 days</td>")
            && p.body.contains("<td>11 days</td>")
            && p.body.contains("<td>39 days</td>")
    );
    assert!(
        p.body.contains("<td>Rivera, Ana</td>"),
        "the patient's name"
    );
    for (bucket, n) in [
        ("1–7 days overdue", 1),
        ("8–14 days overdue", 2),
        ("Over 30 days overdue", 1),
        ("Not yet due", 0),
        ("Acknowledged", 0),
    ] {
        assert!(
            p.body
                .contains(&format!("<td data-bucket=\"{bucket}\">{n}</td>")),
            "{bucket}"
        );
    }

    // Two rows checked and routed to a physician, in one form with the page's token. The
    // filter by responsible then finds them under that physician.
    let token = csrf(&p.body);
    let checked = checkbox_values(&p.body, &["MRN-0001", "MRN-0002"]);
    let forged = post(
        addr,
        "/console/worklist/assign",
        Some(&cookie),
        None,
        &[
            ("csrf", &"0".repeat(64)),
            ("assignee", "dr.adeyemi"),
            ("d", &checked[0]),
        ],
    );
    assert_eq!(forged.status, 403, "assigned without the page's token");
    let mut form = vec![
        ("csrf", token.as_str()),
        ("back", "/console/worklist?ward=4west"),
        ("assignee", "dr.adeyemi"),
    ];
    form.extend(checked.iter().map(|v| ("d", v.as_str())));
    let p = post(
        addr,
        "/console/worklist/assign",
        Some(&cookie),
        Some(&format!("http://{addr}")),
        &form,
    );
    assert_eq!(
        (p.status, p.location.as_str()),
        (303, "/console/worklist?ward=4west"),
        "{}",
        p.body
    );
    let p = get(addr, "/console/worklist?ward=4west", Some(&cookie));
    assert!(
        p.body.contains("2 deficiencies assigned to dr.adeyemi."),
        "the form's outcome is said"
    );
    let p = get(
        addr,
        "/console/worklist?responsible=dr.adeyemi",
        Some(&cookie),
    );
    assert!(
        p.body.contains("MRN-0001") && p.body.contains("MRN-0002") && !p.body.contains("MRN-0003")
    );
    assert!(
        !p.body.contains("assigned to dr.adeyemi."),
        "said once, not on every page"
    );
    // Someone not in the directory: refused, nothing changed.
    let token = csrf(&p.body);
    let p = post(
        addr,
        "/console/worklist/assign",
        Some(&cookie),
        None,
        &[
            ("csrf", &token),
            ("assignee", "dr.nobody"),
            ("d", &checked[0]),
        ],
    );
    assert_eq!(p.status, 409);
    assert!(p.body.contains("no staff member dr.nobody"), "{}", p.body);

    // The late H&P: its link opens a form for the reason (the URL names the chart by id only);
    // acknowledged, it leaves the overdue buckets and the overdue filter.
    let p = get(addr, "/console/worklist", Some(&cookie));
    let link = acknowledge_link(&p.body);
    assert!(
        !link.contains("MRN") && !link.contains("Okoye"),
        "patient data in a URL: {link}"
    );
    let form_page = get(addr, &link, Some(&cookie));
    assert_eq!(form_page.status, 200, "{link}: {}", form_page.body);
    assert!(form_page.body.contains("MRN-0004") && form_page.body.contains("Okoye, Ben"));
    let mut fields = hidden_fields(&form_page.body);
    fields.push((
        "reason".into(),
        "Admitted at 02:00; the H&P followed the morning round.".into(),
    ));
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let p = post(
        addr,
        "/console/worklist/acknowledge",
        Some(&cookie),
        None,
        &fields,
    );
    assert_eq!(
        (p.status, p.location.as_str()),
        (303, "/console/worklist"),
        "{}",
        p.body
    );
    let p = get(addr, "/console/worklist", Some(&cookie));
    assert!(p
        .body
        .contains("The late history and physical is acknowledged."));
    assert!(p.body.contains("Acknowledged by him.jones on "));
    for (bucket, n) in [("8–14 days overdue", 1), ("Acknowledged", 1)] {
        assert!(
            p.body
                .contains(&format!("<td data-bucket=\"{bucket}\">{n}</td>")),
            "{bucket}"
        );
    }
    let p = get(addr, "/console/worklist?overdue=true", Some(&cookie));
    assert!(
        !p.body.contains("MRN-0004"),
        "an acknowledged H&P is not overdue"
    );

    // Filtered: overdue only, and a kind none of these charts has.
    let p = get(
        addr,
        "/console/worklist?kind=open_query&overdue=true",
        Some(&cookie),
    );
    assert_eq!(p.status, 200);
    assert!(!p.body.contains("MRN-0001"));
    assert!(p.body.contains("Nothing is missing"));
    // A ward not theirs is refused, not shown empty.
    let p = get(addr, "/console/worklist?ward=icu", Some(&cookie));
    assert_eq!(p.status, 403);
    assert!(!p.body.contains("MRN-0900"));

    // Sign-out needs the page's token; without it nothing happens.
    let token = csrf(&get(addr, "/console/worklist", Some(&cookie)).body);
    let p = post(
        addr,
        "/console/sign-out",
        Some(&cookie),
        None,
        &[("csrf", &"0".repeat(64))],
    );
    assert_eq!(p.status, 403);
    assert_eq!(
        get(addr, "/console/worklist", Some(&cookie)).status,
        200,
        "a forged sign-out ended the session"
    );
    let p = post(
        addr,
        "/console/sign-out",
        Some(&cookie),
        None,
        &[("csrf", &token)],
    );
    assert_eq!(
        (p.status, p.location.as_str()),
        (303, "/console/sign-in?ended=out")
    );
    assert!(p.set_cookie.contains("Max-Age=0"));
    let p = get(addr, "/console/worklist", Some(&cookie));
    assert_eq!(
        (p.status, p.location.as_str()),
        (303, "/console/sign-in"),
        "the old cookie still works"
    );

    // Audited: the sign-in and each list read, by whom and which ward.
    let rows = audit_rows(data.path());
    assert_eq!(rows[0].0, "him.jones");
    assert_eq!(rows[0].1, "sign_in");
    let lists: Vec<_> = rows.iter().filter(|r| r.1 == "list").collect();
    assert_eq!(lists.len(), 9, "each worklist shown: {rows:?}");
    assert!(
        lists.iter().all(|r| r.2 == "console worklist: ward 4west"),
        "{rows:?}"
    );
    let assigns: Vec<_> = rows.iter().filter(|r| r.1 == "assign").collect();
    assert_eq!(assigns.len(), 2, "one row per chart: {rows:?}");
    assert!(
        assigns.iter().all(|r| r
            .2
            .starts_with("assigned to dr.adeyemi: history_physical_missing")),
        "{rows:?}"
    );
    let acks: Vec<_> = rows.iter().filter(|r| r.1 == "acknowledge").collect();
    assert_eq!(acks.len(), 1);
    assert!(
        !acks[0].2.contains("morning round"),
        "the reason stays out of the audit detail"
    );
}

/// The values of the worklist's checkboxes on the rows of these MRNs.
fn checkbox_values(body: &str, mrns: &[&str]) -> Vec<String> {
    mrns.iter()
        .map(|mrn| {
            let row = body
                .split("<tr ")
                .find(|r| r.contains(&format!(">{mrn}</a></td>")))
                .expect(mrn);
            let at = row.find("name=\"d\"").expect("a checkbox");
            let v = &row[at..];
            let v = &v[v.find("value=\"").unwrap() + 7..];
            unescape(&v[..v.find('"').unwrap()])
        })
        .collect()
}

fn acknowledge_link(body: &str) -> String {
    let at = body
        .find("href=\"/console/worklist/acknowledge?")
        .expect("an acknowledge link")
        + 6;
    unescape(&body[at..at + body[at..].find('"').unwrap()])
}

/// The hidden fields of the acknowledge form.
fn hidden_fields(body: &str) -> Vec<(String, String)> {
    let form = &body[body
        .find("action=\"/console/worklist/acknowledge\"")
        .expect("the form")..];
    form.split("<input type=\"hidden\" ")
        .skip(1)
        .filter_map(|tag| {
            let name = tag.split("name=\"").nth(1)?.split('"').next()?;
            let value = tag.split("value=\"").nth(1)?.split('"').next()?;
            Some((name.to_string(), unescape(value)))
        })
        .collect()
}

/// HTML's escapes as askama writes them.
fn unescape(s: &str) -> String {
    s.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

#[test]
fn a_nurse_a_wrong_password_and_a_form_from_another_site_get_no_session() {
    let data = imported_store();
    let server = Server::start(data.path());
    add_staff(&server, "rn.park", "nurse", &["4west"]);
    add_staff(&server, "him.jones", "technician", &["4west"]);
    let addr = &server.addr;
    let here = format!("http://{addr}");

    let p = post(
        addr,
        "/console/sign-in",
        None,
        Some(&here),
        &[("user", "rn.park"), ("password", PASSWORD)],
    );
    assert_eq!(p.status, 403);
    assert!(p.set_cookie.is_empty(), "a nurse got a session");
    assert!(p.body.contains("for records staff"));

    let p = post(
        addr,
        "/console/sign-in",
        None,
        Some(&here),
        &[("user", "him.jones"), ("password", "not the password")],
    );
    assert_eq!(p.status, 401);
    assert!(p.set_cookie.is_empty());
    assert!(p.body.contains("not right"));
    let p = post(
        addr,
        "/console/sign-in",
        None,
        Some(&here),
        &[("user", "nobody"), ("password", PASSWORD)],
    );
    assert_eq!(
        p.status, 401,
        "an unknown user is told the same as a wrong password"
    );

    let p = post(
        addr,
        "/console/sign-in",
        None,
        Some("https://elsewhere.example"),
        &[("user", "him.jones"), ("password", PASSWORD)],
    );
    assert_eq!(p.status, 403);
    assert!(p.set_cookie.is_empty());
    // A cookie the server never gave opens nothing.
    let p = get(
        addr,
        "/console/worklist",
        Some("chartsync_console=0123456789abcdef"),
    );
    assert_eq!((p.status, p.location.as_str()), (303, "/console/sign-in"));
}

#[test]
fn an_idle_session_is_signed_out_and_a_revoked_person_is_signed_out_at_their_next_step() {
    let data = imported_store();
    let server = Server::start_with(data.path(), "127.0.0.1:0", &["--console-idle", "2s"]);
    add_staff(&server, "him.jones", "technician", &["4west"]);
    add_staff(&server, "him.lee", "technician", &["4west"]);
    let addr = &server.addr;

    let cookie = sign_in(addr, "him.jones");
    let p = get(addr, "/console/worklist", Some(&cookie));
    assert!(
        p.body.contains("data-idle-seconds=\"2\""),
        "the page's timer is the server's"
    );
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let p = get(addr, "/console/worklist", Some(&cookie));
    assert_eq!(
        (p.status, p.location.as_str()),
        (303, "/console/sign-in?ended=idle")
    );
    assert!(!p.body.contains("MRN-"));
    let p = get(addr, "/console/sign-in?ended=idle", None);
    assert!(
        p.body
            .contains("signed out after 2 seconds without activity"),
        "{}",
        p.body
    );
    // Ended for good: the cookie does not come back after another request.
    assert_eq!(
        get(addr, "/console/worklist", Some(&cookie)).location,
        "/console/sign-in"
    );

    let cookie = sign_in(addr, "him.lee");
    assert_eq!(get(addr, "/console/worklist", Some(&cookie)).status, 200);
    server.admin(
        &[
            "revoke",
            "person",
            "him.lee",
            "--reason",
            "left the hospital",
        ],
        "",
    );
    let p = get(addr, "/console/worklist", Some(&cookie));
    assert_eq!(
        (p.status, p.location.as_str()),
        (303, "/console/sign-in?ended=revoked")
    );
    assert!(!p.body.contains("MRN-"));
}

/// The console in headless Chromium (tests/console/technician.mjs, playwright-core driving
/// Debian's chromium): a technician signs in, filters, assigns and acknowledges with the
/// keyboard alone; axe-core finds no serious or critical violation on any screen; a nurse is
/// refused; a page left alone signs itself out. Then what the server stored is checked here.
#[test]
fn the_console_in_a_browser_is_worked_by_keyboard_and_passes_axe() {
    let data = imported_store();
    let server = Server::start(data.path());
    add_staff(&server, "him.jones", "technician", &["4west"]);
    add_staff(&server, "dr.adeyemi", "physician", &["4west"]);
    add_staff(&server, "rn.park", "nurse", &["4west"]);
    let idle_data = imported_store();
    let idle_server =
        Server::start_with(idle_data.path(), "127.0.0.1:0", &["--console-idle", "4s"]);
    add_staff(&idle_server, "him.jones", "technician", &["4west"]);
    let discharged_data = discharged_store();
    let discharged_server = Server::start_with(
        discharged_data.path(),
        "127.0.0.1:0",
        &["--delinquency-threshold", "10"],
    );
    add_staff(&discharged_server, "him.jones", "technician", &["4west"]);
    add_staff(&discharged_server, "cod.kim", "coder", &["4west"]);
    let release_data = tempfile::tempdir().unwrap();
    let release_file = release_data.path().join("charts.ndjson");
    std::fs::write(
        &release_file,
        reported_to_public_health(&with_authorization()),
    )
    .unwrap();
    import(release_data.path(), &release_file);
    let release_server = Server::start(release_data.path());
    add_staff(&release_server, "him.sup", "records_supervisor", &["*"]);
    // A chart a 4west tablet made for 5east: held whole, for the supervisor to decide.
    let devices = tempfile::tempdir().unwrap();
    let tablet = tablet_store(&devices, "tablet");
    let park = chartsync_core::chart::Staff::new(
        "rn.park",
        chartsync_core::chart::Role::Nurse,
        "tablet-4west-01",
    );
    let held_chart = tablet
        .create(admit_at("MRN-0099", "5east", at(0), &park))
        .unwrap();
    let nurse = release_server.token("rn.park", "nurse", &["4west"]);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = format!("ws://{}/sync", release_server.addr);
        let c = client(url, &nurse, "tablet-4west-01", &tablet);
        until(&c, "the new chart held", |s| s.held.len() == 1).await;
        c.stop().await;
    });

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "the browser test's packages are missing: run scripts/test.sh (npm install --prefix tests/console)"
    );
    // Debian's chromium on the PATH, or the one CHROMIUM names.
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "chromium (not found on the PATH)".into())
    });
    let screenshots = std::env::var("CONSOLE_SCREENSHOTS").unwrap_or_default();
    let out = Command::new("node")
        .current_dir(&dir)
        .arg("technician.mjs")
        .arg(format!("http://{}", server.addr))
        .arg(format!("http://{}", idle_server.addr))
        .arg(format!("http://{}", discharged_server.addr))
        .arg(format!("http://{}", release_server.addr))
        .env("CHROMIUM", &chromium)
        .env("PASSWORD", PASSWORD)
        .env("SCREENSHOTS", &screenshots)
        .output()
        .expect("node is needed for the browser test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser run failed (Chromium at {chromium:?}; scripts/test.sh installs Debian's chromium):\n{stderr}\n{stdout}"
    );
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .expect("the run's findings");
    let screens: serde_json::Value = serde_json::from_str(result).unwrap();
    let screens = screens.as_object().unwrap();
    let audited: Vec<&str> = screens.keys().map(String::as_str).collect();
    assert_eq!(
        audited,
        [
            "accounting given",
            "accounting letter",
            "accountings",
            "acknowledge",
            "chart coded",
            "chart completion",
            "chart search",
            "chart viewer",
            "chart's audit trail",
            "code search",
            "coding queue",
            "delinquency",
            "extension notice",
            "held changes",
            "import",
            "import done",
            "nurse refused",
            "patient index",
            "person's audit trail",
            "physician notice",
            "physicians",
            "refused",
            "release log",
            "release of information",
            "review queues",
            "sign-in",
            "signed out for idleness",
            "worklist",
            "worklist after the work"
        ],
        "every screen audited"
    );
    for (name, found) in screens {
        assert!(
            found["passes"].as_u64().unwrap() > 10,
            "{name}: axe checked little: {found}"
        );
        let serious: Vec<_> = found["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(serious.is_empty(), "{name}: {serious:?}");
    }
    eprintln!("axe-core, by screen: {result}");

    // What the server stored: two deficiencies routed to the physician, the late H&P
    // acknowledged with the reason typed, each audited as the technician's.
    drop(server);
    let assigned: Vec<String> = server_rows(
        data.path(),
        "SELECT c.mrn FROM deficiency_work w JOIN charts c ON c.key = w.chart WHERE w.assignee = 'dr.adeyemi' AND w.assigned_by = 'him.jones' ORDER BY c.mrn",
        &[],
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    assert_eq!(assigned, ["MRN-0002", "MRN-0003"]);
    let (mrn, by, reason): (String, String, String) = {
        let row = &server_rows(data.path(), "SELECT c.mrn, w.acknowledged_by, w.acknowledgement FROM deficiency_work w JOIN charts c ON c.key = w.chart WHERE w.acknowledged_at IS NOT NULL", &[])[0];
        (row[0].clone(), row[1].clone(), row[2].clone())
    };
    assert_eq!((mrn.as_str(), by.as_str()), ("MRN-0004", "him.jones"));
    assert!(reason.contains("morning round"));
    // And the deficiency added by hand: on MRN-0002's chart, for the physician.
    let (responsible, kind): (String, String) = {
        let row = &server_rows(data.path(), "SELECT d.responsible, d.kind FROM deficiencies d JOIN charts c ON c.key = d.chart WHERE c.mrn = 'MRN-0002' AND d.kind = 'added_by_hand'", &[])[0];
        (row[0].clone(), row[1].clone())
    };
    assert_eq!(
        (responsible.as_str(), kind.as_str()),
        ("dr.adeyemi", "added_by_hand")
    );
    let actions: Vec<String> = server_rows(data.path(), "SELECT action FROM audit_events WHERE device = 'console' AND \"user\" = 'him.jones' AND action IN ('assign', 'acknowledge', 'sign_in') ORDER BY seq", &[]).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(actions, ["sign_in", "assign", "assign", "acknowledge"]);
    // And the coder's work: MRN-0102's principal diagnosis, final, written from the console.
    drop(discharged_server);
    let row = server_rows(
        discharged_data.path(),
        "SELECT principal_diagnosis, open_deficiencies FROM charts WHERE mrn = 'MRN-0102'",
        &[],
    );
    assert_eq!((row[0][0].as_str(), row[0][1].as_str()), ("J18.9", "0"));
    let writes: i64 = server_rows(discharged_data.path(), "SELECT count(*) FROM audit_events WHERE \"user\" = 'cod.kim' AND device = 'console' AND action = 'write'", &[])[0][0].parse().unwrap();
    assert_eq!(writes, 2, "proposed, then made final");
    // And the supervisor's release: extended, prepared with its fee, released.
    let supervisor = release_server.token("him.sup", "records_supervisor", &["*"]);
    let chart = chart_by_mrn(&release_server, "MRN-0101").parse().unwrap();
    let request = on_server(&release_server, &supervisor, chart)["roi_requests"][0].clone();
    assert_eq!(request["status"], "fulfilled");
    assert_eq!(
        request["extension"]["reason"],
        "the records are in off-site storage"
    );
    assert_eq!(request["delivery"], "mail");
    assert_eq!(
        request["sensitive_review"]["categories"],
        serde_json::json!([])
    );
    assert_eq!(
        (&request["fee"]["basis"], &request["fee"]["total_cents"]),
        (&serde_json::json!("actual_cost"), &serde_json::json!(1688))
    );
    // And the accounting the supervisor gave: the public health report, kept as given.
    let (_, body) = http_get(
        &release_server.addr,
        "/api/accounting-requests?mrn=MRN-0101",
        Some(&supervisor),
    );
    let requests: serde_json::Value = serde_json::from_str(&body).unwrap();
    let given = &requests["requests"][0];
    assert_eq!(
        (&given["status"], &given["provided_by"]),
        (
            &serde_json::json!("provided"),
            &serde_json::json!("him.sup")
        )
    );
    let (_, body) = http_get(
        &release_server.addr,
        &format!("/api/accounting-requests/{}", given["id"].as_str().unwrap()),
        Some(&supervisor),
    );
    let kept: serde_json::Value = serde_json::from_str(&body).unwrap();
    let purposes: Vec<&str> = kept["accounting"]["disclosures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(purposes, ["public_health"]);
    // And the held chart the supervisor accepted: in the record now, on 5east.
    let view = on_server(&release_server, &supervisor, held_chart);
    assert_eq!(
        (&view["patient"]["mrn"], &view["encounter"]["ward"]),
        (&serde_json::json!("MRN-0099"), &serde_json::json!("5east"))
    );
    drop(release_server);
    let writes: i64 = server_rows(
        release_data.path(),
        "SELECT count(*) FROM audit_events WHERE \"user\" = 'him.sup' AND device = 'console' AND action = 'write'",
        &[],
    )[0][0]
        .parse()
        .unwrap();
    assert_eq!(
        writes, 6,
        "logged, extended, verified, prepared, released; the accounting request logged"
    );
}

/// The REST behind the worklist's forms: the same rules for a client that is not the console.
#[test]
fn the_worklist_s_work_over_rest_keeps_the_role_and_ward_rules_and_is_all_or_nothing() {
    let data = imported_store();
    let server = Server::start(data.path());
    add_staff(&server, "dr.adeyemi", "physician", &["4west"]);
    let addr = &server.addr;
    let technician = server.token("him.jones", "technician", &["4west"]);
    let everywhere = server.token("him.sup", "records_supervisor", &["*"]);
    let list = |token: &str, query: &str| -> Vec<serde_json::Value> {
        let (status, body) = http_get(addr, &format!("/api/deficiencies{query}"), Some(token));
        assert_eq!(status, 200, "{body}");
        assert!(
            !body.contains("Rivera") && !body.contains("Okoye"),
            "ids, not names: {body}"
        );
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["deficiencies"]
            .as_array()
            .unwrap()
            .clone()
    };
    let reference = |item: &serde_json::Value| {
        let d = &item["deficiency"];
        serde_json::json!({"chart": item["chart"], "kind": d["kind"], "section": d["section"],
                           "record_id": d["record_id"], "detail": d["detail"]})
    };
    let all = list(&everywhere, "");
    let by_mrn = |mrn: &str| all.iter().find(|i| i["mrn"] == mrn).unwrap();
    let ward_item = by_mrn("MRN-0001");
    let icu_item = by_mrn("MRN-0900");
    let late_item = by_mrn("MRN-0004");
    let assign = |token: &str, body: serde_json::Value| {
        http_post(
            addr,
            "/api/deficiencies/assign",
            Some(token),
            &body.to_string(),
        )
    };

    for role in ["nurse", "physician", "coder"] {
        let token = server.token("someone", role, &["4west"]);
        let (status, _) = assign(
            &token,
            serde_json::json!({"assignee": "dr.adeyemi", "deficiencies": [reference(ward_item)]}),
        );
        assert_eq!(status, 403, "{role}");
    }
    let (status, body) = http_post(
        addr,
        "/api/deficiencies/assign",
        Some(&technician),
        "{\"assignee\": ",
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = assign(
        &technician,
        serde_json::json!({"assignee": "dr.adeyemi", "deficiencies": [], "urgent": true}),
    );
    assert_eq!(status, 400, "an unknown field is refused: {body}");
    // A chart of another ward, beside one of theirs: refused, and neither is assigned.
    let (status, body) = assign(
        &technician,
        serde_json::json!({"assignee": "dr.adeyemi", "deficiencies": [reference(ward_item), reference(icu_item)]}),
    );
    assert_eq!(status, 403, "{body}");
    // A deficiency that is not open (say, put right since the list was read): 409, none assigned.
    let mut stale = reference(ward_item);
    stale["kind"] = "discharge_summary_missing".into();
    let (status, body) = assign(
        &technician,
        serde_json::json!({"assignee": "dr.adeyemi", "deficiencies": [reference(late_item), stale]}),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        list(&technician, "?responsible=dr.adeyemi").is_empty(),
        "nothing was assigned"
    );

    let (status, body) = assign(
        &technician,
        serde_json::json!({"assignee": "dr.adeyemi", "deficiencies": [reference(ward_item)]}),
    );
    assert_eq!(status, 200, "{body}");
    let done: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (done["deficiencies"].as_u64(), done["charts"].as_u64()),
        (Some(1), Some(1))
    );
    let theirs = list(&technician, "?responsible=dr.adeyemi");
    assert_eq!(theirs.len(), 1);
    assert_eq!(
        (theirs[0]["mrn"].as_str(), theirs[0]["assignee"].as_str()),
        (Some("MRN-0001"), Some("dr.adeyemi"))
    );

    // Acknowledged: only the late H&P, only with a reason.
    let acknowledge = |d: serde_json::Value, reason: &str| {
        http_post(
            addr,
            "/api/deficiencies/acknowledge",
            Some(&technician),
            &serde_json::json!({"reason": reason, "deficiency": d}).to_string(),
        )
    };
    let (status, body) = acknowledge(reference(ward_item), "seen");
    assert_eq!(status, 400);
    assert!(body.contains("only a late H&P is acknowledged"), "{body}");
    assert_eq!(acknowledge(reference(late_item), " ").0, 400);
    assert_eq!(
        acknowledge(reference(late_item), "admitted overnight").0,
        204
    );
    let late = list(&technician, "")
        .into_iter()
        .find(|i| i["mrn"] == "MRN-0004")
        .unwrap();
    assert_eq!(late["acknowledged"]["by"], "him.jones");
    assert_eq!(late["acknowledged"]["reason"], "admitted overnight");
    assert_eq!(late["overdue"], false);

    // The refusal of another ward's chart is audited; the work is, per chart.
    drop(server);
    let rows: Vec<(String, String)> = server_rows(
        data.path(),
        "SELECT action, COALESCE(detail, '') FROM audit_events WHERE \"user\" = 'him.jones' AND action IN ('deny', 'assign', 'acknowledge') ORDER BY seq",
        &[],
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["deny", "assign", "acknowledge"],
        "{rows:?}"
    );
}

/// The delinquency dashboard over HTTP and REST: the ward's delinquent records against its
/// discharges and the hospital's threshold, the coding backlog apart, the day counted for the
/// trend; another ward's records not counted; a nurse refused; audited.
#[test]
fn the_delinquency_dashboard_counts_the_ward_s_delinquent_records_against_its_discharges() {
    let data = discharged_store();
    // A low limit: whatever months the two discharges fall in, one delinquent record is over it.
    let server = Server::start_with(
        data.path(),
        "127.0.0.1:0",
        &["--delinquency-threshold", "10"],
    );
    add_staff(&server, "him.jones", "technician", &["4west"]);
    add_staff(&server, "rn.park", "nurse", &["4west"]);
    let addr = &server.addr;
    let cookie = sign_in(addr, "him.jones");
    // The server counts the day as it starts, on a task of its own: on a busy machine the
    // first page can come before it.
    let today = chartsync_core::chart::Timestamp::now().date().to_string();
    let counted = format!("<td>{today}</td><td class=\"n\">1</td><td class=\"n\">2</td>");
    let deadline = std::time::Instant::now() + WAIT;
    let p = loop {
        let p = get(addr, "/console/delinquency", Some(&cookie));
        if p.body.contains(&counted) || std::time::Instant::now() > deadline {
            break p;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(
        p.body.contains("<dd id=\"delinquent\">1</dd>"),
        "the icu record is not theirs: {}",
        p.body
    );
    assert!(p.body.contains("Over the limit"), "{}", p.body);
    assert!(p
        .body
        .contains("<td>Discharge summary missing</td><td class=\"n\">1</td>"));
    let text = p.body.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains("2 discharged records wait for final coding; 2 of them past"),
        "{text}"
    );
    // Counted when the server started: the trend has today.
    assert!(p.body.contains(&counted), "{}", p.body);
    assert!(p.body.contains("<svg") && p.body.contains("role=\"img\""));
    let p = get(addr, "/console/delinquency?ward=icu", Some(&cookie));
    assert_eq!(p.status, 403);

    // REST: the same numbers, for a supervisor of every ward; a nurse is refused.
    let supervisor = server.token("him.sup", "records_supervisor", &["*"]);
    let (status, body) = http_get(addr, "/api/delinquency", Some(&supervisor));
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["delinquent_records"], 2);
    assert_eq!(report["coding_backlog"], 3);
    assert_eq!(report["threshold_percent"], 10);
    assert_eq!(report["over_threshold"], true);
    let average = report["average_monthly_discharges"].as_f64().unwrap();
    let percent = report["percent_of_discharges"].as_f64().unwrap();
    assert!((percent - 200.0 / average).abs() < 1e-9, "{report}");
    let (status, body) = http_get(addr, "/api/delinquency?ward=icu", Some(&supervisor));
    assert_eq!(status, 200);
    let icu: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            icu["delinquent_records"].as_u64(),
            icu["coding_backlog"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let nurse = server.token("rn.park", "nurse", &["4west"]);
    assert_eq!(http_get(addr, "/api/delinquency", Some(&nurse)).0, 403);

    drop(server);
    let lists: Vec<String> = audit_rows(data.path())
        .into_iter()
        .filter(|r| r.1 == "list")
        .map(|r| r.2)
        .collect();
    assert_eq!(
        lists,
        ["console delinquency: ward 4west"],
        "the console's read, audited"
    );
}

/// A ward's long worklist comes a page at a time, with every deficiency in the aging counts;
/// the pages' links keep the filters, and a page past the end shows the last.
#[test]
fn a_long_worklist_comes_a_page_at_a_time_with_the_aging_of_all_of_it() {
    let data = tempfile::tempdir().unwrap();
    let now = chartsync_core::chart::Timestamp::now();
    let lines: Vec<String> = (0..150)
        .map(|n| {
            serde_json::json!({
                "patient": {"mrn": format!("MRN-{n:04}"), "family_name": "Rivera", "given_names": "Ana"},
                "encounter": {"ward": "4west", "class": "inpatient", "attending": "dr.okafor"},
                // Half a day apart, the last 5 days ago: soonest due first is MRN-0000.
                "admitted_at": now.plus_seconds(-5 * 86_400 - (149 - n) * 43_200).to_string(),
            })
            .to_string()
        })
        .collect();
    let file = data.path().join("admissions.ndjson");
    std::fs::write(&file, lines.join("\n")).unwrap();
    import(data.path(), &file);
    let server = Server::start(data.path());
    add_staff(&server, "him.jones", "technician", &["4west"]);
    let addr = &server.addr;
    let cookie = sign_in(addr, "him.jones");
    let rows = |body: &str| body.matches("<tr data-chart=").count();

    let p = get(
        addr,
        "/console/worklist?kind=history_physical_missing",
        Some(&cookie),
    );
    assert!(p.body.contains("150 deficiencies, soonest due first"));
    assert!(p.body.contains("Showing 1–100 of 150."));
    assert_eq!(rows(&p.body), 100);
    let total: usize = [
        "1–7 days overdue",
        "8–14 days overdue",
        "15–30 days overdue",
        "Over 30 days overdue",
    ]
    .iter()
    .map(|b| {
        let at = p.body.find(&format!("data-bucket=\"{b}\">")).unwrap() + b.len() + 15;
        p.body[at..at + p.body[at..].find('<').unwrap()]
            .parse::<usize>()
            .unwrap()
    })
    .sum();
    assert_eq!(total, 150, "the aging counts every page");
    assert!(p.body.contains("MRN-0099") && !p.body.contains("MRN-0100"));
    let next = "/console/worklist?kind=history_physical_missing&#38;page=2";
    assert!(
        p.body.contains(&format!("href=\"{next}\" rel=\"next\"")),
        "the filters travel with the page"
    );
    assert!(!p.body.contains("rel=\"prev\""));

    let p = get(addr, &unescape(next), Some(&cookie));
    assert!(p.body.contains("Showing 101–150 of 150."));
    assert_eq!(rows(&p.body), 50);
    assert!(
        p.body.contains("MRN-0100") && p.body.contains("MRN-0149") && !p.body.contains("MRN-0099")
    );
    assert!(p.body.contains("rel=\"prev\"") && !p.body.contains("rel=\"next\""));
    // A form on page 2 comes back to page 2.
    assert!(
        p.body.contains(
            "name=\"back\" value=\"/console/worklist?kind=history_physical_missing&#38;page=2\""
        ),
        "{}",
        &p.body[..2000]
    );
    let p = get(addr, "/console/worklist?page=99", Some(&cookie));
    assert!(
        p.body.contains("Showing 101–150 of 150."),
        "past the end: the last page"
    );

    // REST a page at a time: the same order, the total in a header, the next page linked
    // with the filters kept; a bad page is refused by name.
    let token = server.token("him.jones", "technician", &["4west"]);
    let rest = |path: &str| {
        let mut r = common::console::agent()
            .get(format!("http://{addr}{path}"))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (status, total, link) = (r.status().as_u16(), header("x-total-count"), header("link"));
        let body: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        (status, total, link, body)
    };
    let mrns = |body: &serde_json::Value| -> Vec<String> {
        body["deficiencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["mrn"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, total, link, body) =
        rest("/api/deficiencies?kind=history_physical_missing&limit=60");
    assert_eq!((status, total.as_str()), (200, "150"));
    let first = mrns(&body);
    assert_eq!((first.len(), first[0].as_str()), (60, "MRN-0000"));
    assert_eq!(
        link,
        "</api/deficiencies?kind=history_physical_missing&limit=60&offset=60>; rel=\"next\""
    );
    let (_, _, link, body) =
        rest("/api/deficiencies?kind=history_physical_missing&limit=60&offset=120");
    let last = mrns(&body);
    assert_eq!((last.len(), last[0].as_str()), (30, "MRN-0120"));
    assert!(
        link.contains("offset=60>; rel=\"prev\"") && !link.contains("next"),
        "{link}"
    );
    let (_, total, link, body) = rest("/api/deficiencies?kind=history_physical_missing");
    assert_eq!(
        (mrns(&body).len(), total.as_str(), link.as_str()),
        (150, "150", ""),
        "one page of 1,000"
    );
    for bad in ["limit=0", "limit=10001", "offset=-1", "limit=ten"] {
        let (status, _, _, body) = rest(&format!("/api/deficiencies?{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

/// A chart admitted to 4west 6 days ago and discharged home 2 days ago: its H&P, an
/// appendectomy's operative note by dr.lee (signed), its discharge summary; no code yet.
fn operated() -> (chartsync_core::chart::ChartId, String) {
    use chartsync_core::chart::*;
    let discharged_at = Timestamp::now().plus_seconds(-2 * 86_400);
    let admitted = discharged_at.plus_seconds(-4 * 86_400);
    let patient = NewPatient {
        mrn: "MRN-0201".into(),
        family_name: "Haddad".into(),
        given_names: "Omar".into(),
        birth_date: Some("1988-05-11".into()),
        sex: Some(Sex::Male),
        address: None,
        phone: None,
    };
    let encounter = NewEncounter {
        ward: "4west".into(),
        bed: Some("7A".into()),
        class: EncounterClass::Inpatient,
        admit_source: None,
        attending: Some("dr.okafor".into()),
    };
    let physician = Staff::new("dr.okafor", Role::Physician, "tablet-4west-01");
    let surgeon = Staff::new("dr.lee", Role::Physician, "tablet-or-01");
    let technician = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let mut chart = Chart::create(patient, encounter, &technician, admitted).unwrap();
    let mut note = |by: &Staff, kind: EntryKind, at: Timestamp, body: &str| {
        let id = chart.add_entry(by, at, NewEntry::note(kind, body)).unwrap();
        chart
            .sign_entry(by, at, &id, SignatureMeaning::Author)
            .unwrap();
        id
    };
    note(
        &physician,
        EntryKind::HistoryPhysical,
        admitted.plus_seconds(3_600),
        "Right lower quadrant pain.",
    );
    let operated_at = admitted.plus_seconds(8 * 3_600);
    let operative = note(
        &surgeon,
        EntryKind::OperativeNote,
        operated_at,
        "Laparoscopic appendectomy.",
    );
    note(
        &physician,
        EntryKind::DischargeSummary,
        discharged_at,
        "Home, well.",
    );
    chart.discharge(&technician, discharged_at, "home").unwrap();
    let id = ChartId::random();
    use base64::Engine;
    let line = serde_json::json!({
        "id": id.to_string(),
        "automerge": base64::engine::general_purpose::STANDARD.encode(chart.save()),
        "operative_note": operative,
    });
    (id, line.to_string())
}

/// The coding queue with the stay each chart describes, a chart's codes found by words and by
/// number, a procedure's date and surgeon from its operative note, POA set and codes made
/// final by a coder (a technician may propose but not finalize); what the coder did is in the
/// chart the server holds, audited, and reaches a physician's PC that holds the chart.
#[test]
fn a_coder_finds_codes_by_words_and_finalizes_them_and_the_chart_carries_them_to_devices() {
    let data = tempfile::tempdir().unwrap();
    let (chart, line) = operated();
    let mut fixture: serde_json::Value = serde_json::from_str(&line).unwrap();
    let operative = fixture["operative_note"].as_str().unwrap().to_string();
    fixture.as_object_mut().unwrap().remove("operative_note");
    let file = data.path().join("charts.ndjson");
    std::fs::write(
        &file,
        [fixture.to_string(), discharged("MRN-0901", "icu", 3, true)].join("\n"),
    )
    .unwrap();
    import(data.path(), &file);
    let server = Server::start_with(data.path(), "127.0.0.1:0", &["--bill-hold-days", "4"]);
    add_staff(&server, "cod.kim", "coder", &["4west"]);
    add_staff(&server, "him.jones", "technician", &["4west"]);
    let addr = &server.addr;

    // A physician's PC holds the chart from before the discharge (physicians complete
    // records after it).
    let devices = tempfile::tempdir().unwrap();
    let pc = tablet_store(&devices, "physician-pc");
    let saved = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(fixture["automerge"].as_str().unwrap())
            .unwrap()
    };
    pc.insert(chart, chartsync_core::chart::Chart::load(&saved).unwrap())
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let physician = server.token("dr.okafor", "physician", &["4west"]);
    let sync = runtime.block_on(async {
        let c = client(format!("ws://{addr}/sync"), &physician, "physician-pc", &pc);
        assert!(c.wait_until_up_to_date(WAIT).await);
        c
    });

    let cookie = sign_in(addr, "cod.kim");
    let p = get(addr, "/console/coding", Some(&cookie));
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(
        p.body
            .contains("1 discharged chart waiting for final coding"),
        "{}",
        p.body
    );
    assert!(
        !p.body.contains("MRN-0901"),
        "another ward's chart is not listed"
    );
    let row = &p.body[p.body.find(&format!("data-chart=\"{chart}\"")).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    for shown in [
        "MRN-0201",
        "Haddad, Omar",
        "dr.okafor",
        "Inpatient",
        ">4<",
        "Home",
        "no principal diagnosis",
    ] {
        assert!(row.contains(shown), "{shown} in {row}");
    }
    assert!(p.body.contains("billing hold of 4 days"));
    let due = pages_day(chartsync_core::chart::Timestamp::now().plus_seconds(2 * 86_400));
    assert!(
        row.contains(&due),
        "due when the 4-day hold ends ({due}): {row}"
    );

    let page = format!("/console/coding/chart?id={chart}");
    let p = get(addr, &page, Some(&cookie));
    assert!(p.body.contains("No code is on this chart yet."));
    assert!(p.body.contains("Operative note") && p.body.contains("dr.lee"));
    let token = csrf(&p.body);
    let origin = format!("http://{addr}");
    let chart_id = chart.to_string();
    let form = |path: &str, fields: &[(&str, &str)]| {
        let mut all = vec![("csrf", token.as_str()), ("chart", chart_id.as_str())];
        all.extend_from_slice(fields);
        post(addr, path, Some(&cookie), Some(&origin), &all)
    };

    // Found by words: the search is a POST, so the words stay out of the URL.
    let found = form(
        "/console/coding/search",
        &[("q", "pneumonia unspecified organism")],
    );
    assert_eq!(found.status, 200);
    assert!(
        found.body.contains("value=\"J18.9\" checked"),
        "the most general first"
    );
    assert!(found.body.contains("Pneumonia, unspecified organism"));
    let none = form("/console/coding/search", &[("q", "zzqx")]);
    assert!(none
        .body
        .contains("No billable ICD-10-CM code has those words"));
    let forged = post(
        addr,
        "/console/coding/search",
        Some(&cookie),
        Some(&origin),
        &[("csrf", "x"), ("chart", &chart.to_string()), ("q", "a")],
    );
    assert_eq!(forged.status, 403, "no CSRF token, no search");

    let done = form(
        "/console/coding/assign",
        &[("pick", "J18.9"), ("sequence", "principal"), ("poa", "")],
    );
    assert_eq!(
        (done.status, done.location.as_str()),
        (303, page.as_str()),
        "{}",
        done.body
    );
    let p = get(addr, &page, Some(&cookie));
    assert!(
        p.body
            .contains("J18.9 proposed as the principal diagnosis."),
        "{}",
        p.body
    );
    // An appendectomy by its number, documented in the operative note.
    let done = form(
        "/console/coding/assign",
        &[
            ("system", "icd10pcs"),
            ("code", "0DTJ4ZZ"),
            ("sequence", "secondary"),
            ("supporting", &operative),
        ],
    );
    assert_eq!(done.status, 303, "{}", done.body);
    // A code that does not exist: refused with why, nothing written.
    let bad = form(
        "/console/coding/assign",
        &[
            ("system", "icd10cm"),
            ("code", "J18.99"),
            ("sequence", "secondary"),
        ],
    );
    assert_eq!(bad.status, 422, "{}", bad.body);

    let rest = |token: &str| {
        let (status, body) = http_get(addr, &format!("/api/charts/{chart}/coding"), Some(token));
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains("Haddad"), "ids, not names: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let coder = server.token("cod.kim", "coder", &["4west"]);
    let coding = rest(&coder);
    let codes = coding["codes"].as_array().unwrap();
    assert_eq!(codes.len(), 2, "{coding}");
    let by_code = |c: &str| codes.iter().find(|k| k["code"] == c).unwrap().clone();
    let (pneumonia, appendectomy) = (by_code("J18.9"), by_code("0DTJ4ZZ"));
    assert_eq!(pneumonia["description"], "Pneumonia, unspecified organism");
    assert_eq!(pneumonia["coded_by"], "cod.kim");
    assert_eq!(appendectomy["performed_by"], serde_json::json!(["dr.lee"]));
    assert!(appendectomy["performed_at"].is_string(), "{appendectomy}");
    let p = get(addr, &page, Some(&cookie));
    assert!(
        p.body.contains(" by dr.lee"),
        "the procedure's surgeon on the page"
    );

    // A technician proposes, but only a coder makes a code final.
    let technician = sign_in(addr, "him.jones");
    let t = get(addr, &page, Some(&technician));
    assert!(
        !t.body.contains("Make final"),
        "no button the technician may not press"
    );
    let refused = post(
        addr,
        "/console/coding/change",
        Some(&technician),
        Some(&origin),
        &[
            ("csrf", &csrf(&t.body)),
            ("chart", &chart.to_string()),
            ("coding", pneumonia["id"].as_str().unwrap()),
            ("status", "final"),
        ],
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(rest(&coder)["codes"][0]["status"], "proposed");

    for (code, poa) in [(&pneumonia, "Y"), (&appendectomy, "")] {
        let done = form(
            "/console/coding/change",
            &[
                ("coding", code["id"].as_str().unwrap()),
                ("poa", poa),
                ("status", "final"),
            ],
        );
        assert_eq!(done.status, 303, "{}", done.body);
    }
    let coding = rest(&coder);
    assert!(
        coding["codes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "final"),
        "{coding}"
    );
    assert_eq!(by_code_in(&coding, "J18.9")["poa"], "Y");
    let p = get(addr, "/console/coding", Some(&cookie));
    assert!(
        p.body.contains("0 discharged charts waiting"),
        "the chart leaves the queue"
    );
    let (_, queue) = http_get(addr, "/api/coding-queue", Some(&coder));
    assert!(!queue.contains(&chart.to_string()), "{queue}");

    // The physician's PC hears of the coder's work like any other change.
    runtime.block_on(eventually("the codes reach the physician's PC", || {
        pc.read(chart, |c| c.view().unwrap().coding)
            .unwrap()
            .iter()
            .filter(|k| {
                k.status == chartsync_core::chart::CodingStatus::Final && k.coded_by == "cod.kim"
            })
            .count()
            == 2
    }));
    runtime.block_on(sync.stop());

    // Audited: reads of the chart's coding, and the writes as the coder's, from the console.
    drop(server);
    let rows: Vec<(String, String, String)> = server_rows(
        data.path(),
        "SELECT \"user\", device, action FROM audit_events WHERE chart_id = ?1 AND action IN ('read', 'write', 'deny') ORDER BY seq",
        &[&chart.to_string()],
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
    .filter(|(u, _, _)| u != "dr.okafor")
    .collect();
    let writes = rows
        .iter()
        .filter(|(u, d, a)| u == "cod.kim" && d == "console" && a == "write")
        .count();
    assert_eq!(writes, 4, "two proposals and two finals: {rows:?}");
    assert!(rows
        .iter()
        .any(|(u, d, a)| u == "cod.kim" && d == "console" && a == "read"));
}

fn by_code_in(coding: &serde_json::Value, code: &str) -> serde_json::Value {
    coding["codes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["code"] == code)
        .unwrap()
        .clone()
}

/// A date as the console's tables show it.
fn pages_day(t: chartsync_core::chart::Timestamp) -> String {
    t.to_rfc3339()[..10].to_string()
}

/// The REST behind the coding screens keeps the same rules for a client that is not the
/// console: who may look codes up, read a chart's coding, propose and finalize; bad input
/// refused with why and nothing written.
#[test]
fn coding_over_rest_keeps_the_role_and_ward_rules_and_refuses_bad_input() {
    let data = discharged_store();
    let server = Server::start(data.path());
    let addr = &server.addr;
    let coder = server.token("cod.kim", "coder", &["4west"]);
    let icu_coder = server.token("cod.ray", "coder", &["icu"]);
    let supervisor = server.token("him.sup", "records_supervisor", &["*"]);
    let nurse = server.token("rn.park", "nurse", &["4west"]);

    let (status, _) = http_get(addr, "/api/codes?q=pneumonia", Some(&nurse));
    assert_eq!(status, 403, "a nurse does not look codes up here");
    let (status, body) = http_get(
        addr,
        "/api/codes?q=type%202%20diabetes%20without%20complications&limit=5",
        Some(&coder),
    );
    assert_eq!(status, 200, "{body}");
    let found: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(found["codes"][0]["code"], "E11.9", "{found}");
    assert!(found["code_set"].as_str().unwrap().starts_with("ICD-10-CM"));
    assert!(found["codes"].as_array().unwrap().len() <= 5);
    for bad in [
        "/api/codes",
        "/api/codes?q=%20",
        "/api/codes?q=flu&limit=0",
        "/api/codes?q=flu&limit=x",
    ] {
        let (status, body) = http_get(addr, bad, Some(&coder));
        assert_eq!(status, 400, "{bad}: {body}");
    }

    let (_, queue) = http_get(addr, "/api/coding-queue", Some(&supervisor));
    let queue: serde_json::Value = serde_json::from_str(&queue).unwrap();
    let chart = queue["charts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["mrn"] == "MRN-0101")
        .unwrap()["chart"]
        .as_str()
        .unwrap()
        .to_string();
    let coding = format!("/api/charts/{chart}/coding");
    let (status, _) = http_get(addr, &coding, Some(&icu_coder));
    assert_eq!(status, 403, "another ward's chart");
    let (status, _) = http_get(addr, &coding, Some(&nurse));
    assert_eq!(status, 403, "a nurse");
    let (status, _) = http_get(
        addr,
        &format!(
            "/api/charts/{}/coding",
            chartsync_core::chart::ChartId::random()
        ),
        Some(&coder),
    );
    assert_eq!(status, 404);
    let (status, body) = http_get(addr, &coding, Some(&supervisor));
    assert_eq!(status, 200, "a supervisor reads: {body}");

    let propose = |token: &str, body: serde_json::Value| {
        http_post(addr, &coding, Some(token), &body.to_string())
    };
    let principal =
        serde_json::json!({"system": "icd10cm", "code": "J18.9", "sequence": "principal"});
    let (status, _) = propose(&supervisor, principal.clone());
    assert_eq!(status, 403, "a supervisor does not code");
    let (status, _) = propose(&icu_coder, principal.clone());
    assert_eq!(status, 403, "nor a coder of another ward");
    for (bad, why) in [
        (
            serde_json::json!({"system": "icd10cm", "code": "J18", "sequence": "principal"}),
            "not a billable code",
        ),
        (
            serde_json::json!({"system": "icd10cm", "code": "j18.9", "sequence": "principal"}),
            "J18.9",
        ),
        (
            serde_json::json!({"system": "icd9", "code": "486", "sequence": "principal"}),
            "code system",
        ),
        (
            serde_json::json!({"system": "icd10cm", "code": "J18.9", "sequence": "first"}),
            "sequence",
        ),
        (
            serde_json::json!({"system": "icd10pcs", "code": "0DTJ4ZZ", "sequence": "secondary", "poa": "Y"}),
            "present-on-admission",
        ),
    ] {
        let (status, body) = propose(&coder, bad.clone());
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(body.contains(why), "{bad}: {body} should say {why}");
    }
    let (status, body) = propose(
        &coder,
        serde_json::json!({"system": "icd10cm", "code": "J18.9", "sequence": "principal", "urgent": true}),
    );
    assert!(
        matches!(status, 400 | 422),
        "an unknown field: {status} {body}"
    );
    let (_, body) = http_get(addr, &coding, Some(&coder));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["codes"],
        serde_json::json!([]),
        "nothing written"
    );

    let (status, body) = propose(&coder, principal.clone());
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = propose(
        &coder,
        serde_json::json!({"system": "icd10cm", "code": "E11.9", "sequence": "principal"}),
    );
    assert_eq!(status, 409, "a second principal diagnosis: {body}");

    let change =
        |token: &str, body: &str| http_post(addr, &format!("{coding}/{id}"), Some(token), body);
    assert_eq!(change(&coder, "{}").0, 400, "nothing to change");
    assert_eq!(change(&coder, r#"{"poa": "maybe"}"#).0, 422);
    let technician = server.token("him.jones", "technician", &["4west"]);
    // A technician's POA with a final status: refused whole, the POA not kept either.
    assert_eq!(
        change(&technician, r#"{"poa": "Y", "status": "final"}"#).0,
        403
    );
    let (_, body) = http_get(addr, &coding, Some(&coder));
    let now: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            now["codes"][0]["poa"].clone(),
            now["codes"][0]["status"].clone()
        ),
        (serde_json::Value::Null, "proposed".into())
    );
    let (status, body) = change(&coder, r#"{"poa": "Y", "status": "final"}"#);
    assert_eq!(status, 204, "{body}");
    let (_, body) = http_get(addr, &coding, Some(&coder));
    let now: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            now["codes"][0]["poa"].clone(),
            now["codes"][0]["status"].clone()
        ),
        ("Y".into(), "final".into())
    );
    let (status, _) = http_post(
        addr,
        &format!("{coding}/nope"),
        Some(&coder),
        r#"{"status": "final"}"#,
    );
    assert_eq!(status, 404, "a code the chart does not have");
}

/// A chart with something for every part of the viewer: MRN-0301, in 4west, an operative
/// note amended by the surgeon, and two phone numbers written offline on two devices.
fn amended_and_conflicted() -> String {
    use chartsync_core::chart::*;
    let admitted = Timestamp::now().plus_seconds(-3 * 86_400);
    let patient = NewPatient {
        mrn: "MRN-0301".into(),
        family_name: "Nakamura".into(),
        given_names: "Yui".into(),
        birth_date: Some("1975-09-21".into()),
        sex: Some(Sex::Female),
        address: None,
        phone: Some("555-0100".into()),
    };
    let encounter = NewEncounter {
        ward: "4west".into(),
        bed: Some("3B".into()),
        class: EncounterClass::Inpatient,
        admit_source: None,
        attending: Some("dr.okafor".into()),
    };
    let surgeon = Staff::new("dr.lee", Role::Physician, "tablet-or-01");
    let desk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let nurse = Staff::new("rn.silva", Role::Nurse, "tablet-4west-01");
    let mut chart = Chart::create(patient, encounter, &desk, admitted).unwrap();
    let at = admitted.plus_seconds(3_600);
    let note = chart
        .add_entry(
            &surgeon,
            at,
            NewEntry::note(EntryKind::OperativeNote, "Appendix removed."),
        )
        .unwrap();
    chart
        .sign_entry(&surgeon, at, &note, SignatureMeaning::Author)
        .unwrap();
    chart
        .amend(
            &surgeon,
            at.plus_seconds(600),
            NewAmendment {
                target_entry_id: note,
                kind: AmendmentKind::Addendum,
                reason: "drain placed".into(),
                body: "A drain was left in place.".into(),
            },
        )
        .unwrap();
    let mut ward = Chart::load(&chart.save()).unwrap();
    let phone = |p: &str| PatientUpdate {
        phone: Some(p.into()),
        ..PatientUpdate::default()
    };
    chart
        .change_information(&desk, at.plus_seconds(900), phone("555-0111"))
        .unwrap();
    ward.change_information(&nurse, at.plus_seconds(960), phone("555-0199"))
        .unwrap();
    chart.merge(&ward).unwrap();
    use base64::Engine;
    serde_json::json!({
        "id": ChartId::random().to_string(),
        "automerge": base64::engine::general_purpose::STANDARD.encode(chart.save()),
    })
    .to_string()
}

/// Records staff find a chart by MRN, name, date of birth or a day in, within their wards,
/// with nothing of it in a URL, and read it: signed entries, what amended them, conflicting
/// values with who wrote each. Each search and read is audited, without the words searched.
#[test]
fn a_chart_is_found_by_what_the_clerk_knows_and_read_with_its_amendments_and_conflicts() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("charts.ndjson");
    std::fs::write(
        &file,
        [
            amended_and_conflicted(),
            discharged("MRN-0101", "4west", 35, false),
            discharged("MRN-0901", "icu", 40, false),
        ]
        .join("\n"),
    )
    .unwrap();
    import(data.path(), &file);
    let server = Server::start(data.path());
    add_staff(&server, "him.jones", "technician", &["4west"]);
    let addr = &server.addr;
    let origin = format!("http://{addr}");
    let cookie = sign_in(addr, "him.jones");
    let p = get(addr, "/console/charts", Some(&cookie));
    assert_eq!(p.status, 200);
    let token = csrf(&p.body);
    let find = |fields: &[(&str, &str)]| {
        let mut all = vec![("csrf", token.as_str())];
        all.extend_from_slice(fields);
        post(addr, "/console/charts", Some(&cookie), Some(&origin), &all)
    };
    let mrns = |body: &str| -> Vec<String> {
        body.split("<tr data-chart=")
            .skip(1)
            .map(|row| {
                let cell = &row[row.find("<td class=\"nowrap\">").unwrap() + 19..];
                cell[..cell.find('<').unwrap()].to_string()
            })
            .collect()
    };

    assert_eq!(mrns(&find(&[("name", "nakam")]).body), ["MRN-0301"]);
    assert_eq!(mrns(&find(&[("mrn", "mrn-0101")]).body), ["MRN-0101"]);
    assert_eq!(
        mrns(&find(&[("birth_date", "1949-01-30")]).body),
        ["MRN-0101"],
        "MRN-0901 is on icu"
    );
    let today = pages_day(chartsync_core::chart::Timestamp::now());
    assert_eq!(mrns(&find(&[("visit_date", &today)]).body), ["MRN-0301"]);
    let none = find(&[("name", "Lindqvist, Z")]);
    assert!(
        none.body.contains("0 charts found")
            && none.body.contains("No chart on your wards matches")
    );
    let empty = find(&[("name", " ")]);
    assert_eq!(empty.status, 400);
    assert!(empty.body.contains("give an MRN, a name"), "{}", empty.body);
    let bad = find(&[("birth_date", "21/09/1975")]);
    assert_eq!(bad.status, 400);
    assert!(bad
        .body
        .contains("date of birth is a date written YYYY-MM-DD"));
    assert!(
        bad.body.contains("value=\"21/09/1975\""),
        "what was typed stays in the form"
    );
    let forged = post(
        addr,
        "/console/charts",
        Some(&cookie),
        Some("http://evil.example"),
        &[("csrf", &token), ("name", "n")],
    );
    assert_eq!(forged.status, 403);

    // The viewer, from the result's link.
    let found = find(&[("name", "Nakamura, Y")]);
    let at = found.body.find("href=\"/console/chart?id=").unwrap() + 6;
    let link = &found.body[at..at + found.body[at..].find('"').unwrap()];
    let chart = link.trim_start_matches("/console/chart?id=").to_string();
    let v = get(addr, link, Some(&cookie));
    assert_eq!(v.status, 200, "{}", v.body);
    for shown in [
        "Nakamura, Yui, MRN-0301",
        "1975-09-21",
        "Operative note",
        "Appendix removed.",
        "dr.lee (author,",
        "<strong>Addendum</strong> by dr.lee (physician)",
        "Reason: drain placed",
        "A drain was left in place.",
        "patient › phone",
        "&#34;555-0111&#34;",
        "him.jones (technician) on records-pc-1",
        "&#34;555-0199&#34;",
        "rn.silva (nurse) on tablet-4west-01",
    ] {
        assert!(v.body.contains(shown), "{shown} on the viewer");
    }
    // Another ward's chart is refused, and so is a nurse.
    let (_, icu) = http_post(
        addr,
        "/api/charts/search",
        Some(&server.token("him.sup", "records_supervisor", &["*"])),
        r#"{"mrn": "MRN-0901"}"#,
    );
    let icu: serde_json::Value = serde_json::from_str(&icu).unwrap();
    assert_eq!(icu["total"], 1);
    let icu_chart = icu["hits"][0]["chart"].as_str().unwrap();
    assert_eq!(
        get(
            addr,
            &format!("/console/chart?id={icu_chart}"),
            Some(&cookie)
        )
        .status,
        403
    );
    let (status, _) = http_post(
        addr,
        "/api/charts/search",
        Some(&server.token("rn.park", "nurse", &["4west"])),
        r#"{"mrn": "MRN-0301"}"#,
    );
    assert_eq!(status, 403, "chart search is for records staff");
    let (status, body) = http_post(
        addr,
        "/api/charts/search",
        Some(&server.token("him.jones", "technician", &["4west"])),
        r#"{"name": "Nakamura", "ssn": "x"}"#,
    );
    assert!(
        matches!(status, 400 | 422),
        "an unknown field: {status} {body}"
    );

    drop(server);
    let details: Vec<String> = server_rows(
        data.path(),
        "SELECT detail FROM audit_events WHERE \"user\" = 'him.jones' AND device = 'console' AND action = 'list' AND detail LIKE 'chart search%' ORDER BY seq",
        &[],
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    assert_eq!(details.len(), 6, "each search that ran: {details:?}");
    assert!(
        details
            .iter()
            .all(|d| !d.contains("Nakamura") && !d.contains("1949") && !d.contains("nakam")),
        "fields, not values: {details:?}"
    );
    assert!(
        details.contains(&"chart search: ward 4west by name: 1 found".to_string()),
        "{details:?}"
    );
    let read: i64 = server_rows(data.path(), "SELECT count(*) FROM audit_events WHERE chart_id = ?1 AND \"user\" = 'him.jones' AND action = 'read' AND detail = 'chart viewer'", &[&chart])[0][0].parse().unwrap();
    assert_eq!(read, 1);
}

/// The patient-index checks: an import says what it brought in that looks wrong (ids only, the
/// charts still imported), and the console lists it with the charts side by side.
#[test]
fn an_mrn_on_two_patients_and_an_admission_in_2031_are_warned_of_at_import_and_listed() {
    let data = tempfile::tempdir().unwrap();
    let now = chartsync_core::chart::Timestamp::now();
    let admission = |mrn: &str, family: &str, born: &str, sex: &str, admitted: String| {
        serde_json::json!({
            "patient": {"mrn": mrn, "family_name": family, "given_names": "Sam",
                        "birth_date": born, "sex": sex},
            "encounter": {"ward": "4west", "class": "inpatient"},
            "admitted_at": admitted,
        })
        .to_string()
    };
    let file = data.path().join("admissions.ndjson");
    std::fs::write(
        &file,
        [
            admission(
                "MRN-0002",
                "Okoye",
                "1961-07-02",
                "male",
                now.plus_seconds(-20 * 86_400).to_string(),
            ),
            admission(
                "MRN-0002",
                "Okafor",
                "1961-02-07",
                "male",
                now.plus_seconds(-2 * 86_400).to_string(),
            ),
            admission(
                "MRN-0003",
                "Park",
                "1990-01-01",
                "female",
                now.plus_seconds(-86_400).to_string(),
            ),
            admission(
                "MRN-0500",
                "Kim",
                "1980-01-01",
                "female",
                "2031-06-01T08:00:00Z".into(),
            ),
        ]
        .join("\n"),
    )
    .unwrap();
    let out = Command::new(RECORDS)
        .arg("--data-dir")
        .arg(data.path())
        .args(test_database(data.path()).map(|url| format!("--database-url={url}")))
        .args(["--user", "him.jones", "import"])
        .arg(&file)
        .env("CHARTSYNC_STORE_KEY", STORE_KEY)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "warnings do not stop an import: {said}"
    );
    assert!(said.contains("imported 4 charts"), "{said}");
    assert!(
        said.contains("warning: MRN-0002: the same MRN with another name (charts "),
        "{said}"
    );
    assert!(
        said.contains("warning: MRN-0002: the same MRN with another date of birth"),
        "{said}"
    );
    assert!(
        said.contains("warning: MRN-0500: an admission in the future (chart "),
        "{said}"
    );
    assert!(
        said.contains("3 patient-index warnings to look into"),
        "{said}"
    );
    assert!(
        !said.contains("Okoye") && !said.contains("1961"),
        "ids only: {said}"
    );

    let server = Server::start(data.path());
    add_staff(&server, "him.jones", "technician", &["4west"]);
    let addr = &server.addr;
    let cookie = sign_in(addr, "him.jones");
    let p = get(addr, "/console/patient-index", Some(&cookie));
    assert_eq!(p.status, 200);
    assert!(p.body.contains("3 warnings"), "{}", p.body);
    let table = |caption: &str| {
        let at = p.body.find(caption).unwrap_or_else(|| panic!("{caption}"));
        let end = at + p.body[at..].find("</table>").unwrap();
        p.body[at..end].to_string()
    };
    let names = table("MRN-0002: The same MRN with another name");
    assert!(
        names.contains("Okoye, Sam") && names.contains("Okafor, Sam"),
        "{names}"
    );
    assert!(names.contains("1961-07-02") && names.contains("1961-02-07"));
    assert!(table("MRN-0500: An admission in the future").contains("2031-06-01"));
    assert!(
        !p.body.contains("MRN-0003"),
        "a patient with nothing wrong is not listed"
    );

    let (status, body) = http_get(
        addr,
        "/api/patient-index",
        Some(&server.token("him.jones", "technician", &["4west"])),
    );
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["warnings"].as_array().unwrap().len(), 3);
    assert_eq!(listed["warnings"][0]["kind"], "name_differs");
    assert_eq!(listed["warnings"][0]["charts"].as_array().unwrap().len(), 2);
    assert!(!body.contains("Okoye"), "ids only: {body}");
    let (status, _) = http_get(
        addr,
        "/api/patient-index",
        Some(&server.token("rn.park", "nurse", &["4west"])),
    );
    assert_eq!(status, 403);
    let (status, _) = http_get(
        addr,
        "/api/patient-index?ward=icu",
        Some(&server.token("him.jones", "technician", &["4west"])),
    );
    assert_eq!(status, 403, "another ward");
}

/// The chart of `mrn` on `server`, found as a supervisor of every ward finds it.
fn chart_by_mrn(server: &Server, mrn: &str) -> String {
    let (status, found) = http_post(
        &server.addr,
        "/api/charts/search",
        Some(&server.token("him.sup", "records_supervisor", &["*"])),
        &format!(r#"{{"mrn": "{mrn}"}}"#),
    );
    assert_eq!(status, 200, "{found}");
    let found: serde_json::Value = serde_json::from_str(&found).unwrap();
    found["hits"][0]["chart"].as_str().unwrap().to_string()
}

/// MRN-0101's discharged chart (as `discharged` makes it) with the patient's release
/// authorization signed: what a request for its records is verified against.
fn with_authorization() -> String {
    with_authorization_naming("")
}

/// The same, the authorization naming the sensitive information it covers (`consent`, the
/// form's `sensitive_consent` field) when not empty.
fn with_authorization_naming(consent: &str) -> String {
    use base64::Engine;
    use chartsync_core::chart::*;
    let line: serde_json::Value =
        serde_json::from_str(&discharged("MRN-0101", "4west", 5, true)).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut chart = Chart::load(&b64.decode(line["automerge"].as_str().unwrap()).unwrap()).unwrap();
    let desk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let at = Timestamp::now().plus_seconds(-3_600);
    let form = chart
        .add_form(
            &desk,
            at,
            NewForm {
                form_type: FormType::RoiAuthorization,
                fields: FormFields(
                    Some((SENSITIVE_CONSENT_FIELD.to_string(), consent.to_string()))
                        .filter(|_| !consent.is_empty())
                        .into_iter()
                        .collect(),
                ),
                required_signers: vec!["patient".into()],
            },
        )
        .unwrap();
    chart
        .sign_form(&desk, at, &form, "E. Lindqvist", "patient")
        .unwrap();
    serde_json::json!({"id": line["id"], "automerge": b64.encode(chart.save())}).to_string()
}

/// The chart of `line` (an import line) with a disclosure to the county health department
/// ten days ago: one an accounting of disclosures lists.
fn reported_to_public_health(line: &str) -> String {
    use base64::Engine;
    use chartsync_core::chart::*;
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut chart = Chart::load(&b64.decode(line["automerge"].as_str().unwrap()).unwrap()).unwrap();
    let desk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    chart
        .record_disclosure(
            &desk,
            Timestamp::now().plus_seconds(-10 * 86_400),
            NewDisclosure {
                request_id: None,
                recipient: "County Health Department".into(),
                recipient_address: "200 Civic Plaza".into(),
                description: "Tuberculosis case report".into(),
                purpose: DisclosurePurpose::PublicHealth,
            },
        )
        .unwrap();
    serde_json::json!({"id": line["id"], "automerge": b64.encode(chart.save())}).to_string()
}

/// A supervisor logs a release request from the console (no automerge written by hand), sees
/// it on the log with its days left, cannot release before the authorization is verified,
/// verifies it, releases the records with the disclosure recorded, and denies another request
/// with a reason; what the server holds says so, and the accounting leaves the authorized
/// release out (45 CFR 164.528(a)(1)(iv)).
#[test]
fn a_release_request_is_logged_verified_and_released_from_the_console() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("charts.ndjson");
    std::fs::write(&file, with_authorization()).unwrap();
    import(data.path(), &file);
    let server = Server::start(data.path());
    add_staff(&server, "him.sup", "records_supervisor", &["*"]);
    add_staff(&server, "cod.kim", "coder", &["4west"]);
    let addr = &server.addr;
    let origin = format!("http://{addr}");
    let cookie = sign_in(addr, "him.sup");
    let supervisor = server.token("him.sup", "records_supervisor", &["*"]);
    let chart = chart_by_mrn(&server, "MRN-0101");
    let page = format!("/console/roi/chart?id={chart}");

    let log = get(addr, "/console/roi", Some(&cookie));
    assert!(log.body.contains("0 open requests"), "{}", log.body);
    let p = get(addr, &page, Some(&cookie));
    assert!(p.body.contains("No request has been logged on this chart."));
    let token = csrf(&p.body);
    let send = |fields: &[(&str, &str)]| {
        let mut all = vec![("csrf", token.as_str()), ("chart", chart.as_str())];
        all.extend_from_slice(fields);
        post(
            addr,
            "/console/roi/chart",
            Some(&cookie),
            Some(&origin),
            &all,
        )
    };
    let logged = send(&[
        ("requester", "Acme Life"),
        ("recipient", "Acme Life"),
        ("recipient_address", "PO Box 9"),
        ("purpose", "research"),
        ("scope", "discharge summary"),
    ]);
    assert_eq!(
        (logged.status, logged.location.as_str()),
        (303, page.as_str()),
        "{}",
        logged.body
    );
    assert!(get(addr, &page, Some(&cookie))
        .body
        .contains("Request logged, due in 30 days."));
    let empty = send(&[
        ("requester", " "),
        ("recipient", "x"),
        ("recipient_address", "y"),
        ("purpose", "research"),
        ("scope", "z"),
    ]);
    assert_eq!(
        empty.status, 422,
        "a request names its requester: {}",
        empty.body
    );

    let log = get(addr, "/console/roi", Some(&cookie));
    assert!(log.body.contains("1 open request,"), "{}", log.body);
    for shown in [
        "MRN-0101",
        "Lindqvist, Eva",
        "Acme Life",
        "Research",
        "30 days left",
        "Received",
    ] {
        assert!(log.body.contains(shown), "{shown} on the log");
    }
    let p = get(addr, &page, Some(&cookie));
    let request = {
        let at = p.body.find("data-request=\"").unwrap() + 14;
        p.body[at..at + p.body[at..].find('"').unwrap()].to_string()
    };
    // Not released before the authorization is verified: refused, nothing recorded.
    let early = send(&[
        ("request", &request),
        ("status", "fulfilled"),
        ("description", "discharge summary"),
    ]);
    assert_eq!(early.status, 409, "{}", early.body);
    assert!(early.body.contains("verify the authorization first"));
    let form = {
        let at = p.body.find("name=\"authorization_form\">").unwrap();
        let at = at + p.body[at..].find("value=\"").unwrap() + 7;
        p.body[at..at + p.body[at..].find('"').unwrap()].to_string()
    };
    assert_eq!(
        send(&[
            ("request", &request),
            ("status", "authorization_verified"),
            ("authorization_form", &form)
        ])
        .status,
        303
    );
    // Nor before it is prepared: delivery, the review for sensitive information, the fee.
    let unprepared = send(&[
        ("request", &request),
        ("status", "fulfilled"),
        ("description", "discharge summary"),
    ]);
    assert_eq!(unprepared.status, 409, "{}", unprepared.body);
    assert!(unprepared.body.contains("prepare the release first"));
    let prepared = post(
        addr,
        "/console/roi/prepare",
        Some(&cookie),
        Some(&origin),
        &[
            ("csrf", &token),
            ("chart", &chart),
            ("request", &request),
            ("delivery", "mail"),
            ("basis", "no_fee"),
        ],
    );
    assert_eq!(prepared.status, 303, "{}", prepared.body);
    let released = send(&[
        ("request", &request),
        ("status", "fulfilled"),
        ("description", "discharge summary, 2 pages"),
    ]);
    assert_eq!(released.status, 303, "{}", released.body);
    let p = get(addr, &page, Some(&cookie));
    assert!(p.body.contains("Released; the disclosure is recorded."));
    assert!(
        p.body.contains("discharge summary, 2 pages"),
        "the disclosure is listed"
    );

    // A second request, denied with its reason.
    send(&[
        ("requester", "J. Doe"),
        ("recipient", "J. Doe"),
        ("recipient_address", "1 Main St"),
        ("purpose", "judicial_proceeding"),
        ("scope", "all records"),
    ]);
    let p = get(addr, &page, Some(&cookie));
    let second = p
        .body
        .split("data-request=\"")
        .nth(2)
        .map(|r| r[..r.find('"').unwrap()].to_string())
        .unwrap();
    assert_eq!(
        send(&[("request", &second), ("status", "denied"), ("reason", " ")]).status,
        422,
        "a denial needs a reason"
    );
    assert_eq!(
        send(&[
            ("request", &second),
            ("status", "denied"),
            ("reason", "no subpoena attached")
        ])
        .status,
        303
    );
    let p = get(addr, &page, Some(&cookie));
    assert!(p.body.contains("Denied,") && p.body.contains("no subpoena attached"));

    // The server holds it: no open request, one disclosure, left out of the accounting.
    let (_, open) = http_get(addr, "/api/roi-requests", Some(&supervisor));
    let open: serde_json::Value = serde_json::from_str(&open).unwrap();
    assert_eq!(open["requests"], serde_json::json!([]), "{open}");
    let view = on_server(&server, &supervisor, chart.parse().unwrap());
    assert_eq!(view["disclosures"].as_array().unwrap().len(), 1);
    assert_eq!(view["disclosures"][0]["by"], "him.sup");
    assert_eq!(view["disclosures"][0]["authorization"], form.as_str());
    let (_, accounting) = http_get(addr, "/api/disclosures?mrn=MRN-0101", Some(&supervisor));
    let accounting: serde_json::Value = serde_json::from_str(&accounting).unwrap();
    assert_eq!(
        accounting["disclosures"],
        serde_json::json!([]),
        "released under the patient's authorization: {accounting}"
    );

    // A coder does not work releases; REST keeps the same rules.
    let coder = sign_in(addr, "cod.kim");
    let p = get(addr, "/console/roi", Some(&coder));
    assert_eq!(p.status, 403);
    let p = get(addr, "/console/coding", Some(&coder));
    assert!(
        !p.body.contains("href=\"/console/roi\""),
        "no link a coder would be refused at"
    );
    let (status, _) = http_post(
        addr,
        &format!("/api/charts/{chart}/roi-requests"),
        Some(&server.token("cod.kim", "coder", &["4west"])),
        r#"{"requester": "a", "recipient": "b", "recipient_address": "c", "purpose": "research", "scope": "d"}"#,
    );
    assert_eq!(status, 403);
    let (status, body) = http_post(
        addr,
        &format!("/api/charts/{chart}/roi-requests"),
        Some(&supervisor),
        r#"{"requester": "a", "recipient": "b", "recipient_address": "c", "purpose": "curiosity", "scope": "d"}"#,
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = http_post(
        addr,
        &format!("/api/charts/{chart}/roi-requests"),
        Some(&supervisor),
        r#"{"requester": "Dr. Ames", "recipient": "Dr. Ames", "recipient_address": "Clinic", "purpose": "treatment", "scope": "labs"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = http_post(
        addr,
        &format!("/api/charts/{chart}/roi-requests/{id}"),
        Some(&supervisor),
        r#"{"status": "received"}"#,
    );
    assert_eq!(status, 422, "{body}");
    let (_, open) = http_get(addr, "/api/roi-requests", Some(&supervisor));
    assert!(
        open.contains(&id) && !open.contains("Lindqvist"),
        "ids, not names: {open}"
    );

    // The chart's audit trail, from the viewer's link: the supervisor's console writes in it.
    let viewer = get(addr, &format!("/console/chart?id={chart}"), Some(&cookie));
    let link = format!("/console/chart/audit?id={chart}");
    assert!(
        viewer.body.contains(&format!("href=\"{link}\"")),
        "a supervisor's link to the trail"
    );
    let trail = get(addr, &link, Some(&cookie));
    assert_eq!(trail.status, 200);
    let writes = trail
        .body
        .matches("<td>him.sup (records_supervisor) on console</td><td>Write</td>")
        .count();
    assert_eq!(
        writes, 6,
        "logged, verified, prepared, released, logged, denied"
    );
    assert!(
        trail.body.contains("chart viewer"),
        "the reads are in it too"
    );
    assert_eq!(
        get(addr, &link, Some(&coder)).status,
        403,
        "the trail is for supervisors"
    );

    // A person's trail (by staff id, in the URL) and a patient's (by MRN, posted).
    let mine = get(addr, "/console/audit?user=him.sup", Some(&cookie));
    assert!(
        mine.body.contains("What him.sup did, newest first"),
        "{}",
        mine.body
    );
    assert!(mine.body.contains("<td>Write</td>") && mine.body.contains("<td>Sign in</td>"));
    let theirs = post(
        addr,
        "/console/audit",
        Some(&cookie),
        Some(&origin),
        &[("csrf", &token), ("mrn", "MRN-0101")],
    );
    assert_eq!(theirs.status, 200);
    assert!(theirs
        .body
        .contains("Every chart of MRN-0101, oldest first"));
    assert!(theirs
        .body
        .contains(&format!("href=\"/console/chart?id={chart}\"")));
    let (status, body) = http_get(addr, "/api/audit?user=him.sup", Some(&supervisor));
    assert_eq!(status, 200, "{body}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
            > 5
    );
    assert_eq!(
        http_get(addr, "/api/audit?mrn=MRN-9999", Some(&supervisor)).0,
        404
    );
    assert_eq!(
        http_get(addr, "/api/audit?mrn=MRN-0101&user=x", Some(&supervisor)).0,
        400
    );
    let one_ward = server.token("him.ward", "records_supervisor", &["4west"]);
    assert_eq!(
        http_get(addr, "/api/audit?mrn=MRN-0101", Some(&one_ward)).0,
        403,
        "a patient's trail spans wards"
    );
    let technician = server.token("him.jones", "technician", &["*"]);
    assert_eq!(
        http_get(addr, "/api/audit?user=him.sup", Some(&technician)).0,
        403
    );

    drop(server);
    let writes: i64 = server_rows(
        data.path(),
        "SELECT count(*) FROM audit_events WHERE chart_id = ?1 AND \"user\" = 'him.sup' AND device = 'console' AND action = 'write'",
        &[&chart],
    )[0][0]
        .parse()
        .unwrap();
    assert_eq!(
        writes, 6,
        "logged, verified, prepared, released, logged, denied"
    );
    let read: i64 = server_rows(data.path(), "SELECT count(*) FROM audit_events WHERE chart_id = ?1 AND \"user\" = 'him.sup' AND detail = 'patient''s audit trail'", &[&chart])[0][0].parse().unwrap();
    assert_eq!(
        read, 1,
        "reading a patient's trail is on their chart's trail"
    );
}

/// A request's one extension with the notice the requester is sent, a fee as 45 CFR
/// 164.524(c)(4) allows it, and the sensitive-information gate: a technician prepares, a
/// supervisor releases what the patient's authorization names and nothing it does not.
#[test]
fn a_release_is_extended_once_charged_by_its_costs_and_gated_on_sensitive_information() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("charts.ndjson");
    std::fs::write(&file, with_authorization_naming("mental_health")).unwrap();
    import(data.path(), &file);
    let server = Server::start(data.path());
    add_staff(&server, "him.jones", "technician", &["4west"]);
    let addr = &server.addr;
    let origin = format!("http://{addr}");
    let tech = server.token("him.jones", "technician", &["4west"]);
    let supervisor = server.token("him.sup", "records_supervisor", &["*"]);
    let chart = chart_by_mrn(&server, "MRN-0101");
    let requests = format!("/api/charts/{chart}/roi-requests");
    let (status, body) = http_post(
        addr,
        &requests,
        Some(&tech),
        r#"{"requester": "E. Lindqvist", "recipient": "E. Lindqvist", "recipient_address": "1 Main St", "purpose": "to_patient", "scope": "the whole stay"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let request = format!("{requests}/{id}");
    let open = |token: &str| {
        let (_, log) = http_get(addr, "/api/roi-requests", Some(token));
        serde_json::from_str::<serde_json::Value>(&log).unwrap()["requests"][0].clone()
    };
    let due = open(&tech)["due_at"].as_str().unwrap().to_string();

    // The extension: a reason, once, 30 days more; the log and its deficiency follow.
    let extension = format!("{request}/extension");
    let (status, body) = http_post(addr, &extension, Some(&tech), r#"{"reason": " "}"#);
    assert_eq!(status, 422, "a notice gives its reason: {body}");
    let (status, body) = http_post(
        addr,
        &extension,
        Some(&tech),
        r#"{"reason": "the records are in off-site storage"}"#,
    );
    assert_eq!(status, 204, "{body}");
    let extended = open(&tech);
    assert_eq!(extended["extension"]["original_due_at"], due.as_str());
    let new_due =
        chartsync_core::chart::Timestamp::parse(extended["due_at"].as_str().unwrap()).unwrap();
    let old_due = chartsync_core::chart::Timestamp::parse(&due).unwrap();
    assert_eq!(new_due.unix() - old_due.unix(), 30 * 86_400);
    let (status, body) = http_post(addr, &extension, Some(&tech), r#"{"reason": "again"}"#);
    assert_eq!(status, 409, "one extension only: {body}");
    assert!(body.contains("one extension"), "{body}");
    // The notice to print says why and by when, to the requester.
    let cookie = sign_in(addr, "him.jones");
    let notice = get(
        addr,
        &format!("/console/roi/notice?id={chart}&request={id}"),
        Some(&cookie),
    );
    assert_eq!(notice.status, 200, "{}", notice.body);
    for said in [
        "To: E. Lindqvist",
        "because the records are in off-site storage",
        "the records of Eva Lindqvist (medical record number MRN-0101): the whole stay.",
        &format!("We will act on your request by {}", pages_day(new_due)),
        "164.524(b)(2)(ii)",
    ] {
        assert!(notice.body.contains(said), "{said} in the notice");
    }
    let log = get(addr, "/console/roi", Some(&cookie));
    assert!(log.body.contains("(extended)"), "{}", log.body);

    // The fee: a flat fee is for an electronic copy and at most $6.50; a cost-based one is
    // its parts' sum, typed in dollars; what is refused changes nothing.
    let p = get(
        addr,
        &format!("/console/roi/chart?id={chart}"),
        Some(&cookie),
    );
    let token = csrf(&p.body);
    let prepare = |fields: &[(&str, &str)]| {
        let mut all = vec![
            ("csrf", token.as_str()),
            ("chart", chart.as_str()),
            ("request", id.as_str()),
        ];
        all.extend_from_slice(fields);
        post(
            addr,
            "/console/roi/prepare",
            Some(&cookie),
            Some(&origin),
            &all,
        )
    };
    for (fields, why) in [
        (
            vec![
                ("delivery", "mail"),
                ("basis", "flat_electronic"),
                ("flat", "6.50"),
            ],
            "a flat fee is for an electronic copy",
        ),
        (
            vec![
                ("delivery", "portal"),
                ("basis", "flat_electronic"),
                ("flat", "6.51"),
            ],
            "at most 650 cents",
        ),
        (
            vec![
                ("delivery", "mail"),
                ("basis", "actual_cost"),
                ("labor", "12.x"),
            ],
            "Labor is an amount in dollars and cents",
        ),
        (
            vec![("delivery", "pigeon"), ("basis", "no_fee")],
            "not a known delivery method",
        ),
        (
            vec![
                ("delivery", "mail"),
                ("basis", "no_fee"),
                ("sensitive", "gossip"),
            ],
            "not a known sensitive information category",
        ),
    ] {
        let refused = prepare(&fields);
        assert_eq!(refused.status, 422, "{fields:?}: {}", refused.body);
        assert!(refused.body.contains(why), "{why}: {}", refused.body);
    }
    assert_eq!(
        open(&tech)["fee"],
        serde_json::Value::Null,
        "nothing was set"
    );
    let prepared = prepare(&[
        ("delivery", "mail"),
        ("basis", "actual_cost"),
        ("labor", "15"),
        ("supplies", "$1.2"),
        ("postage", "0.68"),
    ]);
    assert_eq!(prepared.status, 303, "{}", prepared.body);
    let p = get(
        addr,
        &format!("/console/roi/chart?id={chart}"),
        Some(&cookie),
    );
    assert!(p.body.contains("Release prepared: $16.88 to pay."));
    assert!(p
        .body
        .contains("$16.88, actual cost (labor $15.00, supplies $1.20, postage $0.68)"));
    assert!(p.body.contains("none found"), "reviewed, nothing sensitive");
    let log = get(addr, "/console/roi", Some(&cookie));
    assert!(log.body.contains("$16.88") && log.body.contains("Mail"));

    // Found on review: mental health and substance use records. The patient's authorization
    // names mental health only.
    let preparation = format!("{request}/preparation");
    let (status, body) = http_post(
        addr,
        &preparation,
        Some(&tech),
        r#"{"delivery": "portal", "sensitive": ["mental_health", "substance_use_disorder"], "fee": {"basis": "flat_electronic", "total_cents": 650}}"#,
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = http_post(
        addr,
        &preparation,
        Some(&tech),
        r#"{"delivery": "portal", "sensitive": [], "fee": {"basis": "actual_cost", "labor_cents": 100, "total_cents": 900}}"#,
    );
    assert_eq!(status, 422, "a cost-based total is its parts' sum: {body}");
    let (status, body) = http_post(
        addr,
        &preparation,
        Some(&tech),
        r#"{"delivery": "portal", "sensitive": [], "fee": {"basis": "no_fee", "total_cents": 0}, "note": "x"}"#,
    );
    assert_eq!(status, 422, "unknown fields are refused: {body}");
    let form = on_server(&server, &tech, chart.parse().unwrap())["forms"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = http_post(
        addr,
        &request,
        Some(&tech),
        &format!(r#"{{"status": "authorization_verified", "authorization_form": "{form}"}}"#),
    );
    assert_eq!(status, 204, "{body}");
    let release = r#"{"status": "fulfilled", "description": "the whole stay, on the portal"}"#;
    let (status, body) = http_post(addr, &request, Some(&tech), release);
    assert_eq!(
        status, 403,
        "a technician does not release sensitive information: {body}"
    );
    assert!(body.contains("records supervisor"), "{body}");
    let (status, body) = http_post(addr, &request, Some(&supervisor), release);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("does not name substance_use_disorder"),
        "the refusal names what is missing: {body}"
    );
    assert!(!body.contains("Lindqvist"), "ids and tokens only: {body}");
    let view = on_server(&server, &tech, chart.parse().unwrap());
    assert_eq!(view["roi_requests"][0]["status"], "authorization_verified");
    assert_eq!(view["disclosures"], serde_json::json!([]), "nothing left");
    // Released without the substance use records: the supervisor's release goes through.
    let (status, body) = http_post(
        addr,
        &preparation,
        Some(&tech),
        r#"{"delivery": "portal", "sensitive": ["mental_health"], "fee": {"basis": "flat_electronic", "total_cents": 650}}"#,
    );
    assert_eq!(status, 204, "{body}");
    let (status, body) = http_post(addr, &request, Some(&supervisor), release);
    assert_eq!(status, 204, "{body}");
    let view = on_server(&server, &tech, chart.parse().unwrap());
    let r = &view["roi_requests"][0];
    assert_eq!(r["status"], "fulfilled");
    assert_eq!(
        r["sensitive_review"]["categories"],
        serde_json::json!(["mental_health"])
    );
    assert_eq!(r["sensitive_review"]["by"], "him.jones");
    assert_eq!(view["disclosures"][0]["by"], "him.sup");
    // Closed, it is neither prepared nor extended.
    let (status, _) = http_post(addr, &extension, Some(&tech), r#"{"reason": "late"}"#);
    assert_eq!(status, 409);
    assert_eq!(
        get(
            addr,
            &format!("/console/roi/notice?id={chart}&request=00000000-0000-4000-8000-000000000000"),
            Some(&cookie)
        )
        .status,
        404
    );
}

/// A patient's request for an accounting of disclosures, worked from the console: logged with
/// its 60-day deadline (free, the first in twelve months), extended once with its notice,
/// answered with the accounting kept as given, and the letter the patient reads; REST keeps
/// the same rules, and every step is on the patient's chart's audit trail.
#[test]
fn an_accounting_request_is_logged_extended_answered_and_its_letter_printed() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("charts.ndjson");
    std::fs::write(&file, reported_to_public_health(&with_authorization())).unwrap();
    import(data.path(), &file);
    let server = Server::start(data.path());
    add_staff(&server, "him.sup", "records_supervisor", &["*"]);
    add_staff(&server, "him.jones", "technician", &["*"]);
    let addr = &server.addr;
    let origin = format!("http://{addr}");
    let supervisor = server.token("him.sup", "records_supervisor", &["*"]);

    // Who may: supervisors and admins of every ward, as for the accounting itself.
    for (token, who) in [
        (
            server.token("him.jones", "technician", &["*"]),
            "a technician",
        ),
        (
            server.token("him.ward", "records_supervisor", &["4west"]),
            "a supervisor of one ward",
        ),
    ] {
        let (status, body) = http_get(addr, "/api/accounting-requests", Some(&token));
        assert_eq!(status, 403, "{who}: {body}");
    }
    let tech = sign_in(addr, "him.jones");
    assert_eq!(get(addr, "/console/accounting", Some(&tech)).status, 403);
    assert!(!get(addr, "/console/worklist", Some(&tech))
        .body
        .contains("href=\"/console/accounting\""));

    // Logged from the console: the MRN posted, due in 60 days, free.
    let cookie = sign_in(addr, "him.sup");
    let list = get(addr, "/console/accounting", Some(&cookie));
    assert!(list.body.contains("0 open requests"), "{}", list.body);
    let token = csrf(&list.body);
    let log = |fields: &[(&str, &str)]| {
        let mut all = vec![("csrf", token.as_str())];
        all.extend_from_slice(fields);
        post(
            addr,
            "/console/accounting",
            Some(&cookie),
            Some(&origin),
            &all,
        )
    };
    for (fields, status, why) in [
        (
            vec![
                ("mrn", "MRN-0999"),
                ("requester", "E. Lindqvist"),
                ("address", "1 Main St"),
            ],
            404,
            "no chart has MRN MRN-0999",
        ),
        (
            vec![
                ("mrn", "MRN-0101"),
                ("requester", "E. Lindqvist"),
                ("address", "1 Main St"),
                ("fee", "15.00"),
            ],
            422,
            "first accounting in twelve months is free",
        ),
        (
            vec![
                ("mrn", "MRN-0101"),
                ("requester", "E. Lindqvist"),
                ("address", "1 Main St"),
                ("since", "last year"),
            ],
            422,
            "a date",
        ),
        (
            vec![
                ("mrn", "MRN-0101"),
                ("requester", " "),
                ("address", "1 Main St"),
            ],
            422,
            "requester is required",
        ),
    ] {
        let refused = log(&fields);
        assert_eq!(refused.status, status, "{fields:?}: {}", refused.body);
        assert!(refused.body.contains(why), "{why}: {}", refused.body);
    }
    let logged = log(&[
        ("mrn", "MRN-0101"),
        ("requester", "Eva Lindqvist"),
        ("address", "1 Main St"),
    ]);
    assert_eq!(logged.status, 303, "{}", logged.body);
    assert!(logged
        .location
        .starts_with("/console/accounting/request?id="));
    assert!(!logged.location.contains("MRN"), "no MRN in the URL");
    let id = logged.location.rsplit('=').next().unwrap().to_string();
    let page = get(addr, &logged.location, Some(&cookie));
    for said in [
        "Request logged, due in 60 days.",
        "Accounting request: Eva Lindqvist, MRN-0101",
        "60 days left",
        "Free (first in 12 months)",
    ] {
        assert!(page.body.contains(said), "{said}: {}", page.body);
    }
    let list = get(addr, "/console/accounting", Some(&cookie));
    assert!(list.body.contains("1 open request,") && list.body.contains(&id));

    // Extended once, with the notice to print; REST refuses a second.
    let step = |fields: &[(&str, &str)]| {
        let mut all = vec![("csrf", token.as_str()), ("id", id.as_str())];
        all.extend_from_slice(fields);
        post(
            addr,
            "/console/accounting/request",
            Some(&cookie),
            Some(&origin),
            &all,
        )
    };
    assert_eq!(step(&[("step", "extend"), ("reason", " ")]).status, 422);
    let extended = step(&[
        ("step", "extend"),
        (
            "reason",
            "a business associate's disclosures are still to come",
        ),
    ]);
    assert_eq!(extended.status, 303, "{}", extended.body);
    let notice = get(
        addr,
        &format!("/console/accounting/notice?id={id}"),
        Some(&cookie),
    );
    for said in [
        "To: Eva Lindqvist",
        "an accounting of the disclosures of the health information of Eva Lindqvist",
        "within 60 days, because a business associate",
        "164.528(c)(1)(ii)",
    ] {
        assert!(notice.body.contains(said), "{said}: {}", notice.body);
    }
    let (status, body) = http_post(
        addr,
        &format!("/api/accounting-requests/{id}/extension"),
        Some(&supervisor),
        r#"{"reason": "again"}"#,
    );
    assert_eq!(status, 409, "one extension: {body}");
    let (_, body) = http_get(
        addr,
        &format!("/api/accounting-requests/{id}"),
        Some(&supervisor),
    );
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    let request = &shown["request"];
    let received =
        chartsync_core::chart::Timestamp::parse(request["received_at"].as_str().unwrap()).unwrap();
    let due = chartsync_core::chart::Timestamp::parse(request["due_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        due.unix() - received.unix(),
        90 * 86_400,
        "60 days and the extension's 30"
    );
    assert_eq!(
        shown["accounting"],
        serde_json::Value::Null,
        "not given yet"
    );
    assert!(
        !body.contains("\"patient\""),
        "the REST answer names the patient by MRN only"
    );

    // Given: the public health report, not the release the patient authorized; kept as given.
    let given = step(&[("step", "provide")]);
    assert_eq!(given.status, 303, "{}", given.body);
    let page = get(
        addr,
        &format!("/console/accounting/request?id={id}"),
        Some(&cookie),
    );
    assert!(
        page.body.contains("What was given: 1 disclosure"),
        "{}",
        page.body
    );
    let letter = get(
        addr,
        &format!("/console/accounting/letter?id={id}"),
        Some(&cookie),
    );
    assert_eq!(letter.status, 200);
    for said in [
        "Accounting of disclosures of your health information",
        "County Health Department",
        "200 Civic Plaza",
        "Tuberculosis case report",
        "Public health activities",
        "There is no charge for this accounting.",
    ] {
        assert!(letter.body.contains(said), "{said}: {}", letter.body);
    }
    let (status, _) = http_post(
        addr,
        &format!("/api/accounting-requests/{id}/provide"),
        Some(&supervisor),
        "",
    );
    assert_eq!(status, 409, "answered once");
    let (_, body) = http_get(addr, "/api/accounting-requests", Some(&supervisor));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["requests"],
        serde_json::json!([]),
        "nothing open"
    );
    // The patient's requests, the MRN posted.
    let theirs = post(
        addr,
        "/console/accounting/patient",
        Some(&cookie),
        Some(&origin),
        &[("csrf", &token), ("mrn", "MRN-0101")],
    );
    assert!(
        theirs.body.contains("Every request of MRN-0101"),
        "{}",
        theirs.body
    );
    assert!(theirs.body.contains("Given "));
    // A second accounting within twelve months may carry the fee the patient was told of.
    let (status, body) = http_post(
        addr,
        "/api/accounting-requests",
        Some(&supervisor),
        r#"{"mrn": "MRN-0101", "requester": "Eva Lindqvist", "address": "1 Main St", "fee_cents": 1500}"#,
    );
    assert_eq!(status, 201, "{body}");
    let second: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&second["fee_cents"], &second["first_in_twelve_months"]),
        (&serde_json::json!(1500), &serde_json::json!(false))
    );
    assert_eq!(
        http_get(
            addr,
            "/api/accounting-requests/00000000-0000-4000-8000-000000000000",
            Some(&supervisor)
        )
        .0,
        404
    );
    let (status, _) = http_post(
        addr,
        "/api/accounting-requests",
        Some(&supervisor),
        r#"{"mrn": "MRN-0101", "requester": "x", "address": "y", "note": "z"}"#,
    );
    assert_eq!(status, 422, "unknown fields are refused");

    // Each step is on the chart's trail, by the supervisor.
    drop(server);
    let details: Vec<String> = server_rows(
        data.path(),
        "SELECT detail FROM audit_events WHERE \"user\" = 'him.sup' AND detail LIKE ?1 ORDER BY seq",
        &[&format!("%{id}%")],
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    assert!(
        details.contains(&format!("accounting request {id} logged")),
        "{details:?}"
    );
    assert!(details.contains(&format!("accounting request {id} extended")));
    assert!(details.contains(&format!(
        "accounting of disclosures given, request {id}: 1 listed"
    )));
}

/// One chart's completion: what its record lacks, routed from its own page, and a deficiency
/// the rules cannot see added by hand for the physician (it reaches the chart, and so the
/// physician's tablet) and withdrawn once put right; REST keeps the same rules.
#[test]
fn a_chart_s_completion_lists_what_it_lacks_and_takes_deficiencies_added_by_hand() {
    let data = discharged_store();
    let server = Server::start(data.path());
    add_staff(&server, "him.jones", "technician", &["4west"]);
    add_staff(&server, "dr.adeyemi", "physician", &["4west"]);
    add_staff(&server, "rn.park", "nurse", &["4west"]);
    let addr = &server.addr;
    let origin = format!("http://{addr}");
    let tech = server.token("him.jones", "technician", &["4west"]);
    let chart_of = |mrn: &str| chart_by_mrn(&server, mrn);
    let chart = chart_of("MRN-0101");
    let page = format!("/console/completion?id={chart}");
    let cookie = sign_in(addr, "him.jones");
    let worklist = get(addr, "/console/worklist", Some(&cookie));
    assert!(
        worklist.body.contains(&format!("href=\"{page}\"")),
        "each row leads to its chart's completion"
    );
    let p = get(addr, &page, Some(&cookie));
    assert_eq!(p.status, 200, "{}", p.body);
    for said in [
        "Chart completion: Lindqvist, Eva, MRN-0101",
        "Discharge summary missing",
        "No deficiency added by hand is open.",
    ] {
        assert!(p.body.contains(said), "{said}: {}", p.body);
    }
    let token = csrf(&p.body);
    let add = |what: &str, to: &str, about: &str| {
        post(
            addr,
            "/console/completion/add",
            Some(&cookie),
            Some(&origin),
            &[
                ("csrf", &token),
                ("chart", &chart),
                ("what", what),
                ("to", to),
                ("about", about),
            ],
        )
    };
    for (what, to, about, status, why) in [
        ("Consent unsigned", "rn.park", "", 422, "not a physician"),
        (" ", "dr.adeyemi", "", 422, "question"),
        (
            "Consent unsigned",
            "dr.adeyemi",
            "00000000-0000-4000-8000-000000000000",
            404,
            "no entry",
        ),
    ] {
        let refused = add(what, to, about);
        assert_eq!(refused.status, status, "{why}: {}", refused.body);
    }
    let added = add(
        "The transfusion consent on paper is unsigned",
        "dr.adeyemi",
        "",
    );
    assert_eq!(
        (added.status, added.location.as_str()),
        (303, page.as_str())
    );
    let p = get(addr, &page, Some(&cookie));
    assert!(p.body.contains("Deficiency added"), "{}", p.body);
    assert!(p.body.contains("<td>Added by hand</td>"));
    assert!(p
        .body
        .contains("<td>The transfusion consent on paper is unsigned</td>"));
    // On the worklist, by its kind, for the physician.
    let (_, body) = http_get(
        addr,
        &format!("/api/charts/{chart}/completion"),
        Some(&tech),
    );
    let completion: serde_json::Value = serde_json::from_str(&body).unwrap();
    let by_hand = completion["added_by_hand"][0].clone();
    assert_eq!(by_hand["to"], "dr.adeyemi");
    assert_eq!(by_hand["kind"], "deficiency");
    let id = by_hand["id"].as_str().unwrap().to_string();
    let row = completion["deficiencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deficiency"]["kind"] == "added_by_hand")
        .unwrap()["deficiency"]
        .clone();
    assert_eq!(row["responsible"], "dr.adeyemi");
    assert_eq!(row["record_id"], id.as_str());
    let (_, body) = http_get(
        addr,
        "/api/deficiencies?kind=added_by_hand&responsible=dr.adeyemi",
        Some(&tech),
    );
    assert!(body.contains(&id), "{body}");

    // Routed from the chart's own page, and back to it.
    let reference = serde_json::json!({
        "chart": chart, "kind": "added_by_hand", "section": "queries", "record_id": id,
    })
    .to_string();
    let assigned = post(
        addr,
        "/console/worklist/assign",
        Some(&cookie),
        Some(&origin),
        &[
            ("csrf", &token),
            ("back", &page),
            ("d", &reference),
            ("assignee", "dr.adeyemi"),
        ],
    );
    assert_eq!(
        (assigned.status, assigned.location.as_str()),
        (303, page.as_str())
    );

    // Put right: withdrawn, off the worklist; the chart keeps it as withdrawn.
    let (status, _) = http_post(
        addr,
        &format!("/api/charts/{chart}/deficiencies"),
        Some(&server.token("cod.kim", "coder", &["4west"])),
        r#"{"what": "x", "to": "dr.adeyemi"}"#,
    );
    assert_eq!(status, 403, "coders do not add deficiencies");
    let withdrawn = post(
        addr,
        "/console/completion/withdraw",
        Some(&cookie),
        Some(&origin),
        &[("csrf", &token), ("chart", &chart), ("deficiency", &id)],
    );
    assert_eq!(withdrawn.status, 303, "{}", withdrawn.body);
    let p = get(addr, &page, Some(&cookie));
    assert!(p.body.contains("No deficiency added by hand is open."));
    assert!(!p.body.contains("<td>Added by hand</td>"));
    let view = on_server(&server, &tech, chart.parse().unwrap());
    assert_eq!(view["queries"][0]["status"], "withdrawn");
    assert_eq!(view["queries"][0]["asked_by"], "him.jones");
    let (status, _) = http_post(
        addr,
        &format!("/api/charts/{chart}/deficiencies/{id}/withdraw"),
        Some(&tech),
        "",
    );
    assert_eq!(status, 409, "withdrawn once");
    // REST adds one too; another ward's chart is refused.
    let (status, body) = http_post(
        addr,
        &format!("/api/charts/{chart}/deficiencies"),
        Some(&tech),
        r#"{"what": "Dictated operative note not transcribed", "to": "dr.adeyemi"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let icu = chart_of("MRN-0901");
    assert_eq!(
        get(
            addr,
            &format!("/console/completion?id={icu}"),
            Some(&cookie)
        )
        .status,
        403
    );
    assert_eq!(
        http_get(addr, &format!("/api/charts/{icu}/completion"), Some(&tech)).0,
        403
    );
}

/// Physicians' incomplete records: dr.okafor's missing discharge summaries, one 5 and one 10
/// days past due, put him on the suspension list with the default 7 days' grace but not within
/// 4west alone, nor with 14 days' grace; his notice lists what is missing; a deficiency added
/// by hand counts for the physician it names.
#[test]
fn physicians_incomplete_records_give_their_notices_and_the_suspension_list() {
    let data = discharged_store();
    let server = Server::start(data.path());
    add_staff(&server, "him.jones", "technician", &["*"]);
    add_staff(&server, "dr.okafor", "physician", &["4west", "icu"]);
    add_staff(&server, "dr.adeyemi", "physician", &["4west"]);
    let addr = &server.addr;
    let tech = server.token("him.jones", "technician", &["*"]);
    let chart = chart_by_mrn(&server, "MRN-0101");
    let (status, body) = http_post(
        addr,
        &format!("/api/charts/{chart}/deficiencies"),
        Some(&tech),
        r#"{"what": "Consent for transfusion unsigned", "to": "dr.adeyemi"}"#,
    );
    assert_eq!(status, 201, "{body}");

    let listed = |path: &str| {
        let (status, body) = http_get(addr, path, Some(&tech));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["physicians"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["physician"].as_str().unwrap().to_string(),
                    p["delinquent_charts"].as_u64().unwrap(),
                    p["oldest_overdue_days"].as_i64().unwrap_or(-1),
                    p["suspend"].as_bool().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed("/api/physicians/incomplete"),
        [
            ("dr.okafor".to_string(), 2, 10, true),
            ("dr.adeyemi".to_string(), 1, 5, false)
        ],
        "most overdue first"
    );
    assert_eq!(
        listed("/api/physicians/incomplete?ward=4west"),
        [
            ("dr.adeyemi".to_string(), 1, 5, false),
            ("dr.okafor".to_string(), 1, 5, false)
        ]
    );
    assert_eq!(
        http_get(addr, "/api/physicians/dr.nobody/incomplete", Some(&tech)).0,
        404
    );
    let (status, _) = http_get(
        addr,
        "/api/physicians/incomplete",
        Some(&server.token("cod.kim", "coder", &["*"])),
    );
    assert_eq!(status, 403);

    // The console: the suspension list, and dr.okafor's notice.
    let cookie = sign_in(addr, "him.jones");
    let p = get(addr, "/console/physicians", Some(&cookie));
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p
        .body
        .contains("dr.okafor: 2 delinquent records, the oldest 10 days past due"));
    let notice = get(
        addr,
        "/console/physicians/notice?user=dr.okafor",
        Some(&cookie),
    );
    assert_eq!(notice.status, 200);
    for said in [
        "To: dr.okafor",
        "2 of your records are already delinquent",
        "MRN-0101",
        "MRN-0901",
        "Discharge summary missing",
        "Please complete them by",
    ] {
        assert!(notice.body.contains(said), "{said}: {}", notice.body);
    }
    assert!(
        !notice.body.contains("Consent for transfusion"),
        "dr.adeyemi's"
    );
    assert_eq!(
        get(
            addr,
            "/console/physicians/notice?user=dr.nobody",
            Some(&cookie)
        )
        .status,
        404
    );
    drop(server);

    // With the bylaws' 14 days of grace, no one is on the list.
    let server = Server::start_with(
        data.path(),
        "127.0.0.1:0",
        &["--suspension-grace-days", "14"],
    );
    let tech = server.token("him.jones", "technician", &["*"]);
    let (_, body) = http_get(&server.addr, "/api/physicians/incomplete", Some(&tech));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["suspension_grace_days"], 14);
    assert!(v["physicians"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["suspend"] == false));
}

/// A multipart upload of `file` to the console's import, as a browser sends it.
fn upload(addr: &str, cookie: &str, csrf: &str, file: &[u8]) -> common::console::Page {
    let boundary = "chartsync-test-boundary";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"admissions.ndjson\"\r\nContent-Type: application/x-ndjson\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    common::console::page(
        common::console::agent()
            .post(format!("http://{addr}/console/import"))
            .header("Cookie", cookie)
            .header("Origin", &format!("http://{addr}"))
            .header(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .send(&body[..])
            .unwrap(),
    )
}

/// A technician imports the admissions system's file from the console: the import runs on the
/// server while its page follows it, and says what it came to; a file with a chart on another
/// ward, a broken line or bytes that are not text imports nothing and says why. Following an
/// import's progress does not keep an unattended console signed in.
#[test]
fn charts_are_imported_from_the_console_with_the_import_s_progress() {
    let data = imported_store();
    let server = Server::start_with(data.path(), "127.0.0.1:0", &["--console-idle", "3s"]);
    add_staff(&server, "him.jones", "technician", &["4west"]);
    add_staff(&server, "him.lee", "technician", &["4west"]);
    add_staff(&server, "cod.kim", "coder", &["4west"]);
    let addr = &server.addr;
    let now = chartsync_core::chart::Timestamp::now();
    let admission = |mrn: &str, ward: &str| {
        serde_json::json!({
            "patient": {"mrn": mrn, "family_name": "Okoye", "given_names": "Chidi"},
            "encounter": {"ward": ward, "class": "inpatient", "attending": "dr.okafor"},
            "admitted_at": now.plus_seconds(-3_600).to_string(),
        })
        .to_string()
    };
    let cookie = sign_in(addr, "him.jones");
    let p = get(addr, "/console/import", Some(&cookie));
    assert_eq!(p.status, 200, "{}", p.body);
    let token = csrf(&p.body);
    let follow = |started: &common::console::Page| -> (String, common::console::Page) {
        assert_eq!(started.status, 303, "{}", started.body);
        let id = started.location.rsplit('=').next().unwrap().to_string();
        for _ in 0..100 {
            let status = get(
                addr,
                &format!("/console/import/status?id={id}"),
                Some(&cookie),
            );
            assert_eq!(status.status, 200, "{}", status.body);
            let s: serde_json::Value = serde_json::from_str(&status.body).unwrap();
            if s["phase"] == "done" || s["phase"] == "failed" {
                return (id.clone(), get(addr, &started.location, Some(&cookie)));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the import never finished");
    };

    // Three admissions to 4west: imported, and the page says so.
    let file = [
        admission("MRN-0701", "4west"),
        admission("MRN-0702", "4west"),
        admission("MRN-0703", "4west"),
    ]
    .join("\n");
    let (id, done) = follow(&upload(addr, &cookie, &token, file.as_bytes()));
    assert!(done.body.contains("Imported 3 charts."), "{}", done.body);
    let tech = server.token("him.jones", "technician", &["4west"]);
    let (_, found) = http_post(
        addr,
        "/api/charts/search",
        Some(&tech),
        r#"{"mrn": "MRN-0702"}"#,
    );
    assert!(found.contains("\"total\":1"), "{found}");
    // Another person does not see it.
    let lee = sign_in(addr, "him.lee");
    assert_eq!(
        get(addr, &format!("/console/import/job?id={id}"), Some(&lee)).status,
        404
    );

    // Refused whole, with the line and why: another ward, a broken line.
    for (file, why) in [
        (
            [admission("MRN-0704", "4west"), admission("MRN-0705", "icu")].join("\n"),
            "Line 2: the chart is on ward icu, which is not one of yours; nothing was imported.",
        ),
        (
            [
                admission("MRN-0706", "4west"),
                "{\"patient\": 3}".to_string(),
            ]
            .join("\n"),
            "Line 2:",
        ),
    ] {
        let (_, failed) = follow(&upload(addr, &cookie, &token, file.as_bytes()));
        assert!(failed.body.contains(why), "{why}: {}", failed.body);
    }
    for mrn in ["MRN-0704", "MRN-0706"] {
        let (_, found) = http_post(
            addr,
            "/api/charts/search",
            Some(&tech),
            &format!(r#"{{"mrn": "{mrn}"}}"#),
        );
        assert!(
            found.contains("\"total\":0"),
            "nothing of a refused file: {found}"
        );
    }
    let binary = upload(addr, &cookie, &token, &[0xff, 0xfe, 0x00, 0x41]);
    assert_eq!(binary.status, 422, "{}", binary.body);
    assert!(binary.body.contains("not UTF-8 text"));
    let forged = upload(addr, &cookie, "not-the-token", file.as_bytes());
    assert_eq!(forged.status, 403, "no CSRF token, nothing imported");
    let coder = sign_in(addr, "cod.kim");
    assert_eq!(get(addr, "/console/import", Some(&coder)).status, 403);

    // A page left following an import does not keep the console signed in.
    let cookie = sign_in(addr, "him.lee");
    for _ in 0..8 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let s = get(
            addr,
            &format!("/console/import/status?id={id}"),
            Some(&cookie),
        );
        assert!(matches!(s.status, 401 | 404), "{}", s.status);
    }
    assert_eq!(
        get(addr, "/console/import", Some(&cookie)).location,
        "/console/sign-in?ended=idle"
    );
}

/// The records office's REST has an OpenAPI document generated from the handlers: valid
/// OpenAPI 3.1 to a validator nobody on the team wrote, and every operation in it served by
/// the server (asked without a token, each answers 401, not 404 or 405).
#[test]
fn the_records_office_api_is_described_by_a_valid_openapi_document_of_what_it_serves() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    let out = Command::new("node")
        .current_dir(&dir)
        .arg("openapi.mjs")
        .arg(format!("http://{}", server.addr))
        .output()
        .expect("node is needed for the OpenAPI check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .expect("the validator's result"),
    )
    .unwrap();
    assert!(
        result["version"].as_str().unwrap().starts_with("3.1"),
        "{result}"
    );
    eprintln!("OpenAPI document: {result}");

    let (status, body) = http_get(&server.addr, "/api/openapi.json", None);
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/api/deficiencies",
        "/api/charts/{id}/completion",
        "/api/charts/{id}/roi-requests/{request}/preparation",
        "/api/accounting-requests/{id}/provide",
        "/api/physicians/incomplete",
        "/api/holds/{id}/accept",
        "/api/audit",
        "/api/legal-holds",
        "/api/destruction/{id}/approve",
        "/api/charts/{id}/attachments",
        "/api/charts/{id}/attachments/{hash}",
    ] {
        assert!(paths.contains_key(expected), "{expected} is documented");
    }
    let chart = chartsync_core::chart::ChartId::random().to_string();
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace(
                "{id}",
                if path.starts_with("/api/charts") {
                    &chart
                } else {
                    "1"
                },
            )
            .replace("{request}", "00000000-0000-4000-8000-000000000000")
            .replace("{coding}", "00000000-0000-4000-8000-000000000000")
            .replace("{deficiency}", "00000000-0000-4000-8000-000000000000")
            .replace("{user}", "dr.okafor")
            .replace("{class}", "inpatient")
            .replace("{hash}", &"ab".repeat(32));
        for method in ["get", "post", "put"] {
            let Some(op) = item.get(method) else { continue };
            assert!(
                op["responses"].get("401").is_some() && op.get("summary").is_some(),
                "{method} {path} says what it does and that it needs a token"
            );
            let status = match method {
                "get" => http_get(&server.addr, &concrete, None).0,
                "put" => http_put(&server.addr, &concrete, None, "{}").0,
                _ => http_post(&server.addr, &concrete, None, "{}").0,
            };
            assert_eq!(
                status, 401,
                "{method} {path} is served, and asks for a token"
            );
            operations += 1;
        }
    }
    assert_eq!(operations, result["operations"].as_u64().unwrap() as usize);
    assert!(operations >= 30, "{operations}");
}
