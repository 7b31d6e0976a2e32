//! The records console over HTTP, as a browser meets it (docs/adr/0010-records-console.md):
//! sign-in with the staff directory, the session cookie's flags, the worklist with its aging,
//! a nurse kept out, CSRF, automatic logoff, revocation, and the security headers. The same
//! screens in a real browser, with axe-core: tests/console/ (run by `console_browser` below).

mod common;

use std::path::Path;
use std::process::Command;

use common::console::{get, post, sign_in};
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

/// The CSRF token in a page's forms.
fn csrf(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    body[at..at + 64].to_string()
}

fn audit_rows(data: &Path) -> Vec<(String, String, String)> {
    let db = open_server_db(&data.join("charts.db"));
    let mut stmt = db
        .prepare("SELECT user, action, COALESCE(detail, '') FROM audit_events WHERE device = 'console' ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
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
                .find(|r| r.contains(&format!("<td>{mrn}</td>")))
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
            "acknowledge",
            "delinquency",
            "nurse refused",
            "refused",
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
    let db = open_server_db(&data.path().join("charts.db"));
    let assigned: Vec<String> = db
        .prepare("SELECT c.mrn FROM deficiency_work w JOIN charts c ON c.key = w.chart WHERE w.assignee = 'dr.adeyemi' AND w.assigned_by = 'him.jones' ORDER BY c.mrn")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(assigned, ["MRN-0002", "MRN-0003"]);
    let (mrn, by, reason): (String, String, String) = db
        .query_row(
            "SELECT c.mrn, w.acknowledged_by, w.acknowledgement FROM deficiency_work w JOIN charts c ON c.key = w.chart WHERE w.acknowledged_at IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((mrn.as_str(), by.as_str()), ("MRN-0004", "him.jones"));
    assert!(reason.contains("morning round"));
    let actions: Vec<String> = db
        .prepare("SELECT action FROM audit_events WHERE device = 'console' AND user = 'him.jones' AND action IN ('assign', 'acknowledge', 'sign_in') ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(actions, ["sign_in", "assign", "assign", "acknowledge"]);
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
    let db = open_server_db(&data.path().join("charts.db"));
    let rows: Vec<(String, String)> = db
        .prepare("SELECT action, COALESCE(detail, '') FROM audit_events WHERE user = 'him.jones' AND action IN ('deny', 'assign', 'acknowledge') ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
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
    let p = get(addr, "/console/delinquency", Some(&cookie));
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
    let today = chartsync_core::chart::Timestamp::now().date().to_string();
    assert!(
        p.body.contains(&format!(
            "<td>{today}</td><td class=\"n\">1</td><td class=\"n\">2</td>"
        )),
        "{}",
        p.body
    );
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
}
