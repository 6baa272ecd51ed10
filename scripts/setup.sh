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
started=$(date +%s)

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
apt_install() {
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
installed_version() { { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null || true; } | sed -n 's/^install ok installed //p'; }

# 1. System packages. QEMU is one consistent set: every qemu-* part at the version the
#    system emulator has, installed in one transaction. A newer stray part (e.g.
#    qemu-utils from backports) would otherwise be removed by apt when the emulator
#    comes in, silently taking qemu-img with it.
#    (qemu-system-data is arch-independent and versioned apart; apt takes the matching one.)
qemu_set=(qemu-system-x86 qemu-system-common qemu-utils qemu-block-extra)
packages=(mmdebstrap linux-source musl-tools docker-registry
  bc flex bison libelf-dev libssl-dev xz-utils e2fsprogs build-essential python3 python3-pip python3-venv)
missing=()
for p in "${packages[@]}"; do
  [ -n "$(installed_version "$p")" ] || missing+=("$p")
done
# The QEMU set is consistent when every part is installed, all at one version.
qemu_consistent=1
first=$(installed_version "${qemu_set[0]}")
for p in "${qemu_set[@]}"; do
  v=$(installed_version "$p")
  { [ -n "$v" ] && [ "$v" = "$first" ]; } || qemu_consistent=0
done
if [ "${#missing[@]}" -gt 0 ] || [ "$qemu_consistent" -eq 0 ]; then
  "${sudo_cmd[@]}" apt-get update -qq
  qemu_wanted=()
  if [ "$qemu_consistent" -eq 0 ]; then
    qemu_version=$(apt-cache policy qemu-system-x86 | sed -n 's/^ *Candidate: //p')
    [ -n "$qemu_version" ] && [ "$qemu_version" != "(none)" ] || die "apt has no qemu-system-x86 package"
    for p in "${qemu_set[@]}"; do qemu_wanted+=("$p=$qemu_version"); done
  fi
  say "installing apt packages: ${missing[*]} ${qemu_wanted[*]}"
  apt_install --allow-downgrades "${missing[@]}" "${qemu_wanted[@]}"
fi

# Every command the project runs, checked after installing: stop with one line naming
# what is missing rather than failing half-way through an image build.
need=(qemu-system-x86_64 qemu-img mmdebstrap mkfs.ext4 e2fsck musl-gcc make gcc bc flex bison
  xz tar strip python3 flock)
absent=()
for tool in "${need[@]}"; do command -v "$tool" >/dev/null 2>&1 || absent+=("$tool"); done
ls /usr/src/linux-source-*.tar.xz >/dev/null 2>&1 || absent+=("/usr/src/linux-source-*.tar.xz")
[ "${#absent[@]}" -eq 0 ] || die "missing after install: ${absent[*]}"

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

# 5. Guest images, both at once (each pull bootstraps its rootfs while the shared
#    kernel compiles once; all cached afterwards).
pids=()
for env in debian:12-base debian:12; do
  "$pyro" env pull "$env" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" -eq 0 ] || die "an image build failed (see the lines above)"
# 6. MCP test clients (the Python `mcp` package and the MCP Inspector), once, in the cache.
bash scripts/mcp-test-env.sh >/dev/null
say "ready after $(( $(date +%s) - started )) s"

if [ "$run_main_job" -eq 1 ]; then
  "$pyro" doctor
  say "main job: pyro run debian:12 -- git --version"
  "$pyro" run debian:12 -- git --version
fi
