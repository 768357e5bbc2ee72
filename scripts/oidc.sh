# shellcheck shell=bash
# A real OpenID Connect provider for the SSO tests: npm's oidc-provider (pinned in
# scripts/oidc-provider/package.json and its lock) run by scripts/oidc-provider/provider.mjs on
# Node.js >= 22.12 (the machine's `node` when new enough, else npm's node-linux-<arch> package at
# OIDC_NODE_VERSION, unpacked under the target folder). Sourced by scripts/with-services.sh, whose
# `log` and `free_port` it uses (with fallbacks when sourced alone):
#
#   source scripts/oidc.sh
#   start_oidc    # exports TENANTKIT_TEST_OIDC_ISSUER (http://127.0.0.1:PORT), TENANTKIT_TEST_OIDC_PID,
#                 # TENANTKIT_TEST_OIDC_NODE and TENANTKIT_TEST_OIDC_SCRIPT (to start another instance)
#   stop_oidc     # from the cleanup trap
#
# Clients: OIDC_CLIENTS (a JSON array) at start, or POST $TENANTKIT_TEST_OIDC_ISSUER/test/clients
# at run time; see scripts/oidc-provider/README.md for the test endpoints.

OIDC_NODE_VERSION="22.23.5"
OIDC_PID=""
OIDC_TMP=""
OIDC_NODE=""
OIDC_DIR=""

declare -F log >/dev/null || log() { printf '[oidc.sh] %s\n' "$*" >&2; }

# True when the given node runs and is >= 22.12.
oidc_node_ok() {
    "$1" -e 'const [a, b] = process.versions.node.split(".").map(Number);
             process.exit(a > 22 || (a === 22 && b >= 12) ? 0 : 1)' >/dev/null 2>&1
}

oidc_need_npm() {
    command -v npm >/dev/null 2>&1 && return 0
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "npm not found; installing Debian's npm package"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null || return 1
        return 0
    fi
    log "npm not found"
    return 1
}

# Sets OIDC_NODE and OIDC_DIR (the provider's folder with its node_modules).
oidc_install() {
    local target src arch node_dir stage tgz stamp
    target="${CARGO_TARGET_DIR:-$PWD/target}"
    src="scripts/oidc-provider"
    [[ -f "$src/package-lock.json" ]] || src="$(dirname "${BASH_SOURCE[0]}")/oidc-provider"

    # Node.js.
    if command -v node >/dev/null 2>&1 && oidc_node_ok node; then
        OIDC_NODE="$(command -v node)"
    else
        node_dir="$target/oidc-node"
        if ! { [[ -x "$node_dir/bin/node" ]] \
            && [[ "$("$node_dir/bin/node" --version 2>/dev/null)" == "v$OIDC_NODE_VERSION" ]]; }; then
            case "$(uname -m)" in
                x86_64) arch=x64 ;;
                aarch64 | arm64) arch=arm64 ;;
                *) log "no node-linux package for $(uname -m)"; return 1 ;;
            esac
            oidc_need_npm || return 1
            log "installing Node.js $OIDC_NODE_VERSION (npm's node-linux-$arch) into $node_dir"
            stage="$(mktemp -d "${TMPDIR:-/tmp}/tenantkit-oidc-node.XXXXXX")"
            if ! (cd "$stage" && npm pack --silent --no-fund --no-audit \
                "node-linux-$arch@$OIDC_NODE_VERSION" >/dev/null); then
                rm -rf "$stage"
                return 1
            fi
            tgz="$(ls "$stage"/node-linux-"$arch"-*.tgz 2>/dev/null | head -n 1)"
            mkdir -p "$stage/unpacked"
            if [[ -z "$tgz" ]] || ! tar -xzf "$tgz" -C "$stage/unpacked" --strip-components=1 \
                package/bin/node package/LICENSE; then
                rm -rf "$stage"
                return 1
            fi
            rm -rf "$node_dir"
            mkdir -p "$target"
            mv "$stage/unpacked" "$node_dir"
            rm -rf "$stage"
        fi
        OIDC_NODE="$node_dir/bin/node"
        oidc_node_ok "$OIDC_NODE" || { log "$OIDC_NODE does not run"; return 1; }
    fi

    # The provider's dependencies, exactly as locked, outside the source tree.
    OIDC_DIR="$target/oidc-provider"
    stamp="$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)"
    if [[ ! -f "$OIDC_DIR/node_modules/oidc-provider/package.json" \
        || "$(cat "$OIDC_DIR/.installed" 2>/dev/null)" != "$stamp" ]]; then
        oidc_need_npm || return 1
        log "installing the OpenID Connect provider's npm dependencies into $OIDC_DIR"
        mkdir -p "$OIDC_DIR"
        rm -f "$OIDC_DIR/.installed"
        cp "$src/package.json" "$src/package-lock.json" "$OIDC_DIR/"
        (cd "$OIDC_DIR" && npm ci --silent --omit=dev --ignore-scripts --no-audit --no-fund \
            --engine-strict=false >/dev/null) || return 1
        printf '%s\n' "$stamp" >"$OIDC_DIR/.installed"
    fi
    # Always the current script (ESM resolves `oidc-provider` from the script's own folder).
    cp "$src/provider.mjs" "$OIDC_DIR/provider.mjs"
    export TENANTKIT_TEST_OIDC_NODE="$OIDC_NODE"
    export TENANTKIT_TEST_OIDC_SCRIPT="$OIDC_DIR/provider.mjs"
}

