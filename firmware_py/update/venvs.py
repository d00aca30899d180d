"""Python environments for the slots, shared by releases whose dependencies are the same.

A release's dependencies are ``[project] dependencies`` of its pyproject.toml.
Each distinct list (on this machine's Python and CPU) has one venv,
``venvs/KEY`` (see :func:`requirements.venv_key`), and a slot links to it.
When an update keeps the dependencies, the new slot links to the venv the
running slot already uses: nothing is downloaded or rebuilt. When it changes
them, the bundle must carry the wheels (``kaoclock release build --wheels
DIR``) and a new venv is built from them offline (``pip --no-index``) before
the switch; a bundle that changes them without wheels is refused before
anything is touched, with the list of what changed. The old venv stays as
long as a slot uses it, so a rollback gets exactly the environment it had.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from firmware_py.fsutil import atomic_write_json, fsync_dir, remove_tree
from firmware_py.update.errors import BundleError
from firmware_py.update.requirements import normalise, venv_key

MARKER = ".kaoclock-venv.json"


def base_python() -> str:
    """The interpreter new venvs are made from (the base of the running venv)."""
    return getattr(sys, "_base_executable", None) or sys.executable


class VenvStore:
    """``venvs/KEY`` directories (or links to adopted venvs) under the slots root."""

    def __init__(self, directory: Path, python: str | None = None) -> None:
        self.dir = Path(directory)
        self.python = python or base_python()

    def path(self, key: str) -> Path:
        return self.dir / key

    def ready(self, key: str) -> bool:
        p = self.path(key)
        if not (p / "bin" / "python").exists():
            return False
        return p.is_symlink() or (p / MARKER).is_file()

    def plan(self, requirements: list[str] | tuple[str, ...], has_wheels: bool, running: tuple[str, ...] | None = None) -> str:
        """'reuse' or 'build' for a release's requirements; BundleError when neither is possible."""
        if self.ready(venv_key(list(requirements))):
            return "reuse"
        if has_wheels:
            return "build"
        new, old = set(normalise(list(requirements))), set(normalise(list(running or ())))
        change = ""
        if running is not None:
            added, removed = sorted(new - old), sorted(old - new)
            parts = ([f"adds {', '.join(added)}"] if added else []) + ([f"drops {', '.join(removed)}"] if removed else [])
            change = f" ({'; '.join(parts)})" if parts else ""
        raise BundleError(
            f"this release changes the Python dependencies{change} and the bundle carries no wheels for them; "
            "rebuild it with `kaoclock release build --wheels DIR` (DIR from `pip download` for the reader's platform). Nothing was changed."
        )

    def ensure(self, requirements: list[str] | tuple[str, ...], wheels_dir: Path | None) -> str:
        """The key of a ready venv for ``requirements``, building it from ``wheels_dir`` if needed."""
        key = venv_key(list(requirements))
        if self.ready(key):
            return key
        if wheels_dir is None or not any(wheels_dir.glob("*.whl")):
            self.plan(requirements, False)
        assert wheels_dir is not None
        self.build(key, list(requirements), wheels_dir)
        return key

    def build(self, key: str, requirements: list[str], wheels_dir: Path) -> None:
        """Create ``venvs/KEY`` and install ``requirements`` from wheels only (no network)."""
        target = self.path(key)
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_tree(target)  # a half-built venv from an interrupted install
        offline = ["--no-index", "--find-links", str(wheels_dir), "--only-binary=:all:", "--disable-pip-version-check", "-q"]
        # Resolve first (seconds, nothing created): wheels that cannot satisfy the requirements are refused early.
        dry_run = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", *offline, *requirements]
        dry = subprocess.run(dry_run, capture_output=True, text=True)
        if dry.returncode != 0:
            self._refuse(dry)
        cmd = [self.python, "-m", "venv"]
        if subprocess.run([self.python, "-c", "import picamera2"], capture_output=True).returncode == 0:
            cmd.append("--system-site-packages")  # Raspberry Pi OS ships picamera2 as an apt package
        subprocess.run([*cmd, str(target)], check=True, capture_output=True)
        install = [str(target / "bin" / "python"), "-m", "pip", "install", "--no-cache-dir", *offline, *requirements]
        res = subprocess.run(install, capture_output=True, text=True)
        if res.returncode != 0:
            remove_tree(target)
            self._refuse(res)
        atomic_write_json(target / MARKER, {"key": key, "requirements": requirements, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    @staticmethod
    def _refuse(res: subprocess.CompletedProcess[str]) -> None:
        lines = [ln for ln in (res.stderr or res.stdout).strip().splitlines() if ln.strip()]
        tail = " | ".join(lines[-2:])
        raise BundleError(f"the bundle's wheels do not provide its requirements: {tail}; rebuild it with complete wheels. Nothing was switched.")

    def adopt(self, venv: Path, requirements: list[str] | tuple[str, ...]) -> str:
        """Use an existing venv (built by install.sh, or a checkout's) for ``requirements``."""
        venv = Path(venv).resolve()
        if not (venv / "bin" / "python").exists():
            raise BundleError(f"{venv} is not a Python virtual environment (no bin/python)")
        key = venv_key(list(requirements))
        link = self.path(key)
        if link.resolve() == venv:
            return key
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_tree(link)
        os.symlink(venv, link)
        fsync_dir(self.dir)
        return key

    def collect(self, keep: set[str]) -> list[str]:
        """Remove venvs no slot uses; returns the removed keys."""
        removed: list[str] = []
        if not self.dir.is_dir():
            return removed
        for p in self.dir.iterdir():
            if p.name not in keep:
                remove_tree(p)
                removed.append(p.name)
        return removed


def marker(path: Path) -> dict[str, object] | None:
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
