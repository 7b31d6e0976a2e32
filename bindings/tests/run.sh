#!/usr/bin/env bash
# The foreign-language tests of chartsync-ffi. Builds the library on its own (`-p`, so the
# bindgen's command-line dependencies stay out of it), generates the bindings from it in
# library mode, and runs the Python tests against a real chartsync-server.
set -euo pipefail
cd "$(dirname "$0")/../.."

# The server and the bindgen with the workspace's features (what `cargo test --workspace` has
# built already), then the library on its own.
cargo build --locked --workspace --bins
cargo build --locked -p chartsync-ffi
case "$(uname -s)" in
    Darwin) lib=target/debug/libchartsync_ffi.dylib ;;
    *) lib=target/debug/libchartsync_ffi.so ;;
esac
out=target/bindings
rm -rf "$out"
mkdir -p "$out/python/chartsync"
target/debug/uniffi-bindgen generate --library "$lib" --language python \
    --out-dir "$out/python/chartsync" >/dev/null
cp "$lib" "$out/python/chartsync/"
: >"$out/python/chartsync/__init__.py"

# pytest, pinned, in a virtual environment of its own.
venv=target/bindings-venv
requirements=bindings/tests/python/requirements.txt
if ! cmp -s "$requirements" "$venv/.installed-from" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.installed-from"
fi
CHARTSYNC_SERVER=target/debug/chartsync-server PYTHONPATH="$out/python:bindings/tests/python" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider bindings/tests/python
