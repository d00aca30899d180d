#!/usr/bin/env bash
# The board check: run the README on an emulated Raspberry Pi OS-like board.
#
#   device/check-aarch64.sh [--root-only] [--steps LIST] [--keep] [--reuse]
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
# --keep leaves the root of this run in $CACHE/run for a look; --reuse runs the steps
# in that kept root again (with this checkout copied over it) instead of a fresh copy.
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
reuse=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root-only) root_only=1 ;;
        --keep) keep=1 ;;
        --reuse) reuse=1; keep=1 ;;
        --steps) shift; steps=${1:-}; steps=${steps//,/ } ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
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

# --- a fresh copy of the root for this run, with caches shared between runs ----------------
HOST_PY=${KAOCLOCK_HOST_PYTHON:-$TREE/.venv/bin/python}
[ -x "$HOST_PY" ] || { say "no host venv at $HOST_PY: run device/bootstrap.sh first (or set KAOCLOCK_HOST_PYTHON)"; exit 2; }
ROOT=$CACHE/run
LOGS=$CACHE/logs
STEPS_TSV=$LOGS/steps.tsv
: > "$STEPS_TSV"
mounts=()
cleanup() {
    local i
    for (( i=${#mounts[@]}-1; i>=0; i-- )); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
    [ "$keep" = 1 ] || rm -rf "$ROOT"
}
trap cleanup EXIT
umount -R -l "$ROOT" 2>/dev/null || true
if [ "$reuse" = 1 ] && [ -d "$ROOT/root/kaoclock" ]; then
    say "reusing the kept root $ROOT"
else
    rm -rf "$ROOT"
    say "copying the root to $ROOT"
    cp -a "$BASE" "$ROOT"
fi
bind() { # host dir -> root path
    mkdir -p "$1" "$ROOT$2"
    mount --bind "$1" "$ROOT$2"
    mounts+=("$ROOT$2")
}
mount -t proc proc "$ROOT/proc" && mounts+=("$ROOT/proc")
mount --rbind /dev "$ROOT/dev" && mounts+=("$ROOT/dev")
mount -t tmpfs tmpfs "$ROOT/tmp" && mounts+=("$ROOT/tmp")
# Downloads are cached across runs (pip's cache, the model wheels, apt's .debs); what is built is not.
bind "$CACHE/cache/pip" /root/.cache/pip
bind "$CACHE/cache/kaoclock-wheels" /root/.cache/kaoclock/wheels
bind "$CACHE/cache/apt" /var/cache/apt/archives
rm -f "$ROOT/var/cache/apt/archives/lock"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host's own certificate authorities (a site's TLS-inspecting proxy): the board would need them too.
# Appended as update-ca-certificates would, which takes minutes under emulation.
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] || continue
    cmp -s "$crt" "$ROOT/usr/local/share/ca-certificates/$(basename "$crt")" && continue
    cp "$crt" "$ROOT/usr/local/share/ca-certificates/"
    cat "$crt" >> "$ROOT/etc/ssl/certs/ca-certificates.crt"
done
# The checkout as a technician's clone would hold it: tracked and new files, no venv, no caches.
mkdir -p "$ROOT/root/kaoclock"
git -C "$TREE" ls-files -z --cached --others --exclude-standard | (cd "$TREE" && xargs -0 tar -cf - --no-recursion 2>/dev/null) | tar -xf - -C "$ROOT/root/kaoclock"

in_root() { # run a shell command in the root, as root, in the checkout
    chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 TERM=dumb QEMU_CPU="$QEMU_CPU" KAOCLOCK_PROGRESS=0 /bin/bash -c "cd /root/kaoclock && $1"
}
failed=0
step() { # name command...: run, time, log; a failed step fails the check
    local name=$1 t0 rc; shift
    case " $steps " in *" $name "*) ;; *) printf '%s\tnot-run\t0\n' "$name" >> "$STEPS_TSV"; return 0 ;; esac
    say "step $name"
    t0=$(date +%s.%N)
    set +e; "$@" > "$LOGS/$name.log" 2>&1; rc=$?; set -e
    printf '%s\t%s\t%.1f\n' "$name" "$([ $rc = 0 ] && echo passed || echo "failed($rc)")" "$(awk "BEGIN { print $(date +%s.%N) - $t0 }")" >> "$STEPS_TSV"
    if [ $rc != 0 ]; then failed=1; tail -15 "$LOGS/$name.log" | sed "s/^/  $name: /" >&2; fi
    return 0
}
# What a later step needs from an earlier one, by what it left in the root (so --reuse works).
set_up() { [ -x "$ROOT/root/kaoclock/.venv/bin/kaoclock" ] || { echo "needs the bootstrap step"; return 1; }; }
set_up_dev() { grep -qs "dev" "$ROOT/root/kaoclock/.venv/.kaoclock-installed" || { echo "needs the dev step"; return 1; }; }

