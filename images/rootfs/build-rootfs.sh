#!/usr/bin/env bash
# Build a pyro guest root filesystem: a small Debian 12 (bookworm) tree made
# with mmdebstrap, plus pyro-agent as PID 1, packed into an ext4 image.
#
# usage: build-rootfs.sh OUTPUT_EXT4 AGENT_BINARY WORK_DIR PACKAGE...
#   e.g. build-rootfs.sh debian_12.ext4 ./pyro-agent /tmp/work bash coreutils git
#
# This script is embedded into a Rust binary (include_str!) and run as
#   bash -c "$script" build-rootfs OUTPUT_EXT4 AGENT_BINARY WORK_DIR PKG...
# so it must not depend on its own location on disk.
#
# Needs root, mmdebstrap, e2fsprogs (mkfs.ext4 with -d, e2fsck).
#
# Mirror: taken from the host's apt configuration
# (/etc/apt/sources.list.d/debian.sources, then /etc/apt/sources.list): the
# URI of the first plain release suite is used for bookworm (and for
# bookworm-updates if the host has an -updates suite), the URI of the first
# *-security suite for bookworm-security. Default: http://deb.debian.org/debian
# bookworm main. PYRO_ROOTFS_MIRROR / PYRO_ROOTFS_SECURITY_MIRROR override
# the host configuration.
#
# The ext4 image avoids inline_data, large_dir and metadata_csum_seed so
# that pyro's pure-Rust ext4 reader can read it offline.
set -euo pipefail

log() { printf '[rootfs] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$#" -lt 4 ]; then
    die "usage: build-rootfs.sh OUTPUT_EXT4 AGENT_BINARY WORK_DIR PACKAGE..."
fi

output=$1
agent=$2
work=$3
shift 3
packages=("$@")

suite=bookworm

[ "$(id -u)" -eq 0 ] || die "must run as root (ownership in the image must be real)"
for tool in mmdebstrap mkfs.ext4 e2fsck du realpath; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool (apt-get install mmdebstrap e2fsprogs)"
done
[ -f "$agent" ] || die "agent binary not found: $agent"
[ -n "$work" ] || die "empty WORK_DIR"
for p in "${packages[@]}"; do
    [[ "$p" =~ ^[a-z0-9][a-z0-9+.-]+$ ]] || die "bad package name: '$p'"
done

mkdir -p -- "$work" "$(dirname -- "$output")"
agent=$(realpath -- "$agent")
work=$(realpath -- "$work")
output=$(realpath -m -- "$output")
[ "$work" != / ] || die "WORK_DIR must not be /"

# One build per WORK_DIR at a time.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$work/.lock"
    if ! flock -n 9; then
        log "waiting for another build in $work"
        flock 9
    fi
fi

tree="$work/tree"
bootlog="$work/mmdebstrap.log"
tmp_img=""
in_bootstrap=0
mm_pid=""

# Remove the tree, first detaching anything still mounted below it (mmdebstrap
# mounts /proc, /sys, /dev... while it runs) so rm can never reach the host.
remove_tree() {
    [ -e "$tree" ] || return 0
    local mnt
    # mountinfo field 5 is the mount point (octal-escaped); deepest first.
    while read -r mnt; do
        mnt=$(printf '%b' "$mnt")
        umount -l -- "$mnt" 2>/dev/null || true
    done < <(awk -v t="$tree" '$5 == t || index($5, t "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    rm -rf --one-file-system -- "$tree"
}

cleanup() {
    local rc=$?
    trap - EXIT
    if [ -n "$mm_pid" ]; then
        # Interrupted: stop mmdebstrap and let it unwind before removing.
        kill -TERM "$mm_pid" 2>/dev/null || true
        wait "$mm_pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ "$in_bootstrap" -eq 1 ] && [ -s "$bootlog" ]; then
        log "mmdebstrap failed; last lines of $bootlog:"
        tail -n 40 "$bootlog" | sed 's/^/[rootfs]   | /' >&2
    fi
    if [ -n "$tmp_img" ]; then rm -f -- "$tmp_img"; fi
    remove_tree || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# --- 1. mirrors -------------------------------------------------------------
# Print "URI SUITE" pairs of the enabled deb entries of a deb822 .sources file.
deb822_pairs() {
    awk '
        function flush(   n, m, i, j, U, S) {
            if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled !~ /^(no|false)$/) {
                n = split(uris, U, /[ \t]+/); m = split(suites, S, /[ \t]+/)
                for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
                    if (U[i] != "" && S[j] != "") print U[i], S[j]
            }
            types = uris = suites = key = ""; enabled = "yes"
        }
        BEGIN { enabled = "yes" }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ {
            if (key == "uris") uris = uris " " $0
            else if (key == "suites") suites = suites " " $0
            next
        }
        {
            c = index($0, ":"); if (c == 0) next
            key = tolower(substr($0, 1, c - 1)); v = substr($0, c + 1)
            gsub(/^[ \t]+|[ \t]+$/, "", v)
            if (key == "types") types = v
            else if (key == "uris") uris = v
            else if (key == "suites") suites = v
            else if (key == "enabled") enabled = tolower(v)
        }
        END { flush() }
    ' "$1"
}

# Print "URI SUITE" pairs of the deb lines of a one-line-style sources.list.
oneline_pairs() {
    awk '
        $1 == "deb" {
            i = 2
            if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if (i + 1 <= NF) print $i, $(i + 1)
        }
    ' "$1"
}

main_uri=""
sec_uri=""
have_updates=0
if [ -n "${PYRO_ROOTFS_MIRROR:-}" ]; then
    main_uri=$PYRO_ROOTFS_MIRROR
    have_updates=1
    sec_uri=${PYRO_ROOTFS_SECURITY_MIRROR:-}
    mirror_origin="PYRO_ROOTFS_MIRROR"
else
    mirror_origin="default"
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        [ -r "$f" ] || continue
        case $f in
            *.sources) pairs=$(deb822_pairs "$f") ;;
            *) pairs=$(oneline_pairs "$f") ;;
        esac
        while read -r uri s; do
            [ -n "$uri" ] || continue
            [[ "$uri" =~ ^(https?|file):/ ]] || continue
            uri=${uri%/}
            case $s in
                */updates | *-security)
                    [ -n "$sec_uri" ] || sec_uri=$uri ;;
                *-updates)
                    have_updates=1 ;;
                *-*) ;; # backports, proposed-updates, ...: not used
                *)
                    [ -n "$main_uri" ] || main_uri=$uri ;;
            esac
        done <<<"$pairs"
        if [ -n "$main_uri" ]; then
            mirror_origin=$f
            break
        fi
        sec_uri=""
        have_updates=0
    done
    if [ -z "$main_uri" ]; then
        main_uri=http://deb.debian.org/debian
        sec_uri=""
        have_updates=0
    fi
