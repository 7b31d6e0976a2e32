//! A real chartsync-server on an ephemeral port and tokens from its own `token` command; the
//! tablets and fixtures come from the crate's library.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[allow(unused_imports)]
pub use chartsync_tests::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_e2e-server");

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
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
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
            .args(["--by", "admin.kim"])
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
