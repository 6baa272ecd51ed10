#!/usr/bin/env bash
# One-stop setup: installs what a fresh Debian 12 machine lacks (idempotently), builds
# pyro and its static guest agent, builds/pulls the guest images, and — unless --no-run —
# runs the main job: a real command in a real guest.
#
#   scripts/setup.sh            # set up and run `pyro run debian:12 -- git --version`
#   scripts/setup.sh --no-run   # set up only (used by scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
run_main_job=1
[ "${1:-}" = "--no-run" ] && run_main_job=0

say() { printf '[setup] %s\n' "$*" >&2; }

# 1. System packages (QEMU, image build tools, kernel source, musl, local OCI registry).
packages=(qemu-system-x86 qemu-utils mmdebstrap linux-source musl-tools docker-registry
  bc flex bison libelf-dev libssl-dev xz-utils e2fsprogs build-essential python3 python3-pip)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Rust targets.
if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  say "adding the musl target"
  rustup target add x86_64-unknown-linux-musl
fi

# 3. Build pyro and the static agent.
say "building pyro and pyro-agent (release)"
cargo build --release --quiet -p pyro-agent --target x86_64-unknown-linux-musl
cargo build --release --quiet -p pyro-cli
pyro="$PWD/target/release/pyro"
mkdir -p "$HOME/.local/bin"
ln -sf "$pyro" "$HOME/.local/bin/pyro"

# 4. Firecracker (used where KVM really boots guests; optional elsewhere).
bash scripts/fetch-firecracker.sh || say "Firecracker unavailable; QEMU will be used"

# 5. Guest images (kernel build ~4-5 min once, rootfs ~30 s each; cached afterwards).
for env in debian:12-base debian:12; do
  "$pyro" env pull "$env"
done

if [ "$run_main_job" -eq 1 ]; then
  "$pyro" doctor
  say "main job: pyro run debian:12 -- git --version"
  "$pyro" run debian:12 -- git --version
fi
