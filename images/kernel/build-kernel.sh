#!/usr/bin/env bash
# Build pyro's minimal x86_64 guest kernel (an uncompressed, stripped ELF
# vmlinux with a PVH entry note) from Debian's linux-source package.
#
# usage: build-kernel.sh CONFIG_FRAGMENT OUTPUT_VMLINUX WORK_DIR
#
# This script is embedded into a Rust binary (include_str!) and run as
#   bash -c "$script" build-kernel CONFIG_FRAGMENT OUTPUT_VMLINUX WORK_DIR
# so it must not depend on its own location on disk.
#
# Needs: /usr/src/linux-source-*.tar.xz (apt: linux-source), plus
# build-essential bc flex bison libelf-dev libssl-dev.
set -euo pipefail

log() { printf '[kernel] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$#" -ne 3 ]; then
    die "usage: build-kernel.sh CONFIG_FRAGMENT OUTPUT_VMLINUX WORK_DIR"
fi

fragment=$1
output=$2
work=$3

[ -f "$fragment" ] || die "config fragment not found: $fragment"
[ "$(uname -m)" = x86_64 ] || die "only x86_64 hosts are supported (no cross build), host is $(uname -m)"
for tool in make gcc tar xz bc flex bison strip; do
    command -v "$tool" >/dev/null 2>&1 || die "missing build tool: $tool (apt-get install build-essential bc flex bison libelf-dev libssl-dev xz-utils)"
done

mkdir -p "$work" "$(dirname -- "$output")"
fragment=$(realpath -- "$fragment")
work=$(realpath -- "$work")
output=$(realpath -m -- "$output")

# One build per WORK_DIR at a time.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$work/.lock"
    if ! flock -n 9; then
        log "waiting for another build in $work"
        flock 9
    fi
fi

start=$(date +%s)
buildlog="$work/build.log"
: >"$buildlog"
tmp_out=""
cleanup() {
    if [ -n "$tmp_out" ]; then rm -f -- "$tmp_out"; fi
}
trap cleanup EXIT

# Run a noisy command with its output appended to the log; on failure show
# the log tail on stderr and stop.
run_logged() {
    local what=$1
    shift
    printf '\n==== %s: %s\n' "$what" "$*" >>"$buildlog"
    if ! "$@" >>"$buildlog" 2>&1; then
        log "error: $what failed; last lines of $buildlog:"
        tail -n 60 "$buildlog" | sed 's/^/[kernel]   | /' >&2
        # With -j the first real error is often far above the tail.
        if grep -qE '(error|Error [0-9]+|undefined reference)' "$buildlog"; then
            log "error lines in $buildlog:"
            grep -nE '(: error|: fatal error|\*\*\* |undefined reference|cc1: error)' "$buildlog" |
                head -n 20 | sed 's/^/[kernel]   ! /' >&2
        fi
        exit 1
    fi
}

# --- 1. kernel source -------------------------------------------------------
tarball=$(find /usr/src -maxdepth 1 -name "linux-source-*.tar.xz" 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$tarball" ] || die "no /usr/src/linux-source-*.tar.xz (apt-get install linux-source)"
srcname=$(basename -- "$tarball" .tar.xz)
src="$work/$srcname"
if [ -f "$src/.pyro-extracted" ]; then
    log "reusing kernel source $src"
else
    log "extracting $tarball into $src"
    rm -rf -- "$src" "$src.partial"
    mkdir -p -- "$src.partial"
    run_logged "extract" tar -xJf "$tarball" -C "$src.partial" --strip-components=1
    touch "$src.partial/.pyro-extracted"
    mv -- "$src.partial" "$src"
fi

# Out-of-tree build directory, so the extracted source stays pristine.
build="$work/build-x86_64"
mkdir -p -- "$build"
kmake=(make -C "$src" O="$build" ARCH=x86_64)

# --- 2. configuration -------------------------------------------------------
log "configuring: allnoconfig + $fragment"
run_logged "allnoconfig" "${kmake[@]}" KCONFIG_ALLCONFIG="$fragment" allnoconfig

# Every assignment in the fragment must survive Kconfig's dependency
# resolution: CONFIG_X=value verbatim, "# CONFIG_X is not set" not enabled.
missing=()
while IFS= read -r line || [ -n "$line" ]; do
    line=${line%"${line##*[![:space:]]}"}  # drop trailing whitespace
    case "$line" in
        CONFIG_*=*)
            grep -qxF -- "$line" "$build/.config" || {
                sym=${line%%=*}
                got=$(grep -E "^(# )?${sym}[= ]" "$build/.config" || true)
                missing+=("$line (got: ${got:-absent, dependencies unmet or unknown symbol})")
            }
            ;;
        "# CONFIG_"*" is not set")
            sym=${line#\# }
            sym=${sym%% *}
            if grep -qE "^$sym=" "$build/.config"; then
                missing+=("$line (got: $(grep -E "^$sym=" "$build/.config"), forced on by another option)")
            fi
            ;;
    esac
done <"$fragment"
if [ "${#missing[@]}" -gt 0 ]; then
    log "error: ${#missing[@]} option(s) of $fragment did not end up in $build/.config:"
    for m in "${missing[@]}"; do log "  $m"; done
    exit 1
fi
log "config verified: every fragment option is set as requested"

# --- 3. build -----------------------------------------------------------------
jobs=$(nproc 2>/dev/null || echo 1)
log "building vmlinux with make -j$jobs (log: $buildlog)"
run_logged "make vmlinux" "${kmake[@]}" -j"$jobs" vmlinux

if grep -qx 'CONFIG_PVH=y' "$build/.config" && command -v readelf >/dev/null 2>&1; then
    # XEN_ELFNOTE_PHYS32_ENTRY (type 0x12) is the PVH entry point used by
    # QEMU -M microvm and Firecracker.
    readelf -n "$build/vmlinux" | grep -qiE 'Xen.*(0x00000012|PHYS32_ENTRY)' ||
        die "built vmlinux has no PVH (Xen PHYS32_ENTRY) ELF note"
fi

# --- 4. strip + atomic install -------------------------------------------------
tmp_out="$output.tmp.$$"
strip -o "$tmp_out" "$build/vmlinux"
chmod 0644 "$tmp_out"
mv -f -- "$tmp_out" "$output"
tmp_out=""

size=$(stat -c %s "$output")
log "wrote $output ($((size / 1024)) KiB) in $(( $(date +%s) - start ))s"
