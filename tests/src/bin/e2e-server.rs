//! The server under test: `chartsync-server`'s own entry point, built inside this crate so
//! the end-to-end tests can find it (`CARGO_BIN_EXE_e2e-server`) and run it as a process.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    chartsync_server::main()
}
