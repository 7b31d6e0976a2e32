//! `cargo run -p uniffi-bindgen -- generate --library <libchartsync_ffi> --language kotlin ...`
//! (bindings/README.md). A separate package, so its command-line dependencies stay out of
//! the library when it is built with `-p chartsync-ffi`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
