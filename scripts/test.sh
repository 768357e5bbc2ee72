#!/usr/bin/env bash
# Runs every test of the workspace against both database backends (SQLite and a throwaway
# PostgreSQL, plus an SMTP sink, on 127.0.0.1, started and stopped by with-services.sh).
#
#   bash scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec bash scripts/with-services.sh cargo test --workspace "$@"
