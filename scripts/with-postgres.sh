#!/usr/bin/env bash
# Kept for old instructions: the same as with-services.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/with-services.sh" "$@"