start_oidc() {
    oidc_install || return 1
    local attempt line
    for attempt in 1 2 3; do
        OIDC_TMP="$(mktemp -d "${TMPDIR:-/tmp}/tenantkit-oidc.XXXXXX")"
        # Port 0: the provider binds a free port itself and names it in its `ready` line, so
        # there is no window for another process to take it.
        OIDC_PORT=0 OIDC_CLIENTS="${OIDC_CLIENTS:-[]}" "$OIDC_NODE" "$OIDC_DIR/provider.mjs" \
            >"$OIDC_TMP/stdout.log" 2>"$OIDC_TMP/stderr.log" </dev/null &
        OIDC_PID=$!
        for _ in $(seq 1 300); do
            line="$(grep -m 1 '^ready http' "$OIDC_TMP/stdout.log" 2>/dev/null || true)"
            if [[ -n "$line" ]]; then
                export TENANTKIT_TEST_OIDC_ISSUER="${line#ready }"
                export TENANTKIT_TEST_OIDC_PID="$OIDC_PID"
                log "OpenID Connect provider (oidc-provider $(oidc_provider_version), Node.js $("$OIDC_NODE" --version)) at $TENANTKIT_TEST_OIDC_ISSUER"
                return 0
            fi
            kill -0 "$OIDC_PID" 2>/dev/null || break
            sleep 0.1
        done
        cat "$OIDC_TMP/stderr.log" >&2 || true
        stop_oidc
        log "OpenID Connect provider start-up attempt $attempt failed"
    done
    return 1
}

oidc_provider_version() {
    "$OIDC_NODE" -p 'require(process.argv[1]).version' \
        "$OIDC_DIR/node_modules/oidc-provider/package.json" 2>/dev/null || echo '?'
}

stop_oidc() {
    if [[ -n "$OIDC_PID" ]]; then
        kill "$OIDC_PID" >/dev/null 2>&1 || true
        wait "$OIDC_PID" 2>/dev/null || true
    fi
    [[ -n "$OIDC_TMP" ]] && rm -rf "$OIDC_TMP"
    OIDC_PID=""
    OIDC_TMP=""
    unset TENANTKIT_TEST_OIDC_ISSUER TENANTKIT_TEST_OIDC_PID
    return 0
}
