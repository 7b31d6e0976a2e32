//! A real chartsync-server on an ephemeral port and tokens from its own `token` command; the
//! tablets and fixtures come from the crate's library.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chartsync_core::chart::{ChartId, Role, Staff};
use chartsync_core::client::{ClientConfig, SyncClient, SyncStatus};
use chartsync_core::store::ChartStore;
use chartsync_core::tablet::{
    self as core_tablet, EnrolResponse, PendingSignIn, Session, SessionResponse, SignInResponse,
};
use chartsync_core::trust::KdfParams;
#[allow(unused_imports)]
pub use chartsync_tests::*;
use serde_json::Value;

pub mod console;

pub const BIN: &str = env!("CARGO_BIN_EXE_e2e-server");

/// `chartsync-records` as sys.admin on the SQLite store of the data directory `data` (backup
/// and restore are of the file).
pub fn records_on_file(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_e2e-records"))
        .arg("--data-dir")
        .arg(data)
        .args(["--user", "sys.admin"])
        .args(args)
        .env_remove("CHARTSYNC_TOKEN")
        .env("CHARTSYNC_STORE_KEY", STORE_KEY)
        .output()
        .unwrap()
}

/// The key of every test server's store, given to the server and its command lines as
/// `CHARTSYNC_STORE_KEY`: the stores are encrypted, as a hospital's are.
pub const STORE_KEY: &str = "5e11f0e5c0ffee00d15ea5edba5eba11b1e55edca5ca0ef1edc0deba5eba1100";

/// How a test opens a server's store itself: with its key.
#[allow(dead_code)]
pub fn server_store_options() -> chartsync_core::store::StoreOptions {
    let bytes: [u8; 32] = hex::decode(STORE_KEY).unwrap().try_into().unwrap();
    chartsync_core::store::StoreOptions {
        encryption_key: Some(chartsync_core::store::EncryptionKey::new(bytes)),
        ..chartsync_core::store::StoreOptions::default()
    }
}

/// The store a server started on `data_dir` uses, opened by the test itself (to put charts
/// there before the server starts, or look after it stops): the data directory's file, or
/// its database when the suite runs on PostgreSQL.
#[allow(dead_code)]
pub fn open_server_store(data_dir: &Path) -> ChartStore {
    match test_database(data_dir) {
        Some(url) => std::thread::scope(|s| {
            s.spawn(|| {
                // A look from outside: the server nodes keep the lease.
                let options = chartsync_core::store::StoreOptions {
                    lease: false,
                    ..Default::default()
                };
                ChartStore::open_postgres(&url, options).unwrap()
            })
            .join()
            .unwrap()
        }),
        None => ChartStore::open(data_dir.join("charts.db"), server_store_options()).unwrap(),
    }
}

/// Rows of `sql` on the store of the server whose data directory is `data_dir`, read behind
/// its back as an auditor would, every column as text (NULL as ""), whichever engine holds
/// the store. Parameters are `?1`, `?2`, ...; write the column `user` as `"user"` (a reserved
/// word in PostgreSQL).
#[allow(dead_code)]
pub fn server_rows(data_dir: &Path, sql: &str, args: &[&str]) -> Vec<Vec<String>> {
    match test_database(data_dir) {
        Some(url) => on_database(&url, |client| {
            let rows = client
                .query(&postgres_parameters(sql), &text_parameters(args))
                .unwrap();
            rows.iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| match *r.columns()[i].type_() {
                            postgres::types::Type::INT8 => r
                                .get::<_, Option<i64>>(i)
                                .map(|v| v.to_string())
                                .unwrap_or_default(),
                            _ => r.get::<_, Option<String>>(i).unwrap_or_default(),
                        })
                        .collect()
                })
                .collect()
        }),
        None => {
            let db = open_server_db(&data_dir.join("charts.db"));
            let mut stmt = db.prepare(sql).unwrap();
            stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                (0..r.as_ref().column_count())
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => String::new(),
                            rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                            rusqlite::types::ValueRef::Text(t) => {
                                String::from_utf8_lossy(t).into_owned()
                            }
                            other => format!("{other:?}"),
                        })
                    })
                    .collect()
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
        }
    }
}

