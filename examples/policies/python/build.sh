#!/usr/bin/env bash
# Builds the Python example into a component: bash build.sh OUTPUT.wasm
# componentize-py (pinned in requirements.txt) is installed into a virtualenv under the
# repository's target/ directory on first use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:?usage: build.sh OUTPUT.wasm}")
venv="$here/../../../target/componentize-py-venv"
if [ ! -x "$venv/bin/componentize-py" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
mkdir -p "$(dirname "$out")"
cd "$here"
"$venv/bin/componentize-py" -d wit -w policy componentize app -o "$out"
