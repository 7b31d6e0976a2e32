#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests: made in a directory of its own, run as an
# unprivileged user, listening on loopback only; no system service is touched.
#
#   scripts/postgres.sh start DIR   makes and starts the cluster in DIR, prints its URL
#                                   (without TLS; DIR/tls/ca.pem is the CA of the TLS the
#                                   server offers too, for the tests of TLS)
#   scripts/postgres.sh restart DIR restarts it (a test of the servers meanwhile)
#   scripts/postgres.sh stop DIR    stops it (DIR is left for the caller to remove)
#
# Installs Debian's postgresql when no server is found and this is a Debian machine we may
# install on (without the package's default cluster).
set -euo pipefail

command=${1:?start or stop}
dir=${2:?a directory for the cluster}

bindir() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$found" ] && [ -x "$found/initdb" ]; then
        echo "$found"
    elif command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
    fi
}

# Runs a command as the cluster's owner: PostgreSQL refuses to run as root.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$owner" -- "$@"
    else
        "$@"
    fi
}

bin=$(bindir)
if [ -z "$bin" ] && [ "$command" = start ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "installing postgresql (the PostgreSQL store's tests)" >&2
        # The package's own cluster is not wanted (the tests make theirs), nor its service
        # started: policy-rc.d is Debian's way of saying so while a package installs.
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
        policy=/usr/sbin/policy-rc.d
        made_policy=
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' > "$policy"
            chmod +x "$policy"
            made_policy=1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confold postgresql >/dev/null
        [ -n "$made_policy" ] && rm -f "$policy"
        bin=$(bindir)
    fi
    if [ -z "$bin" ]; then
        echo "the PostgreSQL tests need a PostgreSQL server: install postgresql (Debian, Ubuntu)" >&2
        exit 1
    fi
fi

if [ "$(id -u)" = 0 ]; then
    owner=postgres
    id "$owner" >/dev/null 2>&1 || owner=nobody
fi

case "$command" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown "$owner" "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U chartsync -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }
    # TLS, as a hospital's database offers it: a CA of the test's own, and a certificate for
    # the loopback address it signs.
    tls="$dir/tls"
    mkdir -p "$tls"
    (
        cd "$tls"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=chartsync test CA" \
            -keyout ca.key -out ca.pem
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3 \
            -extfile san.ext -out server.crt
    ) >"$dir/tls.log" 2>&1 || {
        cat "$dir/tls.log" >&2
        exit 1
    }
    chmod 600 "$tls/server.key" "$tls/ca.key"
    chmod 644 "$tls/ca.pem"
    [ "$(id -u)" = 0 ] && chown -R "$owner" "$tls"
    # A free port on loopback, chosen by the kernel.
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir' -c max_connections=400 -c ssl=on -c ssl_cert_file='$tls/server.crt' -c ssl_key_file='$tls/server.key'" \
        >/dev/null || {
        cat "$dir/server.log" >&2
        exit 1
    }
    # The tests connect without TLS (their own clients are plain), but for those of TLS.
    echo "postgres://chartsync@127.0.0.1:$port/postgres?sslmode=disable"
    ;;
restart)
    # Fast: the sessions are ended, as when a database fails over; same options, same port.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 restart >/dev/null
    ;;
stop)
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    ;;
*)
    echo "usage: scripts/postgres.sh start|restart|stop DIR" >&2
    exit 2
    ;;
esac
