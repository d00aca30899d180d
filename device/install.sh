#!/usr/bin/env bash
# Install kaoclock on a reader (Raspberry Pi OS / Debian), as root:
#
#   sudo device/install.sh --pubkey release.pub                    # the first release from this checkout
#   sudo device/install.sh --pubkey release.pub --bundle R.bundle  # ... from a signed release bundle
#
# It creates the user `kaoclock` (in the video/gpio/dialout/i2c/spi groups that
# exist), the directories /opt/kaoclock/slots/{a,b}, /var/lib/kaoclock and
# /etc/kaoclock, a venv for the release's Python dependencies, installs the
# release into slot a, writes /etc/kaoclock/kaoclock.toml (only if absent),
# fetches the runtime models, installs the systemd units and enables them.
# Idempotent: running it again checks each step and changes nothing that is
# already right; later releases go through `kaoclock update BUNDLE`.
#
# Options:
#   --pubkey FILE     the vendor's release public key (-> /etc/kaoclock/release.pub)
#   --bundle FILE     install this signed bundle (checked with --pubkey) instead of the checkout
#   --wheels DIR      install Python packages from these wheels only (offline), not from PyPI
#   --venv DIR        use this existing venv instead of creating one
#   --models-dir DIR  models directory to write into the config (default /var/lib/kaoclock/models)
#   --no-start        enable the units but do not start the service now
#   --root DIR        install everything under DIR (a sandbox: no user, no chown, no systemctl)
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd -P)
root="" bundle="" pubkey="" wheels="" venv_in="" models_dir="" start=1

die() { echo "install: $*" >&2; exit 1; }
say() { echo "install: $*" >&2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=$(realpath -m "$2"); shift 2 ;;
        --bundle) bundle=$(realpath "$2"); shift 2 ;;
        --pubkey) pubkey=$(realpath "$2"); shift 2 ;;
        --wheels) wheels=$(realpath "$2"); shift 2 ;;
        --venv) venv_in=$(realpath "$2"); shift 2 ;;
        --models-dir) models_dir=$(realpath -m "$2"); shift 2 ;;
        --no-start) start=0; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

sandbox=0
[ -n "$root" ] && sandbox=1
[ "$sandbox" = 1 ] || [ "$(id -u)" = 0 ] || die "run as root (sudo $0 ...), or use --root DIR for a sandbox"
[ -z "$bundle" ] || [ -f "$bundle" ] || die "bundle $bundle does not exist"
[ -z "$bundle" ] || [ -n "$pubkey" ] || [ -f "$root/etc/kaoclock/release.pub" ] || die "--bundle needs --pubkey (the key the bundle is checked with)"
[ -z "$pubkey" ] || [ -f "$pubkey" ] || die "public key $pubkey does not exist"

opt="$root/opt/kaoclock"
data="$root/var/lib/kaoclock"
etc="$root/etc/kaoclock"
units="$root/etc/systemd/system"
bin="$root/usr/local/bin"
models_dir=${models_dir:-$data/models}
user=kaoclock

