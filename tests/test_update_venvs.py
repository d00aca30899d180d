"""Per-requirements venvs: reused when a release keeps its dependencies, built offline from shipped wheels when it changes them."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from firmware_py.update.errors import BundleError
from firmware_py.update.requirements import normalise, read_requirements, venv_key
from firmware_py.update.venvs import MARKER, VenvStore


def make_wheel(directory: Path, name: str, version: str, body: str) -> Path:
    """A real, minimal pure-Python wheel (PEP 427) that pip installs."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{name.replace('-', '_')}.py": body.encode(),
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}" for p, d in files.items()]
    files[f"{dist}.dist-info/RECORD"] = ("\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n").encode()
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for p, d in files.items():
            zf.writestr(p, d)
    return path


def test_requirements_are_normalised_so_cosmetic_edits_share_a_venv() -> None:
    a = normalise(["NumPy >= 1.26", "paho_mqtt>=2.1,<3", "ai-edge-litert>=2.0 ; platform_machine == 'x86_64'"])
    b = normalise(["paho-mqtt >=2.1,<3", "numpy>=1.26", "ai_edge_litert >= 2.0;platform_machine == 'x86_64'"])
    assert a == b
    assert venv_key(a) == venv_key(b) != venv_key([*a, "pyserial>=3.5"])
    here = read_requirements(Path(__file__).resolve().parent.parent / "pyproject.toml")
    assert "cryptography>=42" in here


def test_install_sh_reads_the_key_with_the_bare_system_python() -> None:
    """The base interpreter (no venv packages: no cryptography, no numpy) computes the venv key."""
    repo = Path(__file__).resolve().parent.parent
    base = getattr(sys, "_base_executable", sys.executable)
    cmd = [base, "-P", "-m", "firmware_py.update.requirements", str(repo / "pyproject.toml")]
    out = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == venv_key(read_requirements(repo / "pyproject.toml"))


def test_a_venv_is_built_offline_from_shipped_wheels_then_reused(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "kaoclock-testdep", "1.0", "ANSWER = 42\n")
    store = VenvStore(tmp_path / "venvs")
    reqs = ["kaoclock-testdep==1.0"]
    with pytest.raises(BundleError, match="carries no wheels"):
        store.plan(reqs, has_wheels=False, running=("numpy>=1.26",))
    assert store.plan(reqs, has_wheels=True) == "build"
    key = store.ensure(reqs, wheels)
    py = store.path(key) / "bin" / "python"
    assert subprocess.run([str(py), "-c", "import kaoclock_testdep as t; assert t.ANSWER == 42"]).returncode == 0
    assert (store.path(key) / MARKER).is_file()
    assert store.plan(reqs, has_wheels=False) == "reuse"
    assert store.collect(keep={key}) == [] and store.ready(key)
    assert store.collect(keep=set()) == [key] and not store.path(key).exists()


def test_wheels_that_do_not_satisfy_the_requirements_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "kaoclock-testdep", "1.0", "")
    store = VenvStore(tmp_path / "venvs")
    with pytest.raises(BundleError, match="wheels do not provide its requirements"):
        store.ensure(["kaoclock-testdep==2.0"], wheels)
    assert not any((tmp_path / "venvs").iterdir())
