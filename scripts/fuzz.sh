#!/usr/bin/env bash
# Coverage-guided fuzzing of chartsync's parsers and checks (RELIABILITY.md, "Fuzzing").
#
#   bash scripts/fuzz.sh            # every target for 30 s each (what the test command runs)
#   bash scripts/fuzz.sh 3600       # every target for an hour each
#   bash scripts/fuzz.sh 600 frame  # one target
#   bash scripts/fuzz.sh merge      # fold what runs found into the committed corpus, minimised
#
# libFuzzer (from the libfuzzer-sys crate, built here with the C++ compiler) on the stable
# toolchain: the coverage instrumentation is rustc's stable `-C` options (debug assertions and
# overflow checks on, from fuzz/Cargo.toml's release profile), without sanitizers
# (Rust's own checks catch out-of-bounds reads; what is looked for is a panic, an abort, a
# hang or runaway memory). The corpus in fuzz/corpus/<target> is committed; what a run
# finds that adds coverage is kept there, and a crash is written to fuzz/artifacts/<target>
# and fails the run: turn it into a regression test, then fix it. New inputs go to
# target/fuzz/corpus/<target>, beside the committed corpus, until `merge` folds them in.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
shift || true
merge=false
if [ "$seconds" = merge ]; then
    merge=true
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame sync_message chart_edits stored server_session)
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/fuzz}
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# With an explicit target, RUSTFLAGS instrument the targets only, not build scripts and
# procedural macros (which run on the host without libFuzzer's runtime).
host=$(rustc -vV | sed -n 's/^host: //p')
echo "building the fuzz targets (release, instrumented) ..." >&2
cargo build --locked --release --manifest-path fuzz/Cargo.toml --bins --target "$host"
bin="$CARGO_TARGET_DIR/$host/release"

status=0
for t in "${targets[@]}"; do
    found="$CARGO_TARGET_DIR/corpus/$t"
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "$found"
    if $merge; then
        merged="$CARGO_TARGET_DIR/merged/$t"
        rm -rf "$merged" && mkdir -p "$merged"
        "$bin/$t" -merge=1 "$merged" "fuzz/corpus/$t" "$found" 2>/dev/null
        # The committed corpus stays small: found inputs up to 64 KiB, and every input with a
        # name (the seeds, and the inputs that once crashed a target, which tests and
        # RELIABILITY.md name) whatever the merge made of it.
        find "$merged" -type f -size +64k ! -name 'seed-*' -delete
        find "fuzz/corpus/$t" -regextype posix-extended -type f ! -regex '.*/[0-9a-f]{40}' \
            -exec cp -n {} "$merged"/ \;
        rm -rf "fuzz/corpus/$t" && mv "$merged" "fuzz/corpus/$t" && rm -rf "$found"
        echo "  $t: $(ls "fuzz/corpus/$t" | wc -l) inputs in the committed corpus" >&2
        continue
    fi
    echo "fuzzing $t for ${seconds}s" >&2
    log="$CARGO_TARGET_DIR/$t.log"
    if ! "$bin/$t" "$found" "fuzz/corpus/$t" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -max_len=1048576 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" 2>"$log"; then
        echo "$t: a crash, kept in fuzz/artifacts/$t/; the last of its log:" >&2
        tail -40 "$log" >&2
        status=1
    fi
    grep -E "stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb" "$log" \
        | sed "s/^/  $t: /" >&2 || true
done
exit $status
