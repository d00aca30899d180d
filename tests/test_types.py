"""The type checker passes on the whole package (mypy, configured in pyproject.toml's [tool.mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_type_error() -> None:
    # Part of the suite, so the README's test command and .ci/run both run it; mypy is in the dev extra.
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_would_catch_a_type_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x: int) -> str:\n    return x\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", str(bad)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 1 and "Incompatible return value type" in out.stdout
