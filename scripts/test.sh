#!/usr/bin/env bash
# Every test, on a fresh machine: installs what the build needs beyond the Rust toolchain (when
# it is missing and this is a Debian machine we may install on), then runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# The store's encryption (SQLCipher, built by rusqlite) links the system OpenSSL's libcrypto.
if ! echo '#include <openssl/evp.h>' | cc -E - >/dev/null 2>&1; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "installing libssl-dev (OpenSSL headers, for SQLCipher)" >&2
        apt-get update -qq && apt-get install -y -qq libssl-dev >/dev/null
    else
        echo "the build needs OpenSSL's headers: install libssl-dev (Debian, Ubuntu) or openssl-devel (Fedora)" >&2
        exit 1
    fi
fi

# The interoperability test's automerge-repo client (Node.js), pinned by its package-lock.json.
if ! command -v npm >/dev/null; then
    echo "the interoperability test needs Node.js and npm (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
stamp=tests/interop/node_modules/.installed-from-lock
if ! cmp -s tests/interop/package-lock.json "$stamp" 2>/dev/null; then
    # `npm install` (which follows the lock) rather than `npm ci`: npm ci also demands lock
    # entries for cbor-extract's optional per-platform builds, which the registry this project
    # installs from does not serve; they are optional, and cbor-x falls back to JavaScript.
    npm install --prefix tests/interop --no-audit --no-fund --no-save --loglevel=error
    cp tests/interop/package-lock.json "$stamp"
fi

# The FHIR export tests write their bundles here for the validators below; none are stale.
rm -rf target/tmp/fhir-bundles
cargo test --workspace --locked "$@"

# The exported FHIR bundles, checked by two independent R4 validators (Node.js and Python).
bash tests/fhir/run.sh

# The bindings, from Python (and the library they load, built on its own).
bash bindings/tests/run.sh

# Fuzzing, the short form: each target for 30 s from its committed corpus (a crash fails the
# run). Longer: `bash scripts/fuzz.sh 3600` (RELIABILITY.md, "Fuzzing").
bash scripts/fuzz.sh 30
