#!/usr/bin/env bash
# Validates the FHIR R4 bundles the Rust tests exported (target/tmp/fhir-bundles/, written by
# `cargo test`), and a Bulk Data export's NDJSON files (target/tmp/fhir-bulk/) line by line,
# with two validators nobody on the team wrote: the npm package `fhir` and the PyPI package
# `fhir.resources`, each pinned. Every bundle and every line must pass both with no errors.
set -euo pipefail
cd "$(dirname "$0")/../.."

bundles=(target/tmp/fhir-bundles/*.json)
if [ ! -e "${bundles[0]}" ] || [ "${#bundles[@]}" -lt 3 ]; then
    echo "expected the bundles of core/tests/fhir.rs and tests/tests/records.rs in target/tmp/fhir-bundles; run cargo test first" >&2
    exit 1
fi
# A Bulk Data export of 2,000 charts (tests/tests/bulk.rs), its NDJSON checked line by line.
ndjson=(target/tmp/fhir-bulk/*.ndjson)
if [ ! -e "${ndjson[0]}" ]; then
    echo "expected the Bulk Data export of tests/tests/bulk.rs in target/tmp/fhir-bulk; run cargo test first" >&2
    exit 1
fi
bundles+=("${ndjson[@]}")

stamp=tests/fhir/node_modules/.installed-from-lock
if ! cmp -s tests/fhir/package-lock.json "$stamp" 2>/dev/null; then
    npm ci --prefix tests/fhir --no-audit --no-fund --loglevel=error
    cp tests/fhir/package-lock.json "$stamp"
fi

venv=target/fhir-venv
requirements=tests/fhir/requirements.txt
if ! cmp -s "$requirements" "$venv/.installed-from" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.installed-from"
fi

status=0
node tests/fhir/validate.js "${bundles[@]}" || status=1
"$venv/bin/python" tests/fhir/validate.py "${bundles[@]}" || status=1
exit $status
