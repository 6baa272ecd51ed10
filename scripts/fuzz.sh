#!/usr/bin/env bash
# Runs every fuzz harness: the #[ignore]d tests named like `fuzz` (frame decoder, patch
# parser, offline ext4 reader, and any other, e.g. the tar reader's), in release.
#   PYRO_FUZZ_CASES  cases per harness (default 1000000)
#   PYRO_FUZZ_SEED   base seed (default: from the clock; each harness prints its seed)
#   PYRO_FUZZ_CASE   with PYRO_FUZZ_SEED, replay one case of a failure report
# Each harness fails on the first panic (naming the seed and case that replay it) and
# aborts if one case runs past its watchdog limit. Needs e2fsprogs (mkfs.ext4, debugfs,
# e2fsck) for the ext4 harness; scripts/setup.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYRO_FUZZ_CASES="${PYRO_FUZZ_CASES:-1000000}"
# One harness at a time, so that each one's figures are its own.
exec cargo test --release --workspace fuzz -- --ignored --nocapture --test-threads=1 "$@"
