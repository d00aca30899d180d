#!/usr/bin/env bash
# The board check: run the README on an emulated Raspberry Pi OS-like board.
#
#   device/check-aarch64.sh [--root-only] [--steps LIST] [--keep]
#
# Builds (once, cached under ~/.cache/kaoclock/aarch64 or $KAOCLOCK_AARCH64_CACHE)
# a Debian 12 (bookworm) arm64 root with debootstrap and runs it under QEMU
# user-mode emulation with the Pi 4's CPU model (QEMU_CPU=cortex-a72).  The QEMU
# is Debian 13's qemu-user 10.x, unpacked into the cache from its .deb (the host
# is not upgraded): Debian 12's QEMU 7.2 shows the host's x86 /proc/cpuinfo and
# LiteRT's model loading segfaults under it.  Inside a fresh copy of the root,
# as a technician would, from a copy of this checkout:
#   bootstrap  device/bootstrap.sh                  (the README's first command)
#   demo       kaoclock run --jsonl, compared with the same demo on this host
#   verify     kaoclock models verify               (what the reader runs)
#   numpy      a Debian C extension built against Debian's numpy 1.24
#              (python3-scipy) imported from a --system-site-packages venv,
#              the way Raspberry Pi OS's picamera2 imports simplejpeg
#   dev        device/bootstrap.sh --dev            (the README's test command, part 1)
#   tests      pytest on the subset listed in device/README.md (part 2)
#   release    `kaoclock release build --platform aarch64` on this host, then
#              `kaoclock update` installs it into the root's A/B slots, the health
#              check passes, and a deliberately broken second bundle rolls back
# It prints ONE JSON summary on stdout (each step's status and seconds); progress
# and the steps' logs go to stderr and $CACHE/logs/.  Exit 0 when every step
# passed, 1 when one failed, 2 on a usage error.  Needs root (debootstrap, chroot,
# binfmt_misc) and the network to Debian's mirrors and PyPI only.
set -euo pipefail
cd "$(dirname "$0")/.."
TREE=$(pwd)

CACHE=${KAOCLOCK_AARCH64_CACHE:-$HOME/.cache/kaoclock/aarch64}
MIRROR=${KAOCLOCK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ALL_STEPS="bootstrap demo verify numpy dev tests release"
steps=$ALL_STEPS
root_only=0
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root-only) root_only=1 ;;
        --keep) keep=1 ;;
        --steps) shift; steps=${1:-}; steps=${steps//,/ } ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "check-aarch64: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for s in $steps; do
    case " $ALL_STEPS " in *" $s "*) ;; *) echo "check-aarch64: unknown step $s (steps: $ALL_STEPS)" >&2; exit 2 ;; esac
done
[ "$(id -u)" = 0 ] || { echo "check-aarch64: needs root (debootstrap, chroot, binfmt_misc)" >&2; exit 2; }

say() { echo "check-aarch64: $*" >&2; }
mkdir -p "$CACHE/logs"

# --- QEMU 10 and debootstrap from Debian 13's packages, unpacked into the cache -------------
# A private apt state (lists, archives) so the host's apt sources and packages stay as they are.
APT_DIR=$CACHE/apt
apt_private() {
    apt-get -o Dir::Etc::SourceList="$APT_DIR/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$APT_DIR/lists" -o Dir::Cache="$APT_DIR/cache" -o Dir::State::status=/dev/null \
        -o APT::Sandbox::User=root -o Debug::NoLocking=1 -qq "$@"
}
unpack_trixie() { # package -> $CACHE/<package>/
    local pkg=$1
    [ -d "$CACHE/$pkg/usr" ] && return 0
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    echo "deb $MIRROR trixie main" > "$APT_DIR/sources.list"
    [ -n "$(ls "$APT_DIR/lists/" 2>/dev/null | grep -v partial)" ] || apt_private update
    (cd "$APT_DIR" && rm -f "${pkg}"_*.deb && apt_private download "$pkg")
    rm -rf "$CACHE/$pkg.tmp" && mkdir -p "$CACHE/$pkg.tmp"
    dpkg-deb -x "$APT_DIR/${pkg}"_*.deb "$CACHE/$pkg.tmp"
    mv "$CACHE/$pkg.tmp" "$CACHE/$pkg"
}
unpack_trixie qemu-user
QEMU=$CACHE/qemu-user/usr/bin/qemu-aarch64
"$QEMU" --version | head -1 >&2
if command -v debootstrap >/dev/null 2>&1; then
    DEBOOTSTRAP=(debootstrap)
else
    unpack_trixie debootstrap
    DEBOOTSTRAP=(env DEBOOTSTRAP_DIR="$CACHE/debootstrap/usr/share/debootstrap" "$CACHE/debootstrap/usr/sbin/debootstrap")
fi

# --- binfmt_misc: aarch64 ELF files run through that QEMU ---------------------------------
# Flag F opens the interpreter now, so it works inside the chroot; our own entry name
# leaves any system qemu-aarch64 entry alone (the newest matching entry wins).
BINFMT=/proc/sys/fs/binfmt_misc
[ -e "$BINFMT/register" ] || mount -t binfmt_misc binfmt_misc "$BINFMT"
if [ -e "$BINFMT/kaoclock-aarch64" ] && ! grep -q "interpreter $QEMU\$" "$BINFMT/kaoclock-aarch64"; then
    echo -1 > "$BINFMT/kaoclock-aarch64"
fi
if [ ! -e "$BINFMT/kaoclock-aarch64" ]; then
    printf '%s' ':kaoclock-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'"$QEMU"':F' \
        > "$BINFMT/register"
fi
export QEMU_CPU=cortex-a72

# --- the Debian 12 arm64 root (cached) -----------------------------------------------------
# python3 as on Raspberry Pi OS Lite; python3-scipy stands in for the camera stack's C
# extensions built against Debian's numpy 1.24 (picamera2 -> simplejpeg); ca-certificates for pip.
BASE=$CACHE/bookworm-arm64
BASE_PACKAGES=python3,python3-scipy,ca-certificates,procps
if [ ! -e "$BASE/.complete" ]; then
    say "building the Debian 12 arm64 root in $BASE (once; ~15 min emulated)"
    rm -rf "$BASE"
    t0=$(date +%s)
    "${DEBOOTSTRAP[@]}" --arch=arm64 --variant=minbase --include="$BASE_PACKAGES" bookworm "$BASE" "$MIRROR" \
        > "$CACHE/logs/debootstrap.log" 2>&1 || { tail -20 "$CACHE/logs/debootstrap.log" >&2; say "debootstrap failed"; exit 1; }
    chroot "$BASE" apt-get clean
    echo "$(( $(date +%s) - t0 ))" > "$BASE/.complete"
fi
[ "$root_only" = 1 ] && { say "root ready: $BASE"; exit 0; }
