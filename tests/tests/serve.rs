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
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not a SQLite database"), "{said}");
    assert_eq!(
        std::fs::read(&store).unwrap(),
        junk,
        "the file is left as it was"
    );
    let _ = std::fs::remove_dir_all(&data);
}