# The README's first command, as on a fresh board: installs python3-venv with apt, the venv, the runtime models.
s_bootstrap() { in_root "device/bootstrap.sh && .venv/bin/python -c 'import numpy, cv2, ai_edge_litert; print(numpy.__version__, cv2.__version__)'"; }

# The demo on the board and on this host: same people, same outcomes, distances within 0.01.
s_demo() {
    set_up || return 1
    rm -f "$LOGS/demo-aarch64.jsonl" "$LOGS/demo-host.jsonl" "$ROOT/tmp/demo.jsonl"  # --jsonl appends
    in_root ".venv/bin/kaoclock run --jsonl /tmp/demo.jsonl" && cp "$ROOT/tmp/demo.jsonl" "$LOGS/demo-aarch64.jsonl"
    (cd "$TREE" && PYTHONPATH="$TREE" "$HOST_PY" -m firmware_py run --jsonl "$LOGS/demo-host.jsonl" >/dev/null)
    python3 - "$LOGS/demo-aarch64.jsonl" "$LOGS/demo-host.jsonl" > "$LOGS/demo-compare.json" <<'PY'
import json, sys
board, host = ([json.loads(line) for line in open(p)] for p in sys.argv[1:3])
key = lambda d: (d["track_id"], d["person_id"], d["reason"], d["accepted"])
same = [key(a) for a in board] == [key(b) for b in host]
diff = max((abs(a["distance"] - b["distance"]) for a, b in zip(board, host) if a["distance"] is not None), default=0.0)
doc = {"identical_decisions": same, "decisions": len(board), "max_distance_diff": round(diff, 4),
       "aarch64": [f"{d['reason']}:{d['person_id']}:{d['distance']}" for d in board],
       "host": [f"{d['reason']}:{d['person_id']}:{d['distance']}" for d in host]}
print(json.dumps(doc))
sys.exit(0 if same and board and diff <= 0.01 else 1)
PY
    local rc=$?; cat "$LOGS/demo-compare.json"; return $rc
}

# What the reader runs; exit 0 after the plain set-up.
s_verify() { set_up || return 1; in_root ".venv/bin/kaoclock models verify --json"; }

# The camera stack's numpy: Debian's python3-scipy (C extensions built against Debian's numpy 1.24)
# imported from a --system-site-packages venv with the project's requirements, as picamera2 imports
# simplejpeg on Raspberry Pi OS.  The control: the same venv with numpy 2 must break it.
s_numpy() {
    set_up || return 1
    in_root '
set -e
reqs=$(PYTHONPATH=. python3 -m firmware_py.update.requirements pyproject.toml --list)
python3 -m venv --system-site-packages /tmp/sysvenv
echo "$reqs" > /tmp/reqs.txt
/tmp/sysvenv/bin/python -m pip install -q --disable-pip-version-check -r /tmp/reqs.txt
probe="import numpy, scipy, scipy.ndimage as nd; import sys; print(numpy.__version__, numpy.__file__, scipy.__file__); nd.gaussian_filter(numpy.ones((8, 8)), 1.0)"
echo "with the project requirements:"; /tmp/sysvenv/bin/python -c "$probe"
# numpy 1.x from the venv in front of Debian 1.24, scipy from Debian: as picamera2 and simplejpeg on a Pi.
/tmp/sysvenv/bin/python -c "import numpy, scipy; assert numpy.__version__ < \"2\" and \"/tmp/sysvenv/\" in numpy.__file__ and scipy.__file__.startswith(\"/usr/lib/python3/dist-packages/\")"
/tmp/sysvenv/bin/python -m pip install -q --disable-pip-version-check "numpy>=2"
echo "control, numpy 2 in the venv:"
if /tmp/sysvenv/bin/python -c "$probe" 2>/tmp/numpy2.err; then echo "numpy 2 did not break the system C extension: the probe proves nothing"; exit 1; fi
tail -1 /tmp/numpy2.err'
}

