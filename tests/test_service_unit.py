"""The systemd units and the Pi install script: verified by systemd-analyze, run for real in a sandbox root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lifecycle_support import REPO, copy_release_tree

from firmware_py.config import load
from firmware_py.models.manifest import load_manifest
from firmware_py.update.bundle import build_bundle
from firmware_py.update.signing import key_id, public_pem

DEVICE = REPO / "device"
UNITS = ("kaoclock.service", "kaoclock-update.service", "kaoclock-update.path")


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            assert current is not None, f"{path}: {line!r} outside a section"
            current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def test_the_service_unit_has_notify_watchdog_restart_limits_and_hardening() -> None:
    unit = parse_unit(DEVICE / "kaoclock.service")
    svc, u = dict(unit["Service"]), dict(unit["Unit"])
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert int(svc["WatchdogSec"]) >= 10 and svc["Restart"] == "on-failure"
    assert int(u["StartLimitBurst"]) > 3 and int(u["StartLimitIntervalSec"]) > 0  # above [update] max_boot_attempts
    assert svc["User"] == "kaoclock" and svc["Group"] == "kaoclock"
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "strict" and svc["ProtectHome"] == "yes" and svc["PrivateTmp"] == "yes"
    assert values(unit["Service"], "ReadWritePaths") == ["/var/lib/kaoclock"]  # the data dir only
    assert svc["CapabilityBoundingSet"] == ""
    # The boot check runs privileged from the committed release; the daemon from the current one.
    assert svc["ExecStartPre"].startswith("-+/opt/kaoclock/committed/device/bin/kaoclock update --boot-check")
    assert svc["ExecStart"].startswith("/opt/kaoclock/current/device/bin/kaoclock run")
    assert "Environment" in svc and any(v.startswith("KAOCLOCK_HOME=/var/lib/kaoclock") for v in values(unit["Service"], "Environment"))
    path = parse_unit(DEVICE / "kaoclock-update.path")
    assert dict(path["Path"])["PathExists"] == "/var/lib/kaoclock/update/incoming/READY"
    assert dict(path["Path"])["Unit"] == "kaoclock-update.service"


def relocate(unit: Path, root: Path, dest: Path) -> Path:
    text = unit.read_text()
    for p in ("/opt/kaoclock", "/var/lib/kaoclock", "/etc/kaoclock"):
        text = text.replace(p, f"{root}{p}")
    out = dest / unit.name
    out.write_text(text)
    return out


def analyze(*units: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt package systemd); the unit's keys are still checked by parsing")
    return subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True)


def fetched_models_dir(dest: Path, models_dir: Path) -> Path:
    """A models dir holding (links to) the already fetched runtime models, so no download happens."""
    dest.mkdir()
    for m in load_manifest().select(["runtime"]):
        if m.location == "fetched":
            (dest / m.file).symlink_to(m.path(models_dir))
    return dest


def install(*args: str) -> subprocess.CompletedProcess[str]:
    assert subprocess.run(["bash", "-n", str(DEVICE / "install.sh")]).returncode == 0
    return subprocess.run([str(DEVICE / "install.sh"), *args], capture_output=True, text=True, timeout=300)


def test_install_sh_sets_up_a_sandbox_reader_idempotently_and_the_units_verify(tmp_path: Path, models_dir: Path) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "release.pub").write_bytes(public_pem(key.public_key()))
    root = tmp_path / "root"
    models = fetched_models_dir(tmp_path / "models", models_dir)
    args = ("--root", str(root), "--venv", sys.prefix, "--models-dir", str(models), "--pubkey", str(tmp_path / "release.pub"))
    run = install(*args)
    assert run.returncode == 0, run.stderr[-1500:]

    opt = root / "opt" / "kaoclock"
    assert os.readlink(opt / "current") == "slots/a" and os.readlink(opt / "committed") == "slots/a"
    assert (opt / "slots" / "b").is_dir() and (opt / "slots" / "a" / "device" / "bin" / "kaoclock").is_file()
    cfg_path = root / "etc" / "kaoclock" / "kaoclock.toml"
    cfg = load(cfg_path)
    assert cfg.device.data_dir == root / "var" / "lib" / "kaoclock" and cfg.update.slots_root == opt
    assert (root / "etc" / "kaoclock" / "release.pub").read_bytes() == (tmp_path / "release.pub").read_bytes()
    assert all((root / "etc" / "systemd" / "system" / u).read_text() == (DEVICE / u).read_text() for u in UNITS)

    # The reader's `kaoclock` on PATH runs the installed release with the reader's paths.
    health = subprocess.run([str(root / "usr" / "local" / "bin" / "kaoclock"), "health", "--json"], capture_output=True, text=True)
    report = json.loads(health.stdout)
    assert health.returncode == 0 and report["tree"] == str((opt / "slots" / "a").resolve()) and report["config"] == str(cfg_path)

    # Idempotent: a second run changes nothing that is already right.
    stamp = {p: p.stat().st_mtime_ns for p in (cfg_path, opt / "slots" / "a" / "pyproject.toml", opt / "current")}
    again = install(*args)
    assert again.returncode == 0 and "already-installed" in again.stdout, again.stderr[-1500:]
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp

    # systemd-analyze verify, with the units' absolute paths moved into the sandbox (their binaries exist there).
    relocated = tmp_path / "units"
    relocated.mkdir()
    units = [relocate(DEVICE / u, root, relocated) for u in UNITS]
    result = analyze(*units)
    assert result.returncode == 0 and result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr
    broken = relocated / "kaoclock.service"
    broken.write_text(broken.read_text().replace("WatchdogSec=", "WatchdogSecs=").replace("Type=notify", "Type=notifyy"))
    complaint = analyze(broken)
    assert "WatchdogSecs" in complaint.stderr and "notifyy" in complaint.stderr  # the check is not blind


def test_install_sh_installs_a_signed_bundle_and_refuses_a_forged_one(tmp_path: Path, models_dir: Path) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "release.pub").write_bytes(public_pem(key.public_key()))
    tree = copy_release_tree(tmp_path / "tree", "0.4.0")
    models = fetched_models_dir(tmp_path / "models", models_dir)
    common = ("--venv", sys.prefix, "--models-dir", str(models), "--pubkey", str(tmp_path / "release.pub"))

    forged = tmp_path / "forged.bundle"
    build_bundle(tree, forged, Ed25519PrivateKey.generate(), source="test")
    run = install("--root", str(tmp_path / "r1"), "--bundle", str(forged), *common)
    assert run.returncode != 0 and "signed by release key" in run.stderr
    assert not (tmp_path / "r1" / "opt" / "kaoclock" / "current").exists()

    good = tmp_path / "good.bundle"
    build_bundle(tree, good, key, source="test")
    run = install("--root", str(tmp_path / "r2"), "--bundle", str(good), *common)
    assert run.returncode == 0, run.stderr[-1500:]
    meta = json.loads((tmp_path / "r2" / "opt" / "kaoclock" / "slots" / "a" / ".kaoclock" / "slot.json").read_text())
    assert meta["version"] == "0.4.0" and meta["signer"] == key_id(key.public_key())


def test_install_sh_refuses_to_run_as_an_ordinary_install_without_root_or_sandbox() -> None:
    if os.geteuid() == 0:
        run = install("--bogus-option")
        assert run.returncode != 0 and "unknown option --bogus-option" in run.stderr
    else:
        run = install()
        assert run.returncode != 0 and "run as root" in run.stderr