/// Runs `sql` on a stopped server's store (someone editing it by hand); how many rows it
/// changed. As [`server_rows`] for parameters and `"user"`.
#[allow(dead_code)]
pub fn server_execute(data_dir: &Path, sql: &str, args: &[&str]) -> u64 {
    match test_database(data_dir) {
        Some(url) => on_database(&url, |client| {
            client
                .execute(&postgres_parameters(sql), &text_parameters(args))
                .unwrap()
        }),
        None => open_server_db(&data_dir.join("charts.db"))
            .execute(sql, rusqlite::params_from_iter(args.iter()))
            .unwrap() as u64,
    }
}

/// Runs `f` on a connection to the database `url`, on a thread of its own: the blocking
/// client must not start inside a test's runtime.
fn on_database<T: Send>(url: &str, f: impl FnOnce(&mut postgres::Client) -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| f(&mut postgres::Client::connect(url, postgres::NoTls).unwrap()))
            .join()
            .unwrap()
    })
}

fn text_parameters<'a>(args: &'a [&'a str]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    args.iter().map(|a| a as _).collect()
}

/// `?1` as PostgreSQL writes it, `$1`.
fn postgres_parameters(sql: &str) -> String {
    sql.replace('?', "$")
}

/// A server's store as raw SQLite, keyed: for tests that damage it by hand.
#[allow(dead_code)]
pub fn open_server_db(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA key = \"x'{STORE_KEY}'\"; PRAGMA cipher_page_size = {};",
        chartsync_core::store::schema::PAGE_SIZE
    ))
    .unwrap();
    conn
}

/// The variable naming a PostgreSQL server (a URL whose database may create databases):
/// when set, every test server keeps its charts in a database of its own there
/// (`serve --database-url`), and the end-to-end suite runs on PostgreSQL. scripts/test.sh
/// sets it for a second run, on a private cluster it starts.
pub const POSTGRES: &str = "CHARTSYNC_TEST_POSTGRES";

/// In a data directory: the server there keeps its store in its file, on the PostgreSQL pass
/// too (see [`test_database`]).
#[allow(dead_code)]
pub const ON_FILE: &str = "test-on-file";

