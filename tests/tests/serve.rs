//! The README's run command: the server starts with its defaults, answers its health check, and
//! stops cleanly on SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

#[test]
fn the_server_starts_answers_its_health_check_and_stops_on_sigterm() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("chartsync-data");
    let server = common::Server::start(&data);
    let mut conn = TcpStream::connect(&server.addr).unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""));
    assert!(response.contains("chartsync/chart@1"));
    assert!(response.contains("\"charts\":0"), "{response}");
    assert!(
        data.join("charts.db").is_file(),
        "the store is created in the data directory"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o700,
            "only the server's user may enter the data directory"
        );
    }
    let status = server.stop();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    // Stopped cleanly, the store is its one file: the log is folded in.
    let wal = std::fs::metadata(data.join("charts.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal, 0, "the write-ahead log was left with {wal} bytes");
}

#[test]
fn the_server_refuses_a_data_directory_whose_store_is_not_a_chart_store() {
    let data = std::env::temp_dir().join(format!("chartsync-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let store = data.join("charts.db");
    let junk = b"a backup script wrote this here by mistake; it is not a database".to_vec();
    std::fs::write(&store, &junk).unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("CHARTSYNC_STORE_KEY", common::STORE_KEY)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // Encrypted, a store is noise to anyone without the key, and so is junk.
    assert!(said.contains("not a chartsync store"), "{said}");
    assert_eq!(
        std::fs::read(&store).unwrap(),
        junk,
        "the file is left as it was"
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// What a server prints and how it ends, started with `configure`'s environment and expected
/// to refuse to start.
fn refused(data: &std::path::Path, configure: impl FnOnce(&mut Command)) -> String {
    let mut command = Command::new(common::BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("CHARTSYNC_STORE_KEY")
        .env_remove("CHARTSYNC_STORE_KEY_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("NO_COLOR", "1");
    configure(&mut command);
    let out = command.output().unwrap();
    assert!(!out.status.success(), "the server started");
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// The README's run command gives no key: a new store is encrypted all the same, with a key
/// made outside the data directory (in the user's configuration directory), private to the
/// user. A copy of the data directory alone opens nowhere: without the key the server
/// refuses it, and leaves it as it was.
#[test]
fn with_no_key_given_a_new_store_is_encrypted_with_a_key_kept_outside_the_data_directory() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("chartsync-data");
    let config = parent.path().join("config");
    let server = common::Server::start_configured(&data, "127.0.0.1:0", &[], |c| {
        c.env("XDG_CONFIG_HOME", &config);
    });
    let token = server.token("him.jones", "technician", &["4west"]);
    let (status, _) = common::http_get(&server.addr, "/api/charts?ward=4west", Some(&token));
    assert_eq!(status, 200);
    assert!(server.stop().success());

    let key = config.join("chartsync").join("store.key");
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.trim().len(), 64, "64 hex digits");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only the server's user reads the key");
    }
    for entry in std::fs::read_dir(&data).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(15).any(|w| w == b"SQLite format 3"));
        assert!(!bytes.windows(64).any(|w| w == text.trim().as_bytes()));
    }

    // The data directory copied somewhere without the key: refused, untouched.
    let store = data.join("charts.db");
    let before = std::fs::read(&store).unwrap();
    let said = refused(&data, |c| {
        c.env("XDG_CONFIG_HOME", parent.path().join("elsewhere"));
    });
    assert!(said.contains("no key was found"), "{said}");
    assert_eq!(std::fs::read(&store).unwrap(), before);

    // With the key (here as a systemd credential), it opens.
    let credentials = tempfile::tempdir().unwrap();
    std::fs::copy(&key, credentials.path().join("chartsync-store-key")).unwrap();
    let server = common::Server::start_configured(&data, "127.0.0.1:0", &[], |c| {
        c.env("XDG_CONFIG_HOME", parent.path().join("elsewhere"))
            .env("CREDENTIALS_DIRECTORY", credentials.path());
    });
    assert!(server.stop().success());

    // A key file in the data directory is refused: a copy would carry its own key.
    std::fs::copy(&key, data.join("store.key")).unwrap();
    let said = refused(&data, |c| {
        c.arg("--store-key-file").arg(data.join("store.key"));
    });
    assert!(
        said.contains("must not be kept in the data directory"),
        "{said}"
    );
}

/// A store from before encryption: the server will not open it as if nothing were wrong, and
/// says how to encrypt it; `chartsync-records encrypt` does, keeping every chart; the server
/// then starts on it.
#[test]
fn a_plain_store_is_refused_until_chartsync_records_encrypts_it() {
    use chartsync_core::store::{ChartStore, StoreOptions};
    let data = tempfile::tempdir().unwrap();
    let store = data.path().join("charts.db");
    let id = ChartStore::open(&store, StoreOptions::default())
        .unwrap()
        .create(common::admit())
        .unwrap();

    let said = refused(data.path(), |c| {
        c.env("CHARTSYNC_STORE_KEY", common::STORE_KEY);
    });
    assert!(said.contains("chartsync-records encrypt"), "{said}");

    let out = Command::new(env!("CARGO_BIN_EXE_e2e-records"))
        .arg("--data-dir")
        .arg(data.path())
        .arg("encrypt")
        .env("CHARTSYNC_STORE_KEY", common::STORE_KEY)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("encrypted 1 charts"), "{printed}");
    assert!(
        printed.contains("still plain"),
        "old backups are named: {printed}"
    );

    let server = common::Server::start(data.path());
    let token = server.token("him.jones", "technician", &["4west"]);
    let (status, body) = common::http_get(&server.addr, &format!("/api/charts/{id}"), Some(&token));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("MRN-0042"));
    assert!(server.stop().success());
}
