#!/usr/bin/env bash
# The feature matrix of the library crates (tenantkit-core, -auth, -storage, -billing): what a
# user who enables ONE database backend compiles, and the optional features on top of it.
#
#   bash scripts/features.sh      # no services needed; a few minutes from a cold target folder
#
# What it proves, and what it cannot:
#
# - Libraries, one backend each (`cargo clippy --lib -- -D warnings`: a type check like `cargo
#   check`, with warnings as errors, so code a feature set leaves unused fails too, as in the
#   workspace's clippy step; dependencies are checked once, without lints): the four crates with
#   `--no-default-features --features sqlite`, then `--features postgres` (their defaults off,
#   so storage's `local` too), then each backend with every optional feature (`axum`,
#   `openapi`, `smtp`, `local`, `s3`, `checkout`, on each crate that has it). `--lib` builds no dev-dependencies, so the graph is exactly a
#   user's: before building, the script asserts with `cargo tree` that the other backend's sqlx
#   driver is not in it (a feature leak would make the one-backend check a two-backend one).
#   Checking the four crates in one command compiles the shared dependencies once per
#   feature set.
# - Smaller sets: core without a backend, `--no-default-features` (ids, Principal, problems)
#   and `--no-default-features --features axum` (the extractors over that), and auth's
#   `--no-default-features --features axum`, whose backend must come from the user; core and
#   auth with `postgres,axum` (the README's dependency example: no `openapi`).
# - Tests: each crate's tests and benches, lints included, with one backend each
#   (`cargo clippy --tests --benches --no-default-features --features sqlite`, then `postgres`):
#   the dev-dependencies name no backend (tenantkit-core's `testing` fixtures and
#   `backend_tests!` follow the backends core is compiled with), so a one-backend test build
#   exists and compiles without the other driver. scripts/test.sh runs those builds' tests.
#
# Every step shares the one target folder ($CARGO_TARGET_DIR or ./target); each feature set is
# its own set of artifacts there, rebuilt only when the code changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[features.sh] %s\n' "$*" >&2; }

if [[ $# -gt 0 ]]; then
    log "no arguments expected, got: $*"
    exit 2
fi

CRATES=(-p tenantkit-core -p tenantkit-auth -p tenantkit-storage -p tenantkit-billing -p tenantkit-realtime)
# Every optional feature, for each crate that has it (a plain feature name given with several
# `-p` applies to each selected crate that declares it; cargo tree does not honour the
# `crate/feature` form for workspace members).
OPTIONAL="axum,openapi,smtp,local,s3,checkout,redis,sso"

step() {
    local started=$SECONDS
    log "$*"
    "$@"
    log "  done in $((SECONDS - started)) s"
}

# The libraries of the selected crates (`-p ...`) with the given features, warnings as errors.
lint() {
    cargo clippy "$@" --lib -- -D warnings
}

# The library graph of `features` must not contain the sqlx driver of the other backend.
assert_one_backend() {
    local features=$1 other=$2 out
    if out="$(cargo tree "${CRATES[@]}" --no-default-features --features "$features" \
        -e normal,build -i "sqlx-$other" 2>/dev/null)" && [[ -n "$out" ]]; then
        log "the library graph with --features $features contains sqlx-$other:"
        printf '%s\n' "$out" >&2
        exit 1
    fi
}

for backend in sqlite postgres; do
    other=postgres
    [[ $backend == postgres ]] && other=sqlite
    assert_one_backend "$backend" "$other"
    assert_one_backend "$backend,$OPTIONAL" "$other"
    step lint "${CRATES[@]}" --no-default-features --features "$backend"
    step lint "${CRATES[@]}" --no-default-features --features "$backend,$OPTIONAL"
done

step lint -p tenantkit-core --no-default-features
step lint -p tenantkit-core --no-default-features --features axum
step lint -p tenantkit-auth --no-default-features --features axum
# The README's dependency example: one backend and axum, without openapi.
step lint -p tenantkit-core -p tenantkit-auth --no-default-features --features postgres,axum

for backend in sqlite postgres; do
    step cargo clippy "${CRATES[@]}" --tests --benches --no-default-features --features "$backend" \
        -- -D warnings
done
log "feature matrix passed"
