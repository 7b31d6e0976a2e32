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

# The FHIR export tests write their bundles (and the Bulk Data export its NDJSON) here for the
# validators below; none are stale.
rm -rf target/tmp/fhir-bundles target/tmp/fhir-bulk
cargo test --workspace --locked "$@"

# The same store and end-to-end suites again, with the store in PostgreSQL (docs/adr/0011):
# a private cluster in a temporary directory, started here and stopped on the way out.
pg_dir=$(mktemp -d)
trap 'bash scripts/postgres.sh stop "$pg_dir"; rm -rf "$pg_dir"' EXIT
CHARTSYNC_TEST_POSTGRES=$(bash scripts/postgres.sh start "$pg_dir")
# The CA of the TLS the cluster offers, for the tests of the store's TLS to its database.
CHARTSYNC_TEST_POSTGRES_CA="$pg_dir/tls/ca.pem"
# Where the cluster is, for the test that restarts it under load.
CHARTSYNC_TEST_POSTGRES_DIR="$pg_dir"
export CHARTSYNC_TEST_POSTGRES CHARTSYNC_TEST_POSTGRES_CA CHARTSYNC_TEST_POSTGRES_DIR
# `--workspace` throughout: the first pass's build, with the features the workspace unifies
# (the server turns on the store's `postgres`), serves again as it is; selecting one package
# would unify features anew and rebuild much of the tree.
# The store's behaviour suite (the crash test and the index's property test among it; `purge`,
# `retention` and `attachments` name the store's and the end-to-end suites of charts leaving
# tablets, of retention and of scanned documents; the one skipped restores the data
# directory's file backup, which a database does with its own tools), and what only a
# database has: schema versions across nodes, one audit chain for several, the single-writer
# lease.
cargo test --workspace --locked \
    --test store --test store_index --test store_crash \
    --test holding_area --test break_glass --test disclosures --test chart_audit \
    --test chart_search --test patient_index --test purge --test retention \
    --test attachments "$@" -- \
    --skip files_a_restore_lost_come_back_from_the_tablet_that_has_them_or_are_filed_again
cargo test --workspace --locked --test store_postgres "$@" -- --ignored
# Every end-to-end suite whose servers keep a store (serve.rs is the README's SQLite default,
# and the two skipped are the data directory's file backup and restore, which a database
# does with its own tools).
cargo test --workspace --locked \
    --test api --test bounds --test bulk --test busy --test console --test devices --test held \
    --test interop --test records --test records_cli --test simulation --test sync \
    --test tablets "$@" -- \
    --skip after_a_restore_from_backup_the_tablets_bring_back_everything_and_converge \
    --skip a_restore_from_a_damaged_or_foreign_file_is_refused_and_changes_nothing
# Three server nodes on one database: a commit through one reaches tablets on the others; a
# node killed mid-sync leaves its tablets to another, losing nothing; the lease's holder
# killed, the ward censuses and compaction move to another node; a hospital moved from its
# file to the database. Then, alone (it restarts the cluster every test here uses), the
# database restarted under load.
cargo test --workspace --locked --test nodes "$@" -- --ignored --skip restarted_under_load
cargo test --workspace --locked --test nodes "$@" -- --ignored restarted_under_load
unset CHARTSYNC_TEST_POSTGRES CHARTSYNC_TEST_POSTGRES_CA CHARTSYNC_TEST_POSTGRES_DIR
bash scripts/postgres.sh stop "$pg_dir"

# The exported FHIR bundles, checked by two independent R4 validators (Node.js and Python).
bash tests/fhir/run.sh

# The bindings, from Python (and the library they load, built on its own).
bash bindings/tests/run.sh

# Fuzzing, the short form: each target for 30 s from its committed corpus (a crash fails the
# run). Longer: `bash scripts/fuzz.sh 3600` (RELIABILITY.md, "Fuzzing").
bash scripts/fuzz.sh 30
