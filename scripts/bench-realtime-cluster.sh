#!/usr/bin/env bash
# Realtime fan-out across two instances of the reference server, over each networked backplane,
# all on 127.0.0.1 and bounded in time. It needs release builds of the server and the load
# harness, and starts PostgreSQL and Redis itself (through scripts/with-services.sh):
#
#   cargo build --release -p tenantkit-server -p tenantkit-load
#   bash scripts/bench-realtime-cluster.sh     # BENCH_SUBSCRIBERS=1000 BENCH_ROUNDS=20 BENCH_RATE=5
#
# For each backplane (`redis`, then `postgres`): two instances A and B share one PostgreSQL
# database (owner + RLS-bound application role, as README.md describes), one data folder
# (their signing keys) and the backplane. BENCH_SUBSCRIBERS WebSocket clients subscribe to a
# project's channel on B only, and tasks are created over HTTP through A, so every delivery
# crosses from A to B: A's outbox relay publishes on the backplane, B fans out. Then the same
# with the subscribers on A (the relay's own instance), for comparison. Each run prints the
# harness's FANOUT line (examples/load/src/fanout.rs: deliveries, latency from the create
# request to the client reading the event, p50/p99/max, and A+B's summed RSS).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
SERVER="$ROOT/target/release/tenantkit-server"
LOAD="$ROOT/target/release/tenantkit-load"
log() { printf '[bench-realtime-cluster] %s\n' "$*" >&2; }
for bin in "$SERVER" "$LOAD"; do
    if [[ ! -x "$bin" ]]; then
        log "$bin is missing: cargo build --release -p tenantkit-server -p tenantkit-load"
        exit 1
    fi
done
if [[ -z "${TENANTKIT_TEST_POSTGRES_URL:-}" || -z "${TENANTKIT_TEST_REDIS_URL:-}" ]]; then
    exec bash "$ROOT/scripts/with-services.sh" bash "${BASH_SOURCE[0]}" "$@"
fi
SUBSCRIBERS="${BENCH_SUBSCRIBERS:-1000}"
ROUNDS="${BENCH_ROUNDS:-20}"
RATE="${BENCH_RATE:-5}"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK="$(mktemp -d -t tenantkit-bench-cluster.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The two roles of README.md (the migration grants to `tenantkit_app`), once per cluster; a
# database per backplane.
SUPER="$TENANTKIT_TEST_POSTGRES_URL"
PSQL="$(type -P psql || ls -d /usr/lib/postgresql/*/bin/psql | sort -V | tail -n 1)"
PG_HOSTPORT="${SUPER#postgres://postgres@}"
PG_HOSTPORT="${PG_HOSTPORT%%/*}"
"$PSQL" "$SUPER" -v ON_ERROR_STOP=1 -qAt <<'SQL'
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenantkit_owner') THEN
        CREATE ROLE tenantkit_owner LOGIN PASSWORD 'bench-owner';
        CREATE ROLE tenantkit_app NOLOGIN;
        CREATE ROLE tenantkit_app_login LOGIN PASSWORD 'bench-app' IN ROLE tenantkit_app;
    END IF;
END $$;
SQL

# start <name> <backplane> <data dir>: prints the base URL, records the pid in PID_<name>.
start() {
    local name="$1" backplane="$2" dir="$3" port
    port="$(free_port)"
    env TENANTKIT_DATA_DIR="$dir" TENANTKIT_BIND="127.0.0.1:$port" \
        DATABASE_URL="postgres://tenantkit_app_login:bench-app@$PG_HOSTPORT/$DB" \
        DATABASE_MIGRATION_URL="postgres://tenantkit_owner:bench-owner@$PG_HOSTPORT/$DB" \
        TENANTKIT_REDIS_URL="$TENANTKIT_TEST_REDIS_URL" TENANTKIT_REALTIME_BACKPLANE="$backplane" \
        TENANTKIT_RATE_PER_IP=1000000 TENANTKIT_RATE_REFRESH_PER_IP=1000000 \
        TENANTKIT_MAX_CONNECTIONS_PER_CLIENT=100000 \
        TENANTKIT_REALTIME_MAX_CONNECTIONS_PER_TENANT=100000 \
        TENANTKIT_LOG_FORMAT=json RUST_LOG=warn \
        "$SERVER" serve </dev/null >>"$dir/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    printf -v "PID_$name" '%s' "$pid"
    for _ in $(seq 1 600); do
        if curl -fsS --max-time 2 "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
            printf -v "URL_$name" '%s' "http://127.0.0.1:$port"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$dir/$name.log" >&2; log "$name exited"; exit 1; }
        sleep 0.1
    done
    log "$name: not ready after 60 s"; exit 1
}

stop_all() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

fanout() { # <label> <publish url> <subscribe url> <pids...>
    local label="$1" publish="$2" subscribe="$3"; shift 3
    local pid_args=()
    for pid in "$@"; do pid_args+=(--server-pid "$pid"); done
    local line
    line="$(timeout 300 "$LOAD" fanout --target tenantkit --publish-url "$publish" \
        --subscribe-url "$subscribe" --subscribers "$SUBSCRIBERS" --rounds "$ROUNDS" \
        --rate "$RATE" "${pid_args[@]}" | grep -m1 '^FANOUT ')" || true
    echo "$label: ${line:-no FANOUT line (see the logs in $WORK)}"
}

for backplane in redis postgres; do
    dir="$WORK/$backplane"
    mkdir -p "$dir"
    DB="bench_realtime_${backplane}_$$"
    "$PSQL" "$SUPER" -v ON_ERROR_STOP=1 -qAt -c "CREATE DATABASE $DB OWNER tenantkit_owner"
    start a "$backplane" "$dir"
    start b "$backplane" "$dir"
    log "$backplane: A $URL_a (pid $PID_a), B $URL_b (pid $PID_b)"
    fanout "$backplane, created on A, $SUBSCRIBERS subscribers on B" "$URL_a" "$URL_b" "$PID_a" "$PID_b"
    fanout "$backplane, created on A, $SUBSCRIBERS subscribers on A" "$URL_a" "$URL_a" "$PID_a" "$PID_b"
    stop_all
done