# The README's test command: --dev (mosquitto, PostgreSQL, the dev extra; TensorFlow has no aarch64 wheel
# and is skipped by its marker), then the subset of tests listed in device/README.md.
AARCH64_TESTS="tests/test_models_manifest.py tests/test_models_embedder.py tests/test_models_convert.py tests/test_liveness_learned.py
    tests/test_vision_detector.py tests/test_vision_align.py tests/test_capture_replay.py tests/test_gpio_door.py tests/test_serial_console.py
    tests/test_update_bundle.py tests/test_update_venvs.py tests/test_wheels.py"
s_dev() { set_up || return 1; in_root "device/bootstrap.sh --dev"; }
s_tests() {
    set_up_dev || return 1
    local have=() t; for t in $AARCH64_TESTS; do [ -f "$ROOT/root/kaoclock/$t" ] && have+=("$t"); done
    in_root ".venv/bin/python -m pytest -q -p no:cacheprovider ${have[*]}"
}

# The release for the board, installed on the board.  On this host: `release build --platform aarch64`
# of three trees.  0.1.0 asks for pyserial>=3.4 (so its venv differs), 0.1.1 is this checkout (its venv
# must be built on the board, offline, from the bundle's aarch64 wheels), 0.1.2 carries a runtime model
# that is no TFLite file (its health check must fail and roll back).  In the root: install.sh puts
# 0.1.0 in slot a from the same wheels, `kaoclock update` installs 0.1.1 into slot b and commits it,
# then rolls 0.1.2 back.
s_release() {
    set_up || return 1
    local rel=$LOGS/release wheels=$CACHE/cache/wheels-aarch64 v
    rm -rf "$rel" && mkdir -p "$rel"
    (cd "$TREE" && PYTHONPATH="$TREE" "$HOST_PY" -m firmware_py release keygen --out "$rel/keys" >/dev/null) || return 1
    for v in 0.1.0 0.1.1 0.1.2; do
        mkdir -p "$rel/tree-$v"
        git -C "$TREE" ls-files -z --cached --others --exclude-standard | (cd "$TREE" && xargs -0 tar -cf - --no-recursion 2>/dev/null) | tar -xf - -C "$rel/tree-$v"
        sed -i "s/^__version__ = .*/__version__ = \"$v\"/" "$rel/tree-$v/firmware_py/__init__.py"
    done
    sed -i 's/"pyserial>=3.5"/"pyserial>=3.4"/' "$rel/tree-0.1.0/pyproject.toml"
    grep -q '"pyserial>=3.4"' "$rel/tree-0.1.0/pyproject.toml" || { echo "cannot change 0.1.0's requirements"; return 1; }
    head -c 10240 /dev/urandom > "$rel/tree-0.1.2/models/bogus.tflite"
    printf '[models.bogus]\nrole = "runtime"\nlocation = "tree"\nfile = "bogus.tflite"\nsha256 = "%s"\nlicence = "none"\nversion = "bogus-1"\n' \
        "$(sha256sum "$rel/tree-0.1.2/models/bogus.tflite" | cut -d' ' -f1)" > "$rel/tree-0.1.2/models/bogus.toml"
    for v in 0.1.1 0.1.2; do
        (cd "$TREE" && PYTHONPATH="$TREE" "$HOST_PY" -m firmware_py release build --platform aarch64 --no-board-check --key "$rel/keys/release.key" \
            --tree "$rel/tree-$v" --wheels "$wheels" -o "$rel/kaoclock-$v.bundle" > "$rel/build-$v.json") || return 1
    done
    mkdir -p "$ROOT/srv/release" "$ROOT/srv/camera"
    cp -r "$rel/tree-0.1.0" "$ROOT/srv/release/tree-0.1.0"
    cp -r "$wheels" "$ROOT/srv/release/wheels"
    cp "$rel"/kaoclock-*.bundle "$rel/keys/release.pub" "$ROOT/srv/release/"
    in_root '
set -e
for i in 1 2 3; do cp /root/.cache/kaoclock/models/demo/grace_hopper.jpg /srv/camera/frame$i.jpg; done
/srv/release/tree-0.1.0/device/install.sh --pubkey /srv/release/release.pub --wheels /srv/release/wheels --no-start
# No systemd in the root: the updater restarts nothing; the camera is a folder of frames.
sed -i "s|^\[update\]|[camera]\nsource = \"/srv/camera\"\n\n[update]\nservice = \"\"\nhealth_deadline = 60.0|" /etc/kaoclock/kaoclock.toml
kaoclock config check /etc/kaoclock/kaoclock.toml
echo "== update to 0.1.1 (aarch64 wheels, new venv)"
kaoclock update /srv/release/kaoclock-0.1.1.bundle
kaoclock --version | grep -q 0.1.1
echo "== update to 0.1.2 (broken runtime model: must roll back)"
set +e; kaoclock update /srv/release/kaoclock-0.1.2.bundle; rc=$?; set -e
echo "update 0.1.2 exit $rc (6 = rolled back)"
[ "$rc" = 6 ]
kaoclock --version | grep -q 0.1.1
kaoclock update --status
ls /opt/kaoclock/venvs'
}

