//! The README's run command: the server starts with its defaults, answers its health check, and
//! stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn the_server_starts_answers_its_health_check_and_stops_on_sigterm() {
    let data = std::env::temp_dir().join(format!("chartsync-serve-{}", std::process::id()));
    let mut server = Command::new(env!("CARGO_BIN_EXE_chartsync-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log line says where it listens.
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(i) = line.find("127.0.0.1:") {
            let rest = &line[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                .unwrap_or(rest.len());
            break rest[..end].to_string();
        }
    };
    let mut conn = TcpStream::connect(&addr).unwrap();
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

    let pid = server.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = server.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn the_server_refuses_a_data_directory_whose_store_is_not_a_chart_store() {
    let data = std::env::temp_dir().join(format!("chartsync-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let store = data.join("charts.db");
    let junk = b"a backup script wrote this here by mistake; it is not a database".to_vec();
    std::fs::write(&store, &junk).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chartsync-server"))
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
