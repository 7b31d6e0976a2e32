#!/usr/bin/env bash
# Regenerates the committed Swift bindings (bindings/swift) from the library. There is no
# Swift toolchain on the project's machines, so the generated files are committed and
# bindings/tests/run.sh checks they are what the library generates; run this after changing
# the exported API.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked -p chartsync-ffi
cargo build --locked -p uniffi-bindgen
case "$(uname -s)" in
    Darwin) lib=target/debug/libchartsync_ffi.dylib ;;
    *) lib=target/debug/libchartsync_ffi.so ;;
esac
rm -rf bindings/swift
target/debug/uniffi-bindgen generate --library "$lib" --no-format --language swift --out-dir bindings/swift
