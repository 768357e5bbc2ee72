#!/usr/bin/env bash
# Runs the criterion benchmarks (release build), with PostgreSQL for the database ones.
#
#   bash scripts/bench.sh [extra cargo bench args, e.g. -- jwt]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec bash scripts/with-services.sh cargo bench -p tenantkit-auth -p tenantkit-storage "$@"
