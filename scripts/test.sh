#!/usr/bin/env bash
# Runs every test of the workspace against both database backends (SQLite and a throwaway
# PostgreSQL, plus an SMTP sink and SeaweedFS, on 127.0.0.1, started and stopped by
# with-services.sh).
#
#   bash scripts/test.sh                  # everything, as CI runs it
#   bash scripts/test.sh [cargo test args] # one `cargo test --workspace ARGS` (e.g. -p tenantkit-core)
#
# Without arguments:
# 1. the binaries, examples and end-to-end tests: `cargo test --workspace` without the four
#    library crates (every feature the workspace enables, both backends);
# 2. each library crate (tenantkit-core, -auth, -storage, -billing) built and tested the way a
#    one-backend user has it: `--no-default-features --features sqlite`, then
#    `--features postgres` (their dev-dependencies name no backend, so the other backend's
#    driver is not even compiled, and `backend_tests!` generates only the compiled backend's
#    tests). Each backend's database tests thus run once, in a build that has only it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $# -gt 0 ]]; then
    exec bash scripts/with-services.sh cargo test --workspace "$@"
fi

exec bash scripts/with-services.sh bash -c '
set -euo pipefail
libs=(-p tenantkit-core -p tenantkit-auth -p tenantkit-storage -p tenantkit-billing -p tenantkit-realtime)
exclude=(--exclude tenantkit-core --exclude tenantkit-auth --exclude tenantkit-storage --exclude tenantkit-billing --exclude tenantkit-realtime)
echo "[test.sh] cargo test --workspace ${exclude[*]}" >&2
cargo test --workspace "${exclude[@]}"
for backend in sqlite postgres; do
    echo "[test.sh] cargo test ${libs[*]} --no-default-features --features $backend" >&2
    cargo test "${libs[@]}" --no-default-features --features "$backend"
done
'
