#!/usr/bin/env bash
# A bounded benchmark of the Stripe webhook endpoint, POST /v1/billing/stripe/webhook, of the
# release server, on SQLite and on PostgreSQL, all on 127.0.0.1. It needs a built server:
#
#   cargo build --release -p tenantkit-server
#   bash scripts/bench-webhooks.sh
#
# Per backend:
#   1. starts target/release/tenantkit-server on a free port, its data in a mktemp folder,
#      with TENANTKIT_STRIPE_WEBHOOK_SECRETS=whsec_bench and RUST_LOG=warn;
#   2. signs BENCH_WEBHOOK_EVENTS (default 60000) distinct events with python3's hmac, t = now
#      (the server accepts 300 s either way), one "<Stripe-Signature>\t<body>" per line, and
#      checks one genuine delivery (200 {"received":true}) and one forged (400);
#   3. ingest: `wrk -t2 -c50 -d<BENCH_DURATION, 10>s --latency --timeout 10s` with
#      scripts/compare/lua/webhook.lua (one line per request, each thread its own share,
#      wrapping around to duplicates when its share runs out; every non-2xx is an error).
#      The server's billing worker handles the stored events at the same time (test.bench has
#      no handler: each is marked done), so the ack latency is measured with the worker busy;
#   4. samples billing_events' states once per second during and after the run, and waits
#      (at most BENCH_DRAIN_MAX_SECS, default 60) until no event is pending or processing:
#      the worker's done/s and how long it needs to drain after wrk stopped.
# SQLite: <tmp>/data/tenantkit.db, read with python3's sqlite3. PostgreSQL: a throwaway cluster
# from scripts/with-services.sh (fsync off), the owner + RLS-bound application role of
# README.md "PostgreSQL: two roles and row-level security" (as scripts/compare.sh sets them
# up), read with psql as the superuser. Then prints one markdown table.
#
# Bounded: a watchdog ends the script after BENCH_DEADLINE_SECS (default 230); the drain waits
# shrink to fit it. The trap stops everything started (servers, wrk, samplers, the
# with-services run and with it PostgreSQL) and removes the temp folder (kept, with its logs,
# after a failure). BENCH_NO_POSTGRES=1 skips the PostgreSQL row.
#
# Exit status: 0 when the table was printed with both rows measured (errors inside runs are
# reported in it), 1 when a step failed (the table is still printed with what was measured).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SELF="$ROOT/scripts/bench-webhooks.sh"

BIN="$ROOT/target/release/tenantkit-server"
LUA="$ROOT/scripts/compare/lua/webhook.lua"
EVENTS=${BENCH_WEBHOOK_EVENTS:-60000}
DUR=${BENCH_DURATION:-10}
DEADLINE=${BENCH_DEADLINE_SECS:-230}
DRAIN_MAX=${BENCH_DRAIN_MAX_SECS:-60}
THREADS=2 CONNS=50
SECRET=whsec_bench
PATH_WEBHOOK=/v1/billing/stripe/webhook

MODE=main
if [[ ${1:-} == --pg-inner ]]; then
    # Run by this script under scripts/with-services.sh: <tmp folder> <drain cap seconds>
    # <unix time by which the drain wait must end>.
    MODE=pg TMP=${2:?} DRAIN_CAP=${3:?} DRAIN_END=${4:?}
fi

