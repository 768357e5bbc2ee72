#!/usr/bin/env bash
# Runs every test of the workspace against both database backends (SQLite and a throwaway
# PostgreSQL on 127.0.0.1, started and stopped by with-postgres.sh).
#
#   bash scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec bash scripts/with-postgres.sh cargo test --workspace "$@"