step bootstrap s_bootstrap
step demo s_demo
step verify s_verify
step numpy s_numpy
step release s_release
step dev s_dev
step tests s_tests

# --- ONE JSON summary ---------------------------------------------------------------------
# Also kept as $CACHE/last-check.json when every step ran: `kaoclock release build --platform aarch64`
# refuses to build unless it passed on the same clean commit.
SOURCE="git $(git -C "$TREE" describe --always --dirty --tags 2>/dev/null || echo unknown)"
python3 - "$STEPS_TSV" "$LOGS" "$("$QEMU" --version | head -1)" "$QEMU_CPU" "$(cat "$BASE/.complete")" "$SOURCE" "$CACHE/last-check.json" <<'PY'
import json, sys
from pathlib import Path
tsv, logs, qemu, cpu, root_s, source, last = sys.argv[1:8]
steps = {}
for line in Path(tsv).read_text().splitlines():
    name, status, secs = line.split("\t")
    steps[name] = {"status": status, "seconds": float(secs)}
cmp = Path(logs) / "demo-compare.json"
if cmp.is_file() and cmp.read_text().strip():
    steps["demo"]["compare"] = json.loads(cmp.read_text())
for name in ("bootstrap", "numpy", "tests", "release"):
    log = Path(logs) / f"{name}.log"
    if name in steps and log.is_file():
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-3:]
        steps[name]["log_tail"] = tail
doc = {"board": "Debian 12 arm64 root", "source": source, "qemu": qemu, "qemu_cpu": cpu, "root_build_seconds": int(root_s),
       "ok": all(s["status"] in ("passed", "not-run") for s in steps.values()),
       "seconds": round(sum(s["seconds"] for s in steps.values()), 1), "steps": steps, "logs": logs}
print(json.dumps(doc, indent=2))
if all(s["status"] != "not-run" for s in steps.values()):
    Path(last).write_text(json.dumps(doc, indent=2) + "\n")
PY
exit $failed
