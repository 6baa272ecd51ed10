#!/usr/bin/env bash
# Installs the MCP test clients, once, under pyro's cache dir: a Python venv with the
# real `mcp` client package (PyPI) and the MCP Inspector CLI (npm). Prints two lines on
# stdout: the venv's python, and the inspector's binary (empty when npm could not install
# it). A second run only checks that both are there.
#
#   scripts/mcp-test-env.sh            # -> <cache>/mcp-test/venv/bin/python
#   PYRO_MCP_TEST_ENV=/some/dir ...     # install somewhere else
set -euo pipefail
cache="${PYRO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pyro}"
root="${PYRO_MCP_TEST_ENV:-$cache/mcp-test}"
venv="$root/venv"
inspector="$root/inspector"
mkdir -p "$root"
say() { printf '[mcp-test-env] %s\n' "$*" >&2; }

# One installer at a time (tests may start in parallel).
exec 9>"$root/.lock"
flock 9

if ! "$venv/bin/python" -c 'import mcp' 2>/dev/null; then
  say "creating $venv with the mcp client package"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'mcp>=1.20' pytest >&2
fi

if command -v npm >/dev/null 2>&1 && [ ! -x "$inspector/node_modules/.bin/mcp-inspector" ] && [ ! -e "$inspector/unavailable" ]; then
  say "installing the MCP Inspector CLI under $inspector"
  mkdir -p "$inspector"
  if ! npm install --silent --no-audit --no-fund --prefix "$inspector" @modelcontextprotocol/inspector >&2; then
    say "the MCP Inspector could not be installed; its check will be skipped"
    touch "$inspector/unavailable"
  fi
fi
echo "$venv/bin/python"
if [ -x "$inspector/node_modules/.bin/mcp-inspector" ]; then echo "$inspector/node_modules/.bin/mcp-inspector"; else echo; fi