fi
main_uri=${main_uri%/}
sec_uri=${sec_uri%/}

sources=("deb $main_uri $suite main")
if [ "$have_updates" -eq 1 ]; then sources+=("deb $main_uri $suite-updates main"); fi
if [ -n "$sec_uri" ]; then sources+=("deb $sec_uri $suite-security main"); fi

# --- 2. package set ---------------------------------------------------------
include=("${packages[@]}")
for p in "${packages[@]}"; do
    if [ "$p" = git ]; then
        # git's https transport (libcurl-gnutls) needs a CA bundle; it is only
        # a Recommends of git, and mmdebstrap does not install Recommends.
        include+=(ca-certificates)
        break
    fi
done
include_csv=$(printf '%s\n' "${include[@]}" | awk '!seen[$0]++' | paste -sd, -)

# shellcheck disable=SC2016 # the hook expands "$1" itself
mm_args=(
    --mode=unshare
    --variant=minbase
    --format=directory
    --include="$include_csv"
    # Keep the image small; these stay in the guest's dpkg config so later
    # installs there stay small too.
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias'
    --dpkgopt='path-exclude=/usr/share/lintian/*'
    --dpkgopt='path-exclude=/usr/share/linda/*'
    # Belt and braces: sweep the same paths for anything that slipped past
    # path-exclude (maintainer scripts, mmdebstrap's own extraction), plus
    # bytecode, apt lists/caches and logs, all rebuilt on demand.
    --customize-hook='set -e
        cd "$1"
        find usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null || true
        find usr/share/doc -mindepth 1 -type d -empty -delete 2>/dev/null || true
        rm -rf usr/share/man/* usr/share/info/* usr/share/lintian/* usr/share/linda/*
        find usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
        find usr etc var -xdev \( -name "*.pyc" -o -name "*.pyo" \) -type f -delete
        find usr etc var -xdev -name __pycache__ -type d -empty -delete
        rm -rf var/lib/apt/lists/* var/cache/apt/*
        find var/log -xdev -type f -delete
        rm -f var/cache/debconf/*-old var/lib/dpkg/*-old'
)
# Merged /usr the way debootstrap does it (directory symlinks + the tiny
# usr-is-merged package). Without this, apt satisfies init-system-helpers'
# "usrmerge | usr-is-merged" with usrmerge, which drags in full perl (~45 MiB).
merged_usr_hooks=/usr/share/mmdebstrap/hooks/merged-usr
if [ -d "$merged_usr_hooks" ]; then
    mm_args+=(--hook-dir="$merged_usr_hooks")
else
    log "warning: $merged_usr_hooks missing; usrmerge (and perl) will be installed"
fi
# Honour a host apt configuration that accepts expired Release files (as
# needed for snapshot mirrors); mmdebstrap does not read the host's apt.conf.
if command -v apt-config >/dev/null 2>&1; then
    cvu=""
    eval "$(apt-config shell cvu Acquire::Check-Valid-Until 2>/dev/null || true)"
    case ${cvu,,} in
        false | no | 0) mm_args+=(--aptopt='Acquire::Check-Valid-Until "false"') ;;
    esac
fi
if [ -r /usr/share/keyrings/debian-archive-keyring.gpg ]; then
    mm_args+=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
fi

# --- 3. bootstrap -----------------------------------------------------------
remove_tree
: >"$bootlog"
log "bootstrap start: $suite minbase + ${include[*]} (mirror from $mirror_origin: ${sources[*]})"
t0=$SECONDS
in_bootstrap=1
printf '==== mmdebstrap --include=%s %s %s %s\n' "$include_csv" "$suite" "$tree" "${sources[*]}" >>"$bootlog"
# In the background so that a TERM/INT to this script is acted on at once
# (bash runs traps only after a foreground child exits).
mmdebstrap "${mm_args[@]}" "$suite" "$tree" "${sources[@]}" >>"$bootlog" 2>&1 </dev/null &
mm_pid=$!
wait "$mm_pid"
mm_pid=""
in_bootstrap=0
log "bootstrap done in $((SECONDS - t0))s"

# --- 4. pyro layout ---------------------------------------------------------
install -D -m 0755 -o 0 -g 0 -- "$agent" "$tree/opt/pyro/bin/pyro-agent"
chown 0:0 "$tree/opt" "$tree/opt/pyro" "$tree/opt/pyro/bin"
chmod 0755 "$tree/opt" "$tree/opt/pyro" "$tree/opt/pyro/bin"
for d in workspace run proc sys dev; do
    mkdir -p -- "$tree/$d"
done
mkdir -p -- "$tree/tmp"
chmod 0755 "$tree/workspace" "$tree/run" "$tree/dev"
chmod 0555 "$tree/proc" "$tree/sys"
chmod 1777 "$tree/tmp"
chown 0:0 "$tree/workspace" "$tree/run" "$tree/dev" "$tree/proc" "$tree/sys" "$tree/tmp"
printf 'pyro\n' >"$tree/etc/hostname"
cat >"$tree/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	pyro
::1		localhost ip6-localhost ip6-loopback
EOF
rm -f -- "$tree/etc/resolv.conf"
: >"$tree/etc/resolv.conf"
chmod 0644 "$tree/etc/hostname" "$tree/etc/hosts" "$tree/etc/resolv.conf"

# --- 5. ext4 image ----------------------------------------------------------
used=$(du -sb -- "$tree" | cut -f1)
alloc=$(du -s --block-size=1 -- "$tree" | cut -f1)
if [ "$alloc" -gt "$used" ]; then used=$alloc; fi
mib=$((1024 * 1024))
size=$(((used * 5 / 4 + 64 * mib + mib - 1) / mib * mib))
nfiles=$(find "$tree" -xdev | wc -l)
inodes=$((nfiles * 5 / 4 + 16384))

tmp_img=$(mktemp "$(dirname -- "$output")/.$(basename -- "$output").tmp.XXXXXX")
truncate -s "$size" -- "$tmp_img"
log "making ext4: $((size / mib)) MiB, $inodes inodes, tree $((used / mib)) MiB in $nfiles entries"
mkfs.ext4 -F -q -d "$tree" \
    -O ^inline_data,^large_dir,^metadata_csum_seed \
    -L pyro-rootfs -m 0 -E root_owner=0:0 \
    -b 4096 -I 256 -N "$inodes" \
    -- "$tmp_img" >&2
e2fsck -fn -- "$tmp_img" >/dev/null 2>&1 || {
    e2fsck -fn -- "$tmp_img" 2>&1 | tail -n 30 | sed 's/^/[rootfs]   | /' >&2 || true
    die "e2fsck found problems in the new image"
}
chmod 0644 -- "$tmp_img"
mv -f -- "$tmp_img" "$output"
tmp_img=""
log "image $output: $(du -h --apparent-size -- "$output" | cut -f1) apparent, $(du -h -- "$output" | cut -f1) on disk"