# 1. System packages: a Python >= 3.11 with venv; picamera2 from apt on a Pi.
if [ "$sandbox" = 0 ]; then
    need=()
    command -v python3 >/dev/null || need+=(python3)
    python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
    if grep -qs "Raspberry Pi" /proc/device-tree/model && ! python3 -c 'import picamera2' 2>/dev/null; then
        need+=(python3-picamera2)
    fi
    if [ ${#need[@]} -gt 0 ]; then
        say "installing system packages: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
fi
py=$(command -v python3) || die "no python3"
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$py is older than 3.11"

# 2. The service user, in the device groups that exist on this board.
if [ "$sandbox" = 0 ]; then
    if ! id "$user" >/dev/null 2>&1; then
        say "creating system user $user"
        useradd --system --home-dir /var/lib/kaoclock --no-create-home --shell /usr/sbin/nologin "$user"
    fi
    for g in video gpio dialout i2c spi render; do
        if getent group "$g" >/dev/null && ! id -nG "$user" | tr ' ' '\n' | grep -qx "$g"; then
            say "adding $user to group $g"
            usermod -aG "$g" "$user"
        fi
    done
else
    say "sandbox $root: no user created, no ownership changed"
fi

# 3. Directories. The code is root's; the daemon writes only its data directory;
#    update/ (state of the updater) is root's, update/incoming the daemon's drop box.
own() { [ "$sandbox" = 1 ] || chown "$1" "$2"; }
install -d -m 0755 "$opt" "$opt/slots" "$opt/slots/a" "$opt/slots/b" "$opt/venvs"
install -d -m 0750 "$data" "$etc"
install -d -m 0755 "$data/update"
install -d -m 0750 "$data/update/incoming"
[ -d "$models_dir" ] || install -d -m 0750 "$models_dir"
own "$user:$user" "$data"
own root:root "$data/update"
own "$user:$user" "$data/update/incoming"
own "root:$user" "$etc"

# 4. The Python environment for this checkout's dependencies.
key=$(PYTHONPATH="$src" "$py" -m firmware_py.update.requirements "$src/pyproject.toml")
if [ -n "$venv_in" ]; then
    [ -x "$venv_in/bin/python" ] || die "$venv_in is not a venv"
    venv="$venv_in"
else
    venv="$opt/venvs/$key"
    if [ ! -f "$venv/.kaoclock-venv.json" ]; then
        say "creating the venv $venv"
        rm -rf "$venv"
        site=()
        "$py" -c 'import picamera2' 2>/dev/null && site=(--system-site-packages)
        "$py" -m venv "${site[@]}" "$venv"
        req=$(mktemp)
        PYTHONPATH="$src" "$py" -m firmware_py.update.requirements "$src/pyproject.toml" --list > "$req"
        pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req")
        [ -z "$wheels" ] || pip+=(--no-index --find-links "$wheels")
        "${pip[@]}" || { rm -f "$req"; rm -rf "$venv"; die "installing the Python packages failed"; }
        rm -f "$req"
        printf '{"key": "%s", "requirements": "%s/pyproject.toml", "created_by": "install.sh"}\n' "$key" "$src" > "$venv/.kaoclock-venv.json"
    fi
fi

# 5. The release public key and the config (never overwritten).
if [ -n "$pubkey" ]; then
    install -m 0644 "$pubkey" "$etc/release.pub"
fi
[ -f "$etc/release.pub" ] || say "WARNING: no $etc/release.pub: this reader will refuse every update until it is installed"
cfg="$etc/kaoclock.toml"
if [ ! -f "$cfg" ]; then
    say "writing $cfg"
    cat > "$cfg" <<EOF
# kaoclock reader configuration, written by device/install.sh.
# Every key is documented in \`kaoclock config example\`; check changes with
# \`kaoclock config check $cfg\` before restarting the service.

[device]
data_dir = "$data"

[models]
dir = "$models_dir"

[update]
slots_root = "$opt"
public_key = "$etc/release.pub"
EOF
    chmod 0640 "$cfg"
    own "root:$user" "$cfg"
fi

# 6. The first release into slot a (the updater refuses to replace an installed one).
#    Its venv is the one above when its requirements are this checkout's; a bundle
#    with other requirements must carry wheels, else it is refused.
init=(update --init "${bundle:-$src}" --config "$cfg")
[ -z "$venv_in" ] || init+=(--venv "$venv_in")
PYTHONPATH="$src" KAOCLOCK_HOME="$data" KAOCLOCK_SLOTS="$opt" "$venv/bin/python" -P -m firmware_py "${init[@]}"
"$opt/current/device/bin/kaoclock" config check "$cfg" >/dev/null || die "the config $cfg is refused: fix it (kaoclock config check $cfg)"

# 7. Runtime models (downloaded and checked by sha256; already present ones are kept).
"$opt/current/device/bin/kaoclock" models fetch --role runtime --config "$cfg" >&2
[ "$sandbox" = 1 ] || chown -R "$user:$user" "$models_dir"

# 8. The command on PATH, with the reader's locations as defaults.
install -d -m 0755 "$bin"
cat > "$bin/kaoclock.tmp" <<EOF
#!/bin/sh
# kaoclock on this reader (written by device/install.sh): the running release, this reader's paths.
export KAOCLOCK_HOME="$data" KAOCLOCK_SLOTS="$opt" KAOCLOCK_MODELS="$models_dir" KAOCLOCK_CONFIG="$cfg"
exec "$opt/current/device/bin/kaoclock" "\$@"
EOF
chmod 0755 "$bin/kaoclock.tmp"
mv -f "$bin/kaoclock.tmp" "$bin/kaoclock"

# 9. systemd units.
install -d -m 0755 "$units"
changed=0
for u in kaoclock.service kaoclock-update.service kaoclock-update.path; do
    if ! cmp -s "$src/device/$u" "$units/$u"; then
        install -m 0644 "$src/device/$u" "$units/$u"
        changed=1
    fi
done
if [ "$sandbox" = 0 ] && [ -d /run/systemd/system ]; then
    [ "$changed" = 0 ] || systemctl daemon-reload
    systemctl enable kaoclock.service kaoclock-update.path >/dev/null 2>&1
    systemctl start kaoclock-update.path
    if [ "$start" = 1 ]; then
        # A changed unit takes effect by a restart; otherwise start is a no-op when it runs.
        if [ "$changed" = 1 ]; then action=restart; else action=start; fi
        systemctl "$action" kaoclock.service || say "the service did not start: see journalctl -u kaoclock"
    fi
else
    say "units written to $units (systemd not managed here)"
fi
say "done: $("$opt/current/device/bin/kaoclock" --version) in $opt/current; check with: kaoclock health && kaoclock update --status"
