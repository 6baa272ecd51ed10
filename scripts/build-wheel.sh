#!/usr/bin/env bash
# Builds the pyro-mcp wheel into dist/: the `pyro` binary (maturin `bindings = "bin"`),
# the static guest agent it bakes into images (installed next to `pyro`), and the
# pure-Python `pyro_mcp` SDK. maturin comes from PyPI into a venv under pyro's cache.
# `pyro` is linked statically against musl, so the wheel needs no particular libc and is
# tagged for both: manylinux2014 (glibc 2.17 and later) and musllinux_1_2.
#
#   scripts/build-wheel.sh    # prints the wheel's path on stdout
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[wheel] %s\n' "$*" >&2; }

cache="${PYRO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pyro}"
tools="$cache/wheel-tools"
maturin_spec="maturin>=1.9,<2"
if [ ! -x "$tools/bin/maturin" ]; then
  say "installing $maturin_spec into $tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check "$maturin_spec"
fi

target="${CARGO_TARGET_DIR:-target}"
say "building the static guest agent"
cargo build --release --quiet -p pyro-agent --target x86_64-unknown-linux-musl
# Files under the data directory's scripts/ land beside `pyro` in the venv's bin/,
# where pyro looks for its agent first.
data=target/wheel-data
rm -rf "$data"
mkdir -p "$data/scripts"
cp "$target/x86_64-unknown-linux-musl/release/pyro-agent" "$data/scripts/pyro-agent"

say "building the wheel"
rm -rf dist
"$tools/bin/maturin" build --release --quiet --out dist \
  --target x86_64-unknown-linux-musl --compatibility manylinux2014 musllinux_1_2 >&2
wheel=$(ls dist/*.whl)
say "built $wheel"
echo "$PWD/$wheel"
