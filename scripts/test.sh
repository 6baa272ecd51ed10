#!/usr/bin/env bash
# The whole test suite: sets up what is missing (scripts/setup.sh --no-run), then runs
# every test, including the ones that boot real guests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-run
export PYRO_REQUIRE_FIRECRACKER="${CI:+1}"
# Guest-booting tests share 2 cores; keep parallelism modest and boot timeouts generous.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
export PYRO_BOOT_TIMEOUT_SECONDS="${PYRO_BOOT_TIMEOUT_SECONDS:-180}"
cargo test --release --workspace -- --include-ignored
