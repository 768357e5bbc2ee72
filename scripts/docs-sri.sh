#!/usr/bin/env bash
# Prints the jsDelivr URL and Subresource Integrity hash of @scalar/api-reference's browser
# build at VERSION (default: the newest), computed from the npm tarball itself, for
# examples/server/src/routes/docs.rs (DOCS_SCRIPT_URL, DOCS_SCRIPT_INTEGRITY).
set -euo pipefail
version="${1:-$(npm view @scalar/api-reference version)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "@scalar/api-reference@$version" >/dev/null && tar xzf ./*.tgz)
file="$work/package/dist/browser/standalone.js"
echo "https://cdn.jsdelivr.net/npm/@scalar/api-reference@$version/dist/browser/standalone.js"
echo "sha384-$(openssl dgst -sha384 -binary "$file" | openssl base64 -A)"
