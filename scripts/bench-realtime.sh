#!/usr/bin/env bash
# A bounded benchmark of the realtime broadcaster of the reference server (in-memory
# backplane, SQLite), all on 127.0.0.1. It needs a release build of the load harness:
#
#   cargo build --release -p tenantkit-load
#   bash scripts/bench-realtime.sh            # BENCH_SOCKETS=10000 BENCH_PER_TENANT=1000
#                                             # BENCH_ROUNDS=20 BENCH_RATE=10
#
# The server runs in the harness's process; the WebSocket clients run in a child process of
# it, so the server's memory is read without theirs. It prints:
#   1. RSS of the server before and after BENCH_SOCKETS idle connections (each subscribed to
#      its tenant's channel; BENCH_PER_TENANT per tenant, so BENCH_PER_TENANT=10000 puts every
#      socket on one channel) and the difference per connection;
#   2. fan-out: BENCH_ROUNDS rounds at BENCH_RATE per second, each one event on every tenant's
#      channel (so every connection receives one event per round): deliveries and the latency
#      from the publish call to the client's read, p50/p99/max;
#   3. publish throughput of 50,000 events with no subscriber.
# Bounded by a 300 s watchdog. Raises the open-file limit (two descriptors per connection).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="target/release/tenantkit-load"
if [[ ! -x "$BIN" ]]; then
    echo "[bench-realtime] $BIN is missing: cargo build --release -p tenantkit-load" >&2
    exit 1
fi
SOCKETS="${BENCH_SOCKETS:-10000}"
ulimit -n "$(( SOCKETS * 2 + 4096 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "[bench-realtime] $SOCKETS sockets, open-file limit $(ulimit -n)" >&2
exec timeout 300 "$BIN" realtime --sockets "$SOCKETS" --per-tenant "${BENCH_PER_TENANT:-1000}" \
    --rounds "${BENCH_ROUNDS:-20}" --rate "${BENCH_RATE:-10}"