/// The database of the server whose data directory is `data_dir`, made on its first start
/// (a restart finds the same one), when the suite runs on PostgreSQL.
pub fn test_database(data_dir: &Path) -> Option<String> {
    let admin = std::env::var(POSTGRES).ok().filter(|u| !u.is_empty())?;
    // A server kept on its file whatever the pass (one whose store is then moved).
    if data_dir.join(ON_FILE).exists() {
        return None;
    }
    let file = data_dir.join("test-database-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url);
    }
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "e2e{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    on_database(&admin, |client| {
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap()
    });
    // The server's URL with this database in place of its own; its parameters kept.
    let (admin_url, query) = admin.split_once('?').unwrap_or((&admin, ""));
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("a URL ending in /database");
    let url = match query {
        "" => format!("{base}/{name}"),
        q => format!("{base}/{name}?{q}"),
    };
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(&file, &url).unwrap();
    Some(url)
}

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts the server on 127.0.0.1 with an ephemeral port, keeping its data in `data_dir`.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_on(data_dir, "127.0.0.1:0")
    }

    /// Starts the server on a given address (to restart it where devices expect it).
    pub fn start_on(data_dir: &Path, listen: &str) -> Server {
        Server::start_with(data_dir, listen, &[])
    }

    /// Starts the server with more `serve` options.
    pub fn start_with(data_dir: &Path, listen: &str, options: &[&str]) -> Server {
        Server::start_configured(data_dir, listen, options, |c| {
            c.env("CHARTSYNC_STORE_KEY", STORE_KEY);
        })
    }

    /// Starts the server with `serve` options and an environment of `configure`'s making
    /// (the store's key is not given unless it gives it).
    pub fn start_configured(
        data_dir: &Path,
        listen: &str,
        options: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", listen])
            .args(options)
            .arg("--data-dir")
            .arg(data_dir)
            .args(test_database(data_dir).map(|url| format!("--database-url={url}")))
            .env_remove("CHARTSYNC_STORE_KEY")
            .env_remove("CHARTSYNC_STORE_KEY_FILE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("NO_COLOR", "1")
            // The server's own default filter, as a hospital runs it.
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        configure(&mut command);
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the server exited before listening")
                .unwrap();
            if line.contains("listening") {
                if let Some(i) = line.find("127.0.0.1:") {
                    let rest = &line[i..];
                    let end = rest
                        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                        .unwrap_or(rest.len());
                    break rest[..end].to_string();
                }
            }
        };
        // Keep draining its log so it never blocks on a full pipe; CHARTSYNC_TEST_LOG=1 shows it.
        let echo = std::env::var_os("CHARTSYNC_TEST_LOG").is_some();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if echo {
                    eprintln!("[server] {line}");
                }
            }
        });
        Server {
            child,
            addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// A token from the server's own command line.
    pub fn token(&self, user: &str, role: &str, wards: &[&str]) -> String {
        self.token_for(user, role, wards, "12h")
    }

    /// A token that lasts `ttl` (`90s`, `30m`, `12h`).
    pub fn token_for(&self, user: &str, role: &str, wards: &[&str], ttl: &str) -> String {
        let mut cmd = Command::new(BIN);
        cmd.args(["token", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--user", user, "--role", role, "--ttl", ttl]);
        for w in wards {
            cmd.args(["--ward", w]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Runs one of the server's administration commands (`staff`, `device`, `revoke`) on its
    /// data directory, with `stdin` as its input; its standard output.
    pub fn admin(&self, args: &[&str], stdin: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(test_database(&self.data_dir).map(|url| format!("--database-url={url}")))
            .args(["--by", "admin.kim"])
            .env("CHARTSYNC_STORE_KEY", STORE_KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// One of the server's Prometheus counters or gauges (`chartsync_` and the name).
    pub fn metric(&self, name: &str) -> f64 {
        let (status, text) = http_get(&self.addr, "/metrics", None);
        assert_eq!(status, 200);
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("chartsync_{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in {text}"))
    }

    /// SIGKILL: the server dies mid-whatever, as in a power cut.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const WAIT: Duration = Duration::from_secs(30);

pub fn client(url: String, token: &str, peer: &str, store: &Arc<ChartStore>) -> SyncClient {
    let mut config = ClientConfig::new(url, token, peer);
    config.wards = vec!["4west".into()];
    config.backoff_min = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(800);
    SyncClient::start(store.clone(), config)
}

/// Waits until the client's status satisfies `ok`, or fails with the last status seen.
pub async fn until(c: &SyncClient, what: &str, ok: impl Fn(&SyncStatus) -> bool) -> SyncStatus {
    let mut status = c.status();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = status.borrow_and_update().clone();
        if ok(&now) {
            return now;
        }
        match tokio::time::timeout_at(deadline, status.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("{what}: never happened; the status is {now:?}"),
        }
    }
}

/// Waits until `done` holds (looked at every 50 ms), or fails saying `what` never happened.
pub async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free port's address, for a server restarted in a test to be where its tablets look.
pub fn fixed_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `chartsync-records backup` of the running server's data directory into `to`.
pub fn back_up(data: &Path, to: &Path) {
    let out = records_on_file(data, &["backup", to.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server stopped, its store restored from `backup` (`chartsync-records restore`), and
/// started again where it was: the restore's report, and the server.
pub async fn restored(server: Server, data: &Path, backup: &Path) -> (String, Server) {
    let addr = server.addr.clone();
    let stopped = tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    assert!(stopped.success());
    let out = records_on_file(data, &["restore", backup.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    (said, Server::start_on(data, &addr))
}

/// The registration PC: a patient admitted there (to 4west) for each MRN, synced to the
/// server under the clerk's token for `wards`.
pub struct Pc {
    pub store: Arc<ChartStore>,
    pub clerk: Staff,
    pub token: String,
    pub client: SyncClient,
    pub charts: Vec<ChartId>,
}

pub async fn registration_pc(
    server: &Server,
    devices: &tempfile::TempDir,
    wards: &[&str],
    mrns: &[String],
) -> Pc {
    let store = tablet_store(devices, "pc");
    let clerk = Staff::new("him.jones", Role::Technician, "records-pc-1");
    let charts = mrns
        .iter()
        .enumerate()
        .map(|(n, mrn)| {
            store
                .create(admit_at(mrn, "4west", at(n as i64), &clerk))
                .unwrap()
        })
        .collect();
    let token = server.token("him.jones", "technician", wards);
    let url = format!("ws://{}/sync", server.addr);
    let client = client(url, &token, "records-pc-1", &store);
    assert!(client.wait_until_up_to_date(WAIT).await);
    Pc {
        store,
        clerk,
        token,
        client,
        charts,
    }
}

/// The chart as the server has it, read through REST.
pub fn on_server(server: &Server, token: &str, id: ChartId) -> serde_json::Value {
    let (status, body) = http_get(&server.addr, &format!("/api/charts/{id}"), Some(token));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

// ----- shared tablets (docs/adr/0008-shared-tablets.md) -----

pub fn challenge(server: &Server) -> Vec<u8> {
    let (status, body) = http_post(&server.addr, "/api/devices/challenge", None, "{}");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    B64.decode(v["challenge"].as_str().unwrap()).unwrap()
}

pub fn enrol(server: &Server, secret: &[u8], code: &str) -> (u16, Value) {
    let body = core_tablet::Tablet::enrol_request(secret, code, &challenge(server)).unwrap();
    let body = serde_json::to_string(&body).unwrap();
    let (status, body) = http_post(&server.addr, "/api/devices/enrol", None, &body);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A tablet enrolled with `code`, its store keeping the enrolment.
pub fn enrolled(
    server: &Server,
    store: Arc<ChartStore>,
    secret: &[u8],
    code: &str,
) -> core_tablet::Tablet {
    let (status, answer) = enrol(server, secret, code);
    assert_eq!(status, 200, "{answer}");
    let answer: EnrolResponse = serde_json::from_value(answer).unwrap();
    let base = format!("http://{}", server.addr);
    core_tablet::Tablet::finish_enrolment(
        store,
        secret,
        &base,
        &answer,
        KdfParams::INSECURE_FOR_TESTS,
    )
    .unwrap()
}

/// A person's online sign-in on `tablet`, as a tablet app makes it: (status, the server's
/// answer, the key waiting for its certificate).
pub fn sign_in(
    tablet: &core_tablet::Tablet,
    server: &Server,
    user: &str,
    password: &str,
) -> (u16, Value, PendingSignIn) {
    let (pending, body) = tablet.sign_in_request(user, password, &challenge(server));
    let path = format!("/api/devices/{}/sign-in", tablet.device());
    let body = serde_json::to_string(&body).unwrap();
    let (status, body) = http_post(&server.addr, &path, None, &body);
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::Null),
        pending,
    )
}

/// A person signed in online on `tablet`, with their key sealed under `pin`.
pub fn signed_in(tablet: &core_tablet::Tablet, server: &Server, user: &str, pin: &str) -> Session {
    let (status, answer, pending) = sign_in(tablet, server, user, PASSWORD);
    assert_eq!(status, 200, "{answer}");
    let answer: SignInResponse = serde_json::from_value(answer).unwrap();
    tablet.finish_sign_in(pending, &answer, pin).unwrap()
}

/// The tablet's sync session token.
pub fn device_token(tablet: &core_tablet::Tablet, server: &Server) -> String {
    let body = serde_json::to_string(&tablet.session_request(&challenge(server))).unwrap();
    let path = format!("/api/devices/{}/session", tablet.device());
    let (status, body) = http_post(&server.addr, &path, None, &body);
    assert_eq!(status, 200, "{body}");
    let answer: SessionResponse = serde_json::from_str(&body).unwrap();
    answer.token
}

pub fn add_staff(server: &Server, user: &str, role: &str, wards: &[&str]) {
    let mut args = vec![
        "staff",
        "add",
        "--user",
        user,
        "--role",
        role,
        "--password-stdin",
    ];
    for w in wards {
        args.extend(["--ward", w]);
    }
    server.admin(&args, &format!("{PASSWORD}\n"));
}

pub fn enrolment_code(server: &Server, label: &str, ward: &str) -> String {
    let code = server.admin(&["device", "enroll", "--label", label, "--ward", ward], "");
    code.trim().to_string()
}

pub const PASSWORD: &str = "night shift 4west";

/// `session`'s heart-rate observation on chart `id` in a tablet's `store`, signed, now.
pub fn signed_heart_rate(store: &ChartStore, session: &Session, id: ChartId, bpm: u32) {
    session
        .with_key(|k| {
            store.update_signed(k, id, |ch| {
                ch.add_entry(
                    session.staff(),
                    chartsync_core::chart::Timestamp::now(),
                    heart_rate(bpm),
                )
            })
        })
        .unwrap()
        .unwrap();
}
