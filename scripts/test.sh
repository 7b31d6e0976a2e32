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

# The console's browser test drives Debian's Chromium (no browser download at test time).
if ! command -v chromium >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "installing chromium (the records console's browser test)" >&2
        apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
    else
        echo "the console's browser test needs Chromium: install chromium (Debian, Ubuntu), or set CHROMIUM to its path" >&2
        exit 1
    fi
fi

# Node.js packages, each pinned by its package-lock.json: the interoperability test's
# automerge-repo client, and the console's browser test (playwright-core, axe-core).
if ! command -v npm >/dev/null; then
    echo "the interoperability and browser tests need Node.js and npm (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi
for dir in tests/interop tests/console; do
    stamp=$dir/node_modules/.installed-from-lock
    if ! cmp -s "$dir/package-lock.json" "$stamp" 2>/dev/null; then
        # `npm install` (which follows the lock) rather than `npm ci`: npm ci also demands lock
        # entries for cbor-extract's optional per-platform builds, which the registry this
        # project installs from does not serve; they are optional, and cbor-x falls back to
        # JavaScript.
        npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error
        cp "$dir/package-lock.json" "$stamp"
    fi
done

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
