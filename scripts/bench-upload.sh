#!/usr/bin/env bash
# A bounded benchmark of the server's local upload path (tenantkit-storage's local backend,
# served at /v1/storage/upload/{token}), all on 127.0.0.1. It needs a built release server:
#
#   cargo build --release -p tenantkit-server
#   bash scripts/bench-upload.sh
#
# It starts target/release/tenantkit-server on a free port with a throwaway data dir (under
# target/, so the dd comparison runs on the same disk), signs up, uploads a 256 MiB
# PNG-prefixed random file BENCH_BIG_RUNS times (default 3, each with a fresh intent) while
# sampling the server's VmRSS, times each complete, compares with dd (random and zero data,
# both with fsync like the server), then runs BENCH_SMALL_FILES (default 50) 4 KiB files
# through intent -> PUT -> complete and prints a markdown summary. A watchdog ends it after
# BENCH_DEADLINE_SECS (default 175) seconds; the trap always stops the server and removes the
# temp dir.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

BIN=$ROOT/target/release/tenantkit-server
BIG_MIB=${BENCH_BIG_MIB:-256}
BIG_RUNS=${BENCH_BIG_RUNS:-3}
SMALL_FILES=${BENCH_SMALL_FILES:-50}
DEADLINE=${BENCH_DEADLINE_SECS:-175}
CURL_MAX=120

[[ -x $BIN ]] || { echo "missing $BIN (cargo build --release -p tenantkit-server)" >&2; exit 1; }
for tool in curl python3 dd sha256sum head; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

mkdir -p "$ROOT/target/tmp"
TMP=$(mktemp -d "$ROOT/target/tmp/bench-upload.XXXXXX")
SERVER_PID=
SAMPLER_PID=
WATCHDOG_PID=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null
    [[ -n $WATCHDOG_PID ]] && kill "$WATCHDOG_PID" 2>/dev/null
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    if (( rc != 0 )) && [[ -s $TMP/server.log ]]; then
        echo "--- server log (tail) ---" >&2
        tail -n 30 "$TMP/server.log" >&2
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "bench-upload: $*" >&2; exit 1; }

# jget FILE EXPR: a field of the JSON in FILE (EXPR is Python on `d`).
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# call METHOD PATH [JSON]: answers "<status> <seconds>", the body in $TMP/resp.
call() {
    local method=$1 path=$2 body=${3-}
    local args=(-sS --max-time "$CURL_MAX" -o "$TMP/resp" -w '%{http_code} %{time_total}'
        -X "$method" -H "authorization: Bearer ${TOKEN-}")
    [[ -n $body ]] && args+=(-H 'content-type: application/json' --data-binary "$body")
    curl "${args[@]}" "$BASE$path" || true
}

# expect WANT "<status> <seconds>" WHAT: fails with the server's answer (the problem JSON).
expect() {
    local want=$1 got=${2%% *} what=$3
    if [[ $got != "$want" ]]; then
        echo "bench-upload: $what answered $got (wanted $want):" >&2
        cat "$TMP/resp" >&2 2>/dev/null; echo >&2
        exit 1
    fi
}

# 1. The server.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
env TENANTKIT_DATA_DIR="$TMP/data" \
    TENANTKIT_BIND="127.0.0.1:$PORT" \
    TENANTKIT_PUBLIC_URL="$BASE" \
    TENANTKIT_UPLOAD_MAX_BYTES=536870912 \
    TENANTKIT_STORAGE_QUOTA_BYTES=10737418240 \
    TENANTKIT_RATE_PER_IP=100000 \
    TENANTKIT_MAX_CONNECTIONS_PER_CLIENT=100000 \
    RUST_LOG=warn \
    "$BIN" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
# The whole run is bounded: the watchdog signals this script (whose trap cleans up) and stops
# the server, so a request in flight fails at once instead of running out its --max-time.
(
    for _ in $(seq "$DEADLINE"); do sleep 1; done
    echo "bench-upload: deadline of ${DEADLINE}s reached" >&2
    kill -TERM $$ "$SERVER_PID" 2>/dev/null
) &
WATCHDOG_PID=$!
for _ in $(seq 150); do
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited at start-up"
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/healthz" || true) == 200 ]] && break
    sleep 0.2
