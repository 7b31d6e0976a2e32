#!/usr/bin/env bash
# The foreign-language tests of chartsync-ffi. Builds the library on its own (`-p`, so the
# bindgen's command-line dependencies stay out of it), generates the bindings from it in
# library mode, and runs:
#   - Kotlin on the JVM (kotlinc from npm, pinned; JNA and kotlinx-coroutines from Debian),
#     playing a tablet against a real chartsync-server;
#   - Python (pytest, pinned), the same flows and more, and a second store that receives
#     what the Kotlin tablet recorded;
#   - Swift: the committed bindings are regenerated and must not differ (no Swift toolchain).
# Each prints a closing "N passed, M failed" line, which .ci/run counts.
set -euo pipefail
cd "$(dirname "$0")/../.."

# What the JVM test needs from Debian, installed when missing (as the OpenSSL headers are):
# JNA, and kotlinx-coroutines (1.0.1) with the atomicfu it loads at run time.
jars=(/usr/share/java/jna.jar /usr/share/java/kotlinx-coroutines-core.jar /usr/share/java/atomicfu.jar)
for jar in "${jars[@]}"; do
    if [ ! -f "$jar" ]; then
        if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
            echo "installing JNA and kotlinx-coroutines (for the Kotlin tests)" >&2
            apt-get update -qq && apt-get install -y -qq libjna-java libkotlinx-coroutines-java \
                libkotlinx-atomicfu-java >/dev/null
            break
        fi
        echo "the Kotlin tests need $jar: apt-get install libjna-java libkotlinx-coroutines-java libkotlinx-atomicfu-java" >&2
        exit 1
    fi
done
if ! command -v java >/dev/null; then
    echo "the Kotlin tests need a Java runtime (Debian: apt-get install default-jdk-headless)" >&2
    exit 1
fi
kotlin=bindings/tests/kotlin
stamp=$kotlin/node_modules/.installed-from-lock
if ! cmp -s "$kotlin/package-lock.json" "$stamp" 2>/dev/null; then
    npm install --prefix "$kotlin" --no-audit --no-fund --no-save --loglevel=error
    cp "$kotlin/package-lock.json" "$stamp"
fi
kotlinc_home=$kotlin/node_modules/kotlin-compiler

# The server and the bindgen, with the features `cargo test --workspace` resolved (dev-
# dependencies included: `--tests`), so nothing it built is built again; then the library on
# its own.
cargo build --locked --workspace --bins --tests
cargo build --locked -p chartsync-ffi
case "$(uname -s)" in
    Darwin) lib=target/debug/libchartsync_ffi.dylib ;;
    *) lib=target/debug/libchartsync_ffi.so ;;
esac
out=target/bindings
rm -rf "$out"
mkdir -p "$out/lib" "$out/python/chartsync" "$out/work"
cp "$lib" "$out/lib/"
bindgen() { target/debug/uniffi-bindgen generate --library "$lib" --no-format "$@" >/dev/null; }
bindgen --language python --out-dir "$out/python/chartsync"
cp "$lib" "$out/python/chartsync/"
: >"$out/python/chartsync/__init__.py"
bindgen --language kotlin --out-dir "$out/kotlin"

# Swift: the committed bindings (bindings/swift) are what this library generates.
bindgen --language swift --out-dir "$out/swift"
swift_failed=0
if diff -r bindings/swift "$out/swift" >/dev/null; then
    echo "ok      the committed Swift bindings are fresh"
else
    swift_failed=1
    echo "FAILED  bindings/swift differs from what the library generates:" >&2
    diff -r bindings/swift "$out/swift" | head -20 >&2 || true
    echo "        regenerate: bash bindings/generate-swift.sh" >&2
fi
echo "$((1 - swift_failed)) passed, $swift_failed failed in 0.00s"

# pytest, pinned, in a virtual environment of its own.
venv=target/bindings-venv
requirements=bindings/tests/python/requirements.txt
if ! cmp -s "$requirements" "$venv/.installed-from" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.installed-from"
fi

echo "compiling the Kotlin tests" >&2
"$kotlinc_home/bin/kotlinc" -nowarn \
    -cp "$(IFS=:; echo "${jars[*]}")" \
    "$out"/kotlin/uniffi/*/*.kt "$kotlin"/compat/*.kt "$kotlin"/*.kt \
    -d "$out/kotlin-classes"

# One server for the hand-off between the Kotlin tablet and the Python store. Its store's key
# is made where the README's run command makes it, in the (here, the run's own) configuration
# directory.
export XDG_CONFIG_HOME="$out/config"
server_log=$out/server.log
NO_COLOR=1 target/debug/chartsync-server serve --listen 127.0.0.1:0 --data-dir "$out/server" >"$server_log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
    addr=$(grep -o 'listen=127\.0\.0\.1:[0-9]*' "$server_log" | head -1 | cut -d= -f2 || true)
    [ -n "$addr" ] && break
    sleep 0.05
done
[ -n "$addr" ] || { echo "the server did not start:" >&2; cat "$server_log" >&2; exit 1; }
token() { target/debug/chartsync-server token --data-dir "$out/server" --user "$1" --role nurse --ward 4west "${@:2}"; }
export CHARTSYNC_URL="ws://$addr/sync"
export CHARTSYNC_TOKEN_NIGHT CHARTSYNC_TOKEN_DAY CHARTSYNC_TOKEN_EXPIRING
CHARTSYNC_TOKEN_NIGHT=$(token rn.park)
CHARTSYNC_TOKEN_DAY=$(token rn.lee)
# Expired by the time the Kotlin tests run (they compile first).
CHARTSYNC_TOKEN_EXPIRING=$(token rn.park --ttl 1s)
export CHARTSYNC_WORK=$out/work CHARTSYNC_HANDOFF=$out/work/handoff.txt
# The shared-tablet test: people in the directory, and a code to enrol the tablet with.
admin() { target/debug/chartsync-server "$@" --data-dir "$out/server" --by admin.kim; }
export CHARTSYNC_PASSWORD="night shift 4west" CHARTSYNC_BASE="http://$addr"
for person in rn.park:nurse him.jones:technician; do
    echo "$CHARTSYNC_PASSWORD" | admin staff add --user "${person%%:*}" --role "${person#*:}" \
        --ward 4west --password-stdin >/dev/null
done
CHARTSYNC_ENROL_CODE=$(admin device enroll --label T-KT --ward 4west 2>/dev/null)
export CHARTSYNC_ENROL_CODE
# A 5east clerk, to admit the patient the Kotlin tablet opens with break-glass.
CHARTSYNC_TOKEN_5EAST=$(target/debug/chartsync-server token --data-dir "$out/server" --user him.jones --role technician --ward 5east)
export CHARTSYNC_TOKEN_5EAST

kotlin_status=0
java -Djna.library.path="$out/lib" \
    -cp "$out/kotlin-classes:$kotlinc_home/lib/kotlin-stdlib.jar:$(IFS=:; echo "${jars[*]}")" \
    TabletTestKt || kotlin_status=$?

python_status=0
CHARTSYNC_SERVER=target/debug/chartsync-server PYTHONPATH="$out/python:bindings/tests/python" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider bindings/tests/python || python_status=$?

[ "$swift_failed" = 0 ] && [ "$kotlin_status" = 0 ] && [ "$python_status" = 0 ]
