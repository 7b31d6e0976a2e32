//! The records office's command line; see `chartsync_server::cli`.

fn main() -> std::process::ExitCode {
    chartsync_server::cli::main()
}
