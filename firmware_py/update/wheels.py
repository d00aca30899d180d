"""The wheels a release bundle carries for a reader's platform (`kaoclock release build --platform`).

A reader builds a new venv from the bundle's wheels offline (``pip --no-index``,
see :mod:`firmware_py.update.venvs`), so the vendor downloads them for the
reader's Python and CPU, not its own: ``pip download --platform ...
--python-version 3.11 --only-binary=:all:``.  Two things pip does not do here:

* it does not widen ``--platform manylinux_2_36_aarch64`` to the older
  manylinux tags a glibc 2.36 system also runs, so every tag is listed;
* it evaluates ``platform_machine`` markers against the *building* machine,
  so the tree's requirements are filtered for the reader first.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from firmware_py.update.errors import BundleError


@dataclass(frozen=True)
class Platform:
    """A reader's OS as pip sees it: CPU, glibc and Python."""

    name: str
    machine: str
    glibc: tuple[int, int]
    python: tuple[int, int]

    def tags(self) -> list[str]:
        """Platform tags whose wheels run here, newest first (manylinux_2_X for X <= glibc, and the legacy aliases)."""
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 16, -1)]
        tags.append(f"manylinux2014_{self.machine}")  # = manylinux_2_17
        return tags

    def marker_env(self) -> dict[str, str]:
        """The PEP 508 marker environment of the reader's Python."""
        py = f"{self.python[0]}.{self.python[1]}"
        return {
            "platform_machine": self.machine,
            "sys_platform": "linux",
            "os_name": "posix",
            "platform_system": "Linux",
            "python_version": py,
            "python_full_version": f"{py}.0",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
        }


# Raspberry Pi OS Bookworm (Debian 12): glibc 2.36, Python 3.11; the same Debian on a PC.
PLATFORMS = {
    "aarch64": Platform("aarch64", "aarch64", (2, 36), (3, 11)),
    "x86_64": Platform("x86_64", "x86_64", (2, 36), (3, 11)),
}


def platform_named(name: str) -> Platform:
    try:
        return PLATFORMS[name]
    except KeyError:
        raise BundleError(f"unknown platform {name!r}; known: {', '.join(sorted(PLATFORMS))}") from None


def _marker(text: str):  # type: ignore[no-untyped-def]
    try:
        from packaging.markers import Marker
    except ImportError:  # a runtime venv has pip, which vendors packaging
        from pip._vendor.packaging.markers import Marker  # type: ignore[no-redef,assignment]
    return Marker(text)


def for_platform(requirements: list[str], plat: Platform) -> list[str]:
    """The requirements that apply on ``plat``, their markers evaluated there and dropped."""
    env = plat.marker_env()
    out = []
    for req in requirements:
        spec, _, marker = req.partition(";")
        if not marker.strip() or _marker(marker.strip()).evaluate(env):
            out.append(spec.strip())
    return out


_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


def wheel_runs_on(filename: str, plat: Platform) -> bool:
    """Whether a wheel file (by its name's tags) installs on ``plat``'s CPython."""
    m = _WHEEL.match(filename)
    if not m:
        return False
    ok_plat = {"any", *plat.tags()}
    if not any(p in ok_plat for p in m.group("plat").split(".")):
        return False
    cp = f"cp{plat.python[0]}{plat.python[1]}"
    py_ok = {cp, f"py{plat.python[0]}", f"py{plat.python[0]}{plat.python[1]}"}
    pys = m.group("py").split(".")
    abis = m.group("abi").split(".")
    if "abi3" in abis:  # stable ABI: built for cp3X, runs on every later CPython 3
        return any(p.startswith("cp3") and int(p[3:] or 0) <= plat.python[1] for p in pys)
    return any(p in py_ok for p in pys) and any(a in {"none", cp} for a in abis)


def download_command(requirements: list[str], plat: Platform, dest: Path) -> list[str]:
    """The ``pip download`` command line for ``plat``'s binary wheels."""
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--disable-pip-version-check", "-q"]
    cmd += ["--python-version", f"{plat.python[0]}.{plat.python[1]}", "--implementation", "cp"]
    for tag in plat.tags():
        cmd += ["--platform", tag]
    return [*cmd, "--dest", str(dest), *requirements]


def download(requirements: list[str], plat: Platform, dest: Path) -> list[Path]:
    """Download ``plat``'s wheels for ``requirements`` (markers evaluated for it) into ``dest``; every file is checked."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = for_platform(requirements, plat)
    proc = subprocess.run(download_command(wanted, plat, dest), capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip() and not ln.startswith("WARNING")]
        raise BundleError(f"pip could not download {plat.name} wheels for Python {plat.python[0]}.{plat.python[1]}: {' | '.join(lines[-2:])}")
    wheels = sorted(dest.glob("*.whl"))
    foreign = [w.name for w in wheels if not wheel_runs_on(w.name, plat)]
    if foreign:
        raise BundleError(f"{dest} holds wheels that do not run on {plat.name}: {', '.join(foreign)} (remove them and build again)")
    return wheels


BOARD_CHECKS = {"aarch64": "device/check-aarch64.sh"}


def default_board_check(plat: Platform) -> Path:
    """Where the platform's board check leaves its summary (its cache, as root runs it)."""
    import os

    cache = os.environ.get("KAOCLOCK_AARCH64_CACHE") or str(Path.home() / ".cache" / "kaoclock" / "aarch64")
    return Path(cache) / "last-check.json"


def require_board_check(plat: Platform, source: str, summary: Path) -> dict[str, object]:
    """The board check's summary when it passed every step on exactly ``source`` (a clean commit); else BundleError.

    A release for a board is only built from a commit the emulated board has run:
    the README, the demo, the tests' subset, and an install and update of a bundle.
    """
    import json

    script = BOARD_CHECKS.get(plat.name)
    if script is None:
        return {}
    how = f"run `sudo {script}` on this commit first (or --no-board-check for a test bundle)"
    if source.endswith("-dirty") or not source.startswith("git "):
        raise BundleError(
            f"{plat.name} releases are built from a clean git commit the board check passed; the tree is {source!r}: commit, then {how}"
        )
    try:
        doc = json.loads(summary.read_text("utf-8"))
    except FileNotFoundError:
        raise BundleError(f"no board check result at {summary}: {how}") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read the board check result {summary}: {exc}; {how}") from None
    if doc.get("source") != source:
        raise BundleError(f"the board check at {summary} ran on {doc.get('source')!r}, not on this tree ({source}): {how}")
    failed = [f"{k} {v.get('status')}" for k, v in doc.get("steps", {}).items() if v.get("status") != "passed"]
    if not doc.get("ok") or failed or not doc.get("steps"):
        raise BundleError(f"the board check on {source} did not pass ({', '.join(failed) or 'no steps'}; {summary}): fix it, then {how}")
    return dict(doc)
