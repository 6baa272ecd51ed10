#!/usr/bin/env bash
# Runs benches/faces_bench.py (SDK, CLI and MCP per-call overhead) in a venv under pyro's
# cache with the wheel from dist/ and the `mcp` client package. Build the wheel first
# (scripts/build-wheel.sh); needs the guest images (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${PYRO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pyro}"
venv="$cache/bench-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps dist/pyro_mcp-*.whl
"$venv/bin/python" -c 'import mcp' 2>/dev/null || "$venv/bin/pip" install --quiet --disable-pip-version-check 'mcp>=1.20'
exec "$venv/bin/python" benches/faces_bench.py
