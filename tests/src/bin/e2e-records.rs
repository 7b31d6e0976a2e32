//! `chartsync-records` built into this package, so the end-to-end tests can run it (Cargo
//! gives `CARGO_BIN_EXE_*` only for a package's own binaries).

fn main() -> std::process::ExitCode {
    chartsync_server::cli::main()
}
