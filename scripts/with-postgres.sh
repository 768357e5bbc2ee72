#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL.
#
#   bash scripts/with-postgres.sh COMMAND [ARGS...]
#
# Finds PostgreSQL (or, as root with apt-get, installs Debian's `postgresql`), starts a
# throwaway cluster in a temporary folder on 127.0.0.1 at a free port, exports its superuser
# URL as TENANTKIT_TEST_POSTGRES_URL, runs the command, and always stops and deletes the
# cluster. With CI=true a PostgreSQL that cannot be had is a failure, never a skip.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }
is_ci() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; }

find_pg_bin() {
    local dir
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$dir/pg_ctl" && -x "$dir/initdb" ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

install_pg() {
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "PostgreSQL not found; installing Debian's postgresql package"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        return 0
    fi
    return 1
}

PG_BIN="$(find_pg_bin || true)"
if [[ -z "$PG_BIN" ]]; then
    install_pg || true
    PG_BIN="$(find_pg_bin || true)"
fi

PG_TMP=""
cleanup() {
    local status=$?
    if [[ -n "$PG_TMP" && -d "$PG_TMP" ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$PG_TMP"
        log "PostgreSQL stopped and removed"
    fi
    exit "$status"
}
trap cleanup EXIT INT TERM

# PostgreSQL refuses to run as root: as root, run it as the `postgres` OS user.
as_pg() {
    if [[ "$(id -u)" -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
        || shuf -i 20000-60000 -n 1
}

if [[ -n "$PG_BIN" ]]; then
    if [[ "$(id -u)" -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi
    PG_TMP="$(mktemp -d -t tenantkit-pg.XXXXXX)"
    [[ "$(id -u)" -eq 0 ]] && chown postgres "$PG_TMP"
    PG_PORT="$(free_port)"
    as_pg "$PG_BIN/initdb" -D "$PG_TMP/data" -U postgres --auth=trust -E UTF8 --no-sync >"$PG_TMP/initdb.log" 2>&1 \
        || { cat "$PG_TMP/initdb.log" >&2; exit 1; }
    # Durability is pointless for a throwaway cluster; turning it off makes the suite faster.
    as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_TMP -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null \
        || { cat "$PG_TMP/server.log" >&2; exit 1; }
    export TENANTKIT_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    log "$("$PG_BIN/postgres" --version) on 127.0.0.1:$PG_PORT"
elif is_ci; then
    log "CI=true but PostgreSQL could not be found or installed: failing"
    exit 1
else
    log "PostgreSQL not available: PostgreSQL tests will report that they did not run"
fi

"$@"