log() { printf '[bench-webhooks] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

now() { date +%s.%N; }
elapsed_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# Processes and cleanup (each mode stops what it started)
# ---------------------------------------------------------------------------------------------
SERVER_PID="" SERVER_LOG="" WRK_PID="" SAMPLER_PID="" WATCHDOG_PID="" PG_RUN_PID=""
STARTED_AT=$(now)

# stop_pid <pid> [seconds]: TERM, wait up to <seconds> (default 10), then KILL.
stop_pid() {
    local pid=$1 secs=${2:-10} i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

server_log_tail() {
    if [[ -n $SERVER_LOG && -s $SERVER_LOG ]]; then
        echo "--- server log (tail of $SERVER_LOG) ---" >&2
        tail -n 30 "$SERVER_LOG" >&2
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    stop_pid "$WRK_PID" 5
    stop_pid "$SAMPLER_PID" 2
    if [[ -n $PG_RUN_PID ]] && kill -0 "$PG_RUN_PID" 2>/dev/null; then
        # The inner run first (its trap stops its server); with-services then stops PostgreSQL.
        [[ -r $TMP/pg-inner.pid ]] && stop_pid "$(cat "$TMP/pg-inner.pid")" 20
        for _ in $(seq 300); do kill -0 "$PG_RUN_PID" 2>/dev/null || break; sleep 0.1; done
        stop_pid "$PG_RUN_PID" 20
    fi
    if [[ -n $SERVER_PID ]]; then
        ((rc == 0)) || server_log_tail
        stop_pid "$SERVER_PID" 10
    fi
    if [[ $MODE == main ]]; then
        if [[ -n $WATCHDOG_PID ]]; then
            kill "$WATCHDOG_PID" 2>/dev/null
            wait "$WATCHDOG_PID" 2>/dev/null
        fi
        if ((rc != 0 && rc != 130 && rc != 143)) && [[ -d ${TMP:-} ]]; then
            log "work folder kept: $TMP"
        elif [[ -n ${TMP:-} ]]; then
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# server_start <dir> [VAR=value ...]: SERVER_PID, SERVER_PORT, BASE.
server_start() {
    local dir=$1; shift
    mkdir -p "$dir/data"
    SERVER_PORT=$(free_port)
    BASE="http://127.0.0.1:$SERVER_PORT"
    SERVER_LOG="$dir/server.log"
    env TENANTKIT_DATA_DIR="$dir/data" TENANTKIT_BIND="127.0.0.1:$SERVER_PORT" \
        TENANTKIT_STRIPE_WEBHOOK_SECRETS="$SECRET" TENANTKIT_MAX_CONNECTIONS_PER_CLIENT=100000 \
        RUST_LOG=warn "$@" \
        "$BIN" serve </dev/null >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || { server_log_tail; die "the server exited at start-up"; }
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/healthz" || true) == 200 ]] && break
        sleep 0.1
    done
    ((i < 300)) || { server_log_tail; die "no /healthz after 30 s"; }
    log "server up on $BASE (pid $SERVER_PID)"
}

# gen_requests <file> <label>: EVENTS signed deliveries, plus <file>.probe (one more event) and
# <file>.forged (a wrong signature), all signed at t = now.
gen_requests() {
    python3 - "$1" "$2" "$EVENTS" "$SECRET" <<'PY'
import hashlib, hmac, json, sys, time
path, label, n, secret = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
t = str(int(time.time()))
def line(i):
    body = json.dumps({"id": f"evt_bench_{label}_{i:07d}", "object": "event", "type": "test.bench",
                       "created": 1700000000, "livemode": False}, separators=(",", ":"))
    sig = hmac.new(secret, f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={sig}", body
with open(path, "w") as f:
    for i in range(n):
        f.write("%s\t%s\n" % line(i))
with open(path + ".probe", "w") as f:
    f.write("%s\t%s\n" % line(n))
sig, body = line(n + 1)
with open(path + ".forged", "w") as f:
    f.write("%s\t%s\n" % (sig[:-4] + "0000" if not sig.endswith("0000") else sig[:-4] + "1111", body))
PY
}

# post_line <file>: POSTs its first delivery; prints "<status> <body>".
post_line() {
    local sig body
    IFS=$'\t' read -r sig body <"$1"
    curl -sS --max-time 10 -o "$1.resp" -w '%{http_code}' -X POST \
        -H 'content-type: application/json' -H "Stripe-Signature: $sig" \
        --data-binary "$body" "$BASE$PATH_WEBHOOK" || true
    printf ' %s' "$(head -c 300 "$1.resp" 2>/dev/null)"
}

# count_states: "<done> <pending> <processing> <dead> <total>" of billing_events.
count_states() {
    case "$BACKEND" in
        sqlite)
            python3 - "$DB_FILE" <<'PY'
import sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=5)
n = dict(c.execute("SELECT state, count(*) FROM billing_events GROUP BY state"))
print(n.get("done", 0), n.get("pending", 0), n.get("processing", 0), n.get("dead", 0), sum(n.values()))
PY
            ;;
        pg)
            "$PSQL" "$PG_TK_SUPER" -v ON_ERROR_STOP=1 -At -F ' ' -c \
                "SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'pending'),
                        count(*) FILTER (WHERE state = 'processing'), count(*) FILTER (WHERE state = 'dead'),
                        count(*) FROM billing_events"
            ;;
    esac
}

# sample_once <file>: appends "<unix time> <done> <pending> <processing> <dead> <total>".
sample_once() {
    local ts line
    ts=$(now)
    line=$(count_states 2>/dev/null) || return 1
    [[ -n $line ]] || return 1
    printf '%s %s\n' "$ts" "$line" >>"$1"
    LAST_SAMPLE="$ts $line"
}

# scenario <label> <dir>: generate, check, wrk, sample, drain; writes results/<label>.env.
scenario() {
    local label=$1 dir=$2 req="$2/requests.tsv" out="$2/wrk.txt" samples="$2/samples.txt"
    local drain_cap=$DRAIN_CAP
    log "$label: signing $EVENTS events"
    gen_requests "$req" "$label"
    local probe forged
    probe=$(post_line "$req.probe")
    forged=$(post_line "$req.forged")
    log "$label: genuine delivery -> $probe (want 200); forged -> ${forged%% *} (want 400)"
    [[ ${probe%% *} == 200 && $probe == *'"received":true'* ]] || { server_log_tail; die "$label: a genuine delivery was not accepted"; }
    [[ ${forged%% *} == 400 ]] || die "$label: a forged delivery was not refused"

    : >"$samples"
    (
        trap 'exit 0' TERM
        while :; do sample_once "$samples" || true; sleep 1; done
    ) &
    SAMPLER_PID=$!
    sleep 0.3
    local noisy=""
    ! pgrep -x rustc >/dev/null 2>&1 || noisy=1
    log "$label: wrk -t$THREADS -c$CONNS -d${DUR}s --latency --timeout 10s"
    local t0 t1 t2=""
    t0=$(now)
    env WRK_WEBHOOK_FILE="$req" WRK_THREADS="$THREADS" \
        timeout $((DUR + 30)) wrk "-t$THREADS" "-c$CONNS" "-d${DUR}s" --latency --timeout 10s \
        -s "$LUA" "$BASE$PATH_WEBHOOK" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || log "$label: wrk exited with $? (see below)"
    WRK_PID=""
    t1=$(now)
    ! pgrep -x rustc >/dev/null 2>&1 || noisy=1
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$out" >&2; server_log_tail; die "$label: the server died during the run"; }

    # Drain: poll faster than the sampler, for the time the worker needed after wrk stopped.
    log "$label: waiting (at most ${drain_cap}s) until no event is pending or processing"
    local pending processing
    while :; do
        if sample_once "$samples"; then
            read -r _ _ pending processing _ <<<"$LAST_SAMPLE"
            if ((pending + processing == 0)); then t2=${LAST_SAMPLE%% *}; break; fi
        fi
        (($(elapsed_since "$t1") < drain_cap)) || break
        sleep 0.25
    done
    stop_pid "$SAMPLER_PID" 2; SAMPLER_PID=""

    local line
    line=$(grep -m1 '^RESULT ' "$out" || true)
    if [[ -z $line ]]; then
        log "$label: wrk gave no RESULT line:"; tail -n 20 "$out" >&2
        server_log_tail
        die "$label: wrk failed"
    fi
    field() { sed -E "s/.* $1=([^ ]+).*/\\1/" <<<"$line"; }
    local errors; errors=$(field errors)
    if [[ $errors != 0 ]]; then
        log "$label: $errors errors: wrk said:"; grep -E 'Non-2xx|Socket errors|RESULT' "$out" >&2 || true
        server_log_tail
    fi
    # The worker's rates from the samples: overall, during the run, after it.
    python3 - "$samples" "$t0" "$t1" "${t2:-}" "$drain_cap" >"$dir/worker.env" <<'PY'
import sys
rows = []
for l in open(sys.argv[1]):
    p = l.split()
    if len(p) == 6:
        rows.append((float(p[0]), *map(int, p[1:])))
rows.sort()
t0, t1 = float(sys.argv[2]), float(sys.argv[3])
t2 = float(sys.argv[4]) if sys.argv[4] else None
cap = sys.argv[5]
def rate(a, b):
    return (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else 0.0
first, last = rows[0], rows[-1]
at_t1 = ([r for r in rows if r[0] <= t1 + 0.05] or [first])[-1]  # the last sample before wrk stopped
peak = max((rate(a, b) for a, b in zip(rows, rows[1:]) if b[0] - a[0] >= 0.5), default=0.0)
out = {
    "W_RATE": "%.0f" % rate(first, last),
    "W_DURING": "%.0f" % rate(first, at_t1),
    "W_AFTER": "%.0f" % rate(at_t1, last) if last[0] > at_t1[0] else "—",
    "W_PEAK": "%.0f" % peak,
    "W_BACKLOG": str(at_t1[5] - at_t1[1]),
    "W_ROWS": str(last[5]),
    "W_DONE": str(last[1]),
    "W_DEAD": str(last[4]),
    "W_LEFT": str(last[2] + last[3]),
    "W_DRAIN": ("%.1f s" % max(0.0, t2 - t1)) if t2 is not None else
               (">%s s (%d left)" % (cap, last[2] + last[3])),
}
# Not drained in time: how much longer at the rate after the run (a rough, linear guess).
after = rate(at_t1, last) if last[0] > at_t1[0] else 0.0
left = last[2] + last[3]
if t2 is None and after > 0:
    more = left / after
    out["W_DRAIN"] += ", ~%s more at %.0f/s" % (
        "%.0f s" % more if more < 120 else "%.0f min" % (more / 60), after)
elif t2 is None:
    out["W_DRAIN"] += ", no progress"
for k, v in out.items():
    print("%s=%s" % (k, "'" + v.replace("'", "'\\''") + "'"))
PY
    {
        printf 'R_RPS=%q\nR_P50=%q\nR_P99=%q\nR_ERR=%q\nR_REQ=%q\nR_RESENT=%q\nR_NOISY=%q\n' \
            "$(field rps)" "$(field p50_ms)" "$(field p99_ms)" "$errors" "$(field requests)" \
            "$(field resent)" "$noisy"
        printf 'R_STATUS_ERR=%q\nR_SOCKET_ERR=%q\nR_TIMEOUTS=%q\n' \
            "$(field status_errors)" "$(field socket_errors)" "$(field timeouts)"
        cat "$dir/worker.env"
    } >"$TMP/results/$label.env"
    # shellcheck disable=SC1090
    . "$TMP/results/$label.env"
    log "$label: $R_RPS rps, p50 $R_P50 ms, p99 $R_P99 ms, errors $R_ERR; worker $W_RATE done/s" \
        "(during $W_DURING, after $W_AFTER), drain $W_DRAIN, $W_ROWS rows"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL, inside scripts/with-services.sh
# ---------------------------------------------------------------------------------------------
if [[ $MODE == pg ]]; then
    echo $$ >"$TMP/pg-inner.pid"
    [[ -n ${TENANTKIT_TEST_POSTGRES_URL:-} ]] || die "scripts/with-services.sh gave no PostgreSQL"
    PSQL=$(command -v psql || true)
    if [[ -z $PSQL ]]; then
        # shellcheck disable=SC2012
        PSQL=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -n1)/psql
    fi
    [[ -x $PSQL ]] || die "no psql"
    SUPER=$TENANTKIT_TEST_POSTGRES_URL
    HOSTPORT=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(f"{p.hostname}:{p.port or 5432}")' "$SUPER")
    PG_TK_SUPER="${SUPER%/*}/tenantkit"
    # README "PostgreSQL: two roles": the owner migrates, the RLS-bound app login serves.
    "$PSQL" "$SUPER" -v ON_ERROR_STOP=1 -qAt <<'SQL'
CREATE ROLE tenantkit_owner LOGIN PASSWORD 'bench-owner';
CREATE ROLE tenantkit_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE tenantkit_app_login LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD 'bench-app' IN ROLE tenantkit_app;
CREATE DATABASE tenantkit OWNER tenantkit_owner;
SQL
    PG_VERSION=$("$PSQL" "$SUPER" -Atc 'SHOW server_version')
    printf 'PG_VERSION=%q\n' "$PG_VERSION" >"$TMP/results/pg.version"
    BACKEND=pg
    mkdir -p "$TMP/pg"
    server_start "$TMP/pg" \
        "DATABASE_URL=postgres://tenantkit_app_login:bench-app@$HOSTPORT/tenantkit" \
        "DATABASE_MIGRATION_URL=postgres://tenantkit_owner:bench-owner@$HOSTPORT/tenantkit"
    # The with-services start-up took what it took: the drain wait ends by DRAIN_END.
    left=$(awk -v e="$DRAIN_END" -v n="$(now)" -v d="$DUR" 'BEGIN { printf "%d", e - n - d - 5 }')
    ((left >= DRAIN_CAP)) || DRAIN_CAP=$left
    ((DRAIN_CAP > 5)) || DRAIN_CAP=5
    scenario pg "$TMP/pg"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Main: preflight, SQLite, PostgreSQL, report
# ---------------------------------------------------------------------------------------------
[[ -x $BIN ]] || { echo "missing $BIN (cargo build --release -p tenantkit-server)" >&2; exit 1; }
for tool in python3 curl wrk timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
TMP=$(mktemp -d -t tenantkit-bench-webhooks.XXXXXX)
mkdir -p "$TMP/results"
(
    for _ in $(seq "$DEADLINE"); do sleep 1; done
    echo "[bench-webhooks] deadline of ${DEADLINE}s reached" >&2
    kill -TERM $$ 2>/dev/null
) &
WATCHDOG_PID=$!
if pgrep -x rustc >/dev/null 2>&1; then
    log "WARNING: a Rust compiler is running on this machine: the numbers will be noisy"
fi

# What is left for the drain waits: the PostgreSQL part needs ~40 s besides its drain.
drain_cap() { # <seconds to keep for what comes after>
    local left=$((DEADLINE - $(elapsed_since "$STARTED_AT") - DUR - $1))
    ((left < DRAIN_MAX)) || left=$DRAIN_MAX
    ((left > 5)) || left=5
    echo "$left"
}

FAILED=()
BACKEND=sqlite
DB_FILE="$TMP/sqlite/data/tenantkit.db"
if [[ ${BENCH_NO_POSTGRES:-0} == 1 ]]; then DRAIN_CAP=$(drain_cap 10); else DRAIN_CAP=$(drain_cap $((DUR + 70))); fi
server_start "$TMP/sqlite"
[[ -f $DB_FILE ]] || die "no SQLite database at $DB_FILE"
scenario sqlite "$TMP/sqlite"
stop_pid "$SERVER_PID" 10; SERVER_PID=""

if [[ ${BENCH_NO_POSTGRES:-0} != 1 ]]; then
    PG_CAP=$(drain_cap 25)
    log "PostgreSQL: scripts/with-services.sh (drain wait at most ${PG_CAP}s)"
    PG_END=$(awk -v s="$STARTED_AT" -v d="$DEADLINE" 'BEGIN { printf "%d", s + d - 20 }')
    bash "$ROOT/scripts/with-services.sh" bash "$SELF" --pg-inner "$TMP" "$PG_CAP" "$PG_END" \
        </dev/null >"$TMP/pg-run.log" 2>&1 &
    PG_RUN_PID=$!
    set +e
    wait "$PG_RUN_PID"; PG_RC=$?
    set -e
    PG_RUN_PID=""
    grep '^\[bench-webhooks\]' "$TMP/pg-run.log" >&2 || true
    if ((PG_RC != 0)); then
        log "the PostgreSQL part failed (exit $PG_RC); its log:"
        tail -n 40 "$TMP/pg-run.log" >&2
        FAILED+=("PostgreSQL (exit $PG_RC)")
    fi
fi

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
ms() { awk -v v="$1" 'BEGIN { printf "%.2f ms", v }'; }
row() { # <label> <name>
    local f="$TMP/results/$1.env"
    if [[ ! -r $f ]]; then echo "| $2 | — | — | — | — | — | not measured |"; return; fi
    (
        # shellcheck disable=SC1090
        . "$f"
        printf '| %s | %.0f | %s | %s | %s | %s (during the run %s, after %s) | %s |\n' \
            "$2${R_NOISY:+ (a compiler was running)}" "$R_RPS" "$(ms "$R_P50")" "$(ms "$R_P99")" \
            "$R_ERR" "$W_RATE" "$W_DURING" "$W_AFTER" "$W_DRAIN"
    )
}
note() { # <label> <name>
    local f="$TMP/results/$1.env"
    [[ -r $f ]] || return 0
    (
        # shellcheck disable=SC1090
        . "$f"
        echo "- $2: $R_REQ requests ($R_RESENT of them resent duplicates), errors: $R_STATUS_ERR non-2xx," \
            "$R_SOCKET_ERR socket, $R_TIMEOUTS timeouts; $W_ROWS events stored ($W_DONE done, $W_DEAD dead," \
            "$W_LEFT still pending/processing at the end); backlog when wrk stopped: $W_BACKLOG;" \
            "worker peak $W_PEAK done/s over one sample"
    )
}
PG_VERSION=""
# shellcheck disable=SC1091
[[ ! -r $TMP/results/pg.version ]] || . "$TMP/results/pg.version"
{
    echo
    echo "## Stripe webhook ingest — wrk -t$THREADS -c$CONNS -d${DUR}s --latency --timeout 10s, $EVENTS signed events"
    echo
    echo "$(nproc) cores, wrk on the same machine; the billing worker runs during the ingest; run took $(elapsed_since "$STARTED_AT")s."
    echo
    echo "| backend | ingest rps | p50 | p99 | errors | worker done/s | drain time after the run |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    row sqlite "SQLite"
    [[ ${BENCH_NO_POSTGRES:-0} == 1 ]] || row pg "PostgreSQL${PG_VERSION:+ $PG_VERSION} (fsync off)"
    echo
    note sqlite "SQLite"
    note pg "PostgreSQL"
    echo "- worker done/s: (done at the last sample − done before wrk) / the time between, sampled once a second; drain time: from wrk's end until no event was pending or processing (polled every 0.25 s)"
    ((${#FAILED[@]} == 0)) || echo "- FAILED: ${FAILED[*]}"
}
((${#FAILED[@]} == 0)) || exit 1
