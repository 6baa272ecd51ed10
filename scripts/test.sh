#!/usr/bin/env bash
# The whole test suite: sets up what is missing (scripts/setup.sh --no-run), then runs
# every test, including the ones that boot real guests, and ends with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-run
# Lints are part of the suite: unformatted code, any clippy warning or a module import
# cycle fails it.
cargo fmt --all --check
python3 scripts/check-module-cycles.py
cargo clippy --quiet --workspace --all-targets -- -D warnings
# The SDK tests install the wheel into a fresh venv, as a user would.
bash scripts/build-wheel.sh >/dev/null
export PYRO_REQUIRE_FIRECRACKER="${CI:+1}"
# Guest-booting tests share 2 cores; keep parallelism modest and boot timeouts generous.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
export PYRO_BOOT_TIMEOUT_SECONDS="${PYRO_BOOT_TIMEOUT_SECONDS:-180}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --workspace -- --include-ignored 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
