//! The `chartsync-server` binary; everything it does is in the library.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    chartsync_server::main()
}