done
[[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/healthz" || true) == 200 ]] \
    || die "GET /healthz never answered 200"
echo "server pid $SERVER_PID on $BASE, data in $TMP/data" >&2

# 2. An account.
r=$(call POST /v1/auth/signup \
    '{"email":"bench@bench.test","password":"bench passphrase 2026","tenant_name":"Bench","tenant_slug":"bench"}')
expect 201 "$r" "POST /v1/auth/signup"
TOKEN=$(jget "$TMP/resp" 'd["access_token"]')
[[ -n $TOKEN ]] || die "signup answered no access_token: $(cat "$TMP/resp")"

# 3. The big file: the PNG signature, then random bytes.
BIG=$TMP/big.png
{ printf '\x89PNG\r\n\x1a\n'; head -c $(( BIG_MIB * 1024 * 1024 - 8 )) /dev/urandom; } >"$BIG"
BIG_SIZE=$(stat -c %s "$BIG")
BIG_SHA=$(sha256sum "$BIG" | cut -d' ' -f1)
echo "big file: $BIG_SIZE bytes, sha256 $BIG_SHA" >&2

# intent FILE SIZE SHA NAME: creates an upload intent, leaving it in $TMP/intent.json.
intent() {
    local r
    r=$(call POST /v1/uploads "{\"filename\":\"$4\",\"content_type\":\"image/png\",\"size\":$2,\"sha256\":\"$3\"}")
    expect 201 "$r" "POST /v1/uploads"
    cp "$TMP/resp" "$TMP/intent.json"
    [[ $(jget "$TMP/intent.json" 'd["method"]') == PUT ]] || die "intent is not a PUT: $(cat "$TMP/intent.json")"
}

# 4-7. The big uploads, each with a fresh intent.
RSS_IDLE=$(rss_kib)
RSS_MAX=0
PUT_MIBS=() PUT_SECS=() COMPLETE_MS=()
for run in $(seq "$BIG_RUNS"); do
    intent "$BIG" "$BIG_SIZE" "$BIG_SHA" "big-$run.png"
    ID=$(jget "$TMP/intent.json" 'd["id"]')
    URL=$(jget "$TMP/intent.json" 'd["url"]')
    # The signed headers, as told (curl sets Content-Length itself from the file).
    mapfile -t HDRS < <(python3 -c '
import json, sys
for k, v in json.load(open(sys.argv[1])).get("headers", {}).items():
    if k.lower() != "content-length":
        print(f"-H\n{k}: {v}")' "$TMP/intent.json")

    : >"$TMP/rss.samples"
    ( while :; do awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status" >>"$TMP/rss.samples" 2>/dev/null; sleep 0.2; done ) &
    SAMPLER_PID=$!
    # -T streams the file (no copy in curl's memory); an empty Expect skips 100-continue.
    r=$(curl -sS --max-time "$CURL_MAX" -o "$TMP/resp" -w '%{http_code} %{time_total}' \
        -X PUT "${HDRS[@]}" -H 'Expect:' -T "$BIG" "$URL") || true
    kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=
    expect 201 "$r" "PUT (run $run) $URL"
    secs=${r#* }
    PUT_SECS+=("$secs")
    PUT_MIBS+=("$(awk -v b="$BIG_SIZE" -v s="$secs" 'BEGIN {printf "%.0f", b / 1048576 / s}')")
    m=$(sort -n "$TMP/rss.samples" | tail -n1)
    (( ${m:-0} > RSS_MAX )) && RSS_MAX=$m

    r=$(call POST "/v1/uploads/$ID/complete")
    expect 200 "$r" "POST /v1/uploads/$ID/complete"
    [[ $(jget "$TMP/resp" 'd["sha256"]') == "$BIG_SHA" ]] || die "complete answered another sha256: $(cat "$TMP/resp")"
    COMPLETE_MS+=("$(awk -v s="${r#* }" 'BEGIN {printf "%.1f", s * 1000}')")
    echo "run $run: PUT ${secs}s = ${PUT_MIBS[-1]} MiB/s, complete ${COMPLETE_MS[-1]} ms, max RSS $(mib "${m:-0}") MiB" >&2
done
sleep 1
RSS_AFTER=$(rss_kib)

# 6. dd on the same disk, with fsync like the server.
dd_mibs() {  # dd's "N bytes ... copied, S s, ..." line -> MiB/s
    awk '/copied/ {for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) s = $(i-1); printf "%.0f", $1 / 1048576 / s}'
}
DD_RAND=$(dd if="$BIG" of="$TMP/dd.out" bs=1M conv=fsync 2>&1 | dd_mibs)
rm -f "$TMP/dd.out"
DD_ZERO=$(dd if=/dev/zero of="$TMP/dd0.out" bs=1M count="$BIG_MIB" conv=fsync 2>&1 | dd_mibs)
rm -f "$TMP/dd0.out"

# 7. Small files: intent -> PUT -> complete, timed with http.client on one connection each way.
SMALL=$(timeout 90 python3 - "$PORT" "$TOKEN" "$SMALL_FILES" <<'PY'
import hashlib, http.client, json, math, os, sys, time, urllib.parse

port, token, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
api = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
auth = {"authorization": f"Bearer {token}"}

def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.read()

def check(what, want, status, body):
    if status != want:
        sys.exit(f"{what} answered {status} (wanted {want}): {body.decode(errors='replace')}")

completes, trips = [], []
for i in range(n):
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(4096 - 8)
    digest = hashlib.sha256(data).hexdigest()
    t0 = time.perf_counter()
    status, body = request(api, "POST", "/v1/uploads", json.dumps({
        "filename": f"small-{i}.png", "content_type": "image/png",
        "size": len(data), "sha256": digest}), {**auth, "content-type": "application/json"})
    check("POST /v1/uploads", 201, status, body)
    grant = json.loads(body)
    url = urllib.parse.urlsplit(grant["url"])
    store = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    status, body = request(store, "PUT", url.path + ("?" + url.query if url.query else ""),
                           data, dict(grant.get("headers", {})))
    store.close()
    check("PUT " + grant["url"], 201, status, body)
    t1 = time.perf_counter()
    status, body = request(api, "POST", f"/v1/uploads/{grant['id']}/complete", None, auth)
    check(f"POST /v1/uploads/{grant['id']}/complete", 200, status, body)
    t2 = time.perf_counter()
    completes.append((t2 - t1) * 1000)
    trips.append((t2 - t0) * 1000)

def pct(xs, p):  # nearest rank
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]

print(f"{pct(completes, 50):.1f} {pct(completes, 99):.1f} {pct(trips, 50):.1f} {pct(trips, 99):.1f}")
PY
) || die "the small-file loop failed (see above)"
read -r C50 C99 T50 T99 <<<"$SMALL"

# 8. The summary.
join() { local IFS=/; echo "$*"; }
cat <<EOF

### Local upload benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $BIG_MIB MiB PNG-prefixed random file, 127.0.0.1)

| metric | value |
|---|---|
| local upload MiB/s (runs $(seq -s/ "$BIG_RUNS")) | $(join "${PUT_MIBS[@]}") (PUT s: $(join "${PUT_SECS[@]}")) |
| dd random MiB/s (bs=1M, conv=fsync) | $DD_RAND |
| dd zero MiB/s (bs=1M, conv=fsync) | $DD_ZERO |
| server RSS idle / max during / after | $(mib "$RSS_IDLE") / $(mib "$RSS_MAX") / $(mib "$RSS_AFTER") MiB |
| complete latency, big file (runs $(seq -s/ "$BIG_RUNS")) | $(join "${COMPLETE_MS[@]}") ms |
| small-file ($SMALL_FILES × 4 KiB) complete p50 / p99 | $C50 / $C99 ms |
| small-file intent→PUT→complete p50 / p99 | $T50 / $T99 ms |
EOF
