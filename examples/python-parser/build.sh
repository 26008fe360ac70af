#!/usr/bin/env bash
# Builds the `bracketed` parser into a WebAssembly component against selfmon's WIT contract.
#
#   python3 -m venv venv && venv/bin/pip install -r requirements.txt
#   ./build.sh [OUTPUT.wasm]        (componentize-py from ./venv, or COMPONENTIZE_PY=/path/to/componentize-py)
set -euo pipefail
output=$(realpath -m "${1:-$(dirname "$0")/bracketed.wasm}")
cd "$(dirname "$0")"
componentize=${COMPONENTIZE_PY:-venv/bin/componentize-py}
"$componentize" --wit-path ../../sdk/wit --world parser componentize app --output "$output"
