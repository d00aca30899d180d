"""Wheels for the reader's platform: tags, markers, the choice of files, and `release build --platform`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from firmware_py.cli.main import main
from firmware_py.update.errors import BundleError
from firmware_py.update.requirements import read_requirements
from firmware_py.update.wheels import PLATFORMS, download_command, for_platform, platform_named, require_board_check, wheel_runs_on

REPO = Path(__file__).resolve().parent.parent
PI = PLATFORMS["aarch64"]


def test_tags_cover_every_manylinux_a_bookworm_board_runs() -> None:
    tags = PI.tags()
    assert tags[0] == "manylinux_2_36_aarch64" and tags[-2] == "manylinux_2_17_aarch64" and tags[-1] == "manylinux2014_aarch64"
    assert len(tags) == 36 - 17 + 2 and "manylinux_2_28_aarch64" in tags and not any("x86_64" in t or "2_37" in t for t in tags)
    cmd = download_command(["numpy<2"], PI, Path("/w"))
    assert cmd.count("--platform") == len(tags) and "--only-binary=:all:" in cmd and cmd[cmd.index("--python-version") + 1] == "3.11"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_aarch64.whl", True),
        ("numpy-1.26.4-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", True),
        ("opencv_python_headless-4.11.0.86-cp37-abi3-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", True),
        ("paho_mqtt-2.2.0-py3-none-any.whl", True),
        ("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", False),  # another CPU
        ("numpy-2.4.6-cp312-cp312-manylinux_2_27_aarch64.whl", False),  # another Python
        ("foo-1.0-cp311-cp311-manylinux_2_39_aarch64.whl", False),  # a newer glibc than Bookworm's 2.36
        ("foo-1.0-cp312-abi3-manylinux_2_17_aarch64.whl", False),  # stable ABI from 3.12 on
        ("foo-1.0-cp311-cp311-musllinux_1_2_aarch64.whl", False),
        ("not-a-wheel.tar.gz", False),
    ],
)
def test_wheel_selection(name: str, ok: bool) -> None:
    assert wheel_runs_on(name, PI) is ok


def test_the_board_gets_numpy_1_and_no_tensorflow() -> None:
    """Markers evaluated for the board, not for the building machine (pip would use the latter)."""
    reqs = read_requirements(REPO / "pyproject.toml")
    pi = for_platform(reqs, PI)
    assert [r for r in pi if r.startswith("numpy")] == ["numpy>=1.26,<2"]
    assert [r for r in for_platform(reqs, PLATFORMS["x86_64"]) if r.startswith("numpy")] == ["numpy>=1.26"]
    assert any(r.startswith("ai-edge-litert") for r in pi) and not any(";" in r for r in pi)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(r.startswith("tensorflow") for r in for_platform(extras["models"], PI))
    assert any(r.startswith("tensorflow-cpu==") for r in for_platform(extras["models"], PLATFORMS["x86_64"]))


def test_unknown_platform_is_refused() -> None:
    with pytest.raises(BundleError, match=r"unknown platform 'armv7l'; known: aarch64, x86_64"):
        platform_named("armv7l")


def test_release_build_platform_argument_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["release", "keygen", "--out", str(tmp_path / "keys")]) == 0
    capsys.readouterr()
    assert main(["release", "build", "--key", str(tmp_path / "keys" / "release.key"), "--platform", "armv7l"]) == 2
    assert "invalid choice: 'armv7l'" in capsys.readouterr().err


def test_release_build_refuses_wheels_for_another_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder that already holds an x86_64 wheel is not shipped to an aarch64 board (pip adds to it, never cleans it)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl").write_bytes(b"x")
    tree = tmp_path / "tree"
    (tree / "firmware_py").mkdir(parents=True)
    (tree / "firmware_py" / "__init__.py").write_text('__version__ = "1.0.0"\n')
    (tree / "pyproject.toml").write_text('[project]\nname = "t"\ndependencies = ["paho-mqtt==2.2.0"]\n')
    assert main(["release", "keygen", "--out", str(tmp_path / "keys")]) == 0
    capsys.readouterr()
    args = ["release", "build", "--key", str(tmp_path / "keys" / "release.key"), "--tree", str(tree), "--platform", "aarch64"]
    # Without a board check that passed on a clean commit, no aarch64 bundle at all.
    assert main([*args, "--wheels", str(wheels), "-o", str(tmp_path / "b.bundle")]) == 4
    assert "clean git commit the board check passed; the tree is 'tree'" in capsys.readouterr().err
    assert main([*args, "--no-board-check", "--wheels", str(wheels), "-o", str(tmp_path / "b.bundle")]) == 4
    err = capsys.readouterr().err
    assert "do not run on aarch64: numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64" in err and not (tmp_path / "b.bundle").exists()


def test_an_aarch64_release_needs_a_passing_board_check_of_the_same_commit(tmp_path: Path) -> None:
    summary = tmp_path / "last-check.json"
    steps = {s: {"status": "passed", "seconds": 1.0} for s in ("bootstrap", "demo", "verify", "numpy", "release", "dev", "tests")}
    with pytest.raises(BundleError, match=r"no board check result at .*: run `sudo device/check-aarch64.sh` on this commit first"):
        require_board_check(PI, "git 1a2b3c4", summary)
    summary.write_text(json.dumps({"ok": True, "source": "git 1a2b3c4", "steps": steps}))
    assert require_board_check(PI, "git 1a2b3c4", summary)["source"] == "git 1a2b3c4"
    with pytest.raises(BundleError, match=r"ran on 'git 1a2b3c4', not on this tree \(git 9f9f9f9\)"):
        require_board_check(PI, "git 9f9f9f9", summary)
    with pytest.raises(BundleError, match="clean git commit"):
        require_board_check(PI, "git 1a2b3c4-dirty", summary)
    steps["tests"] = {"status": "failed(1)", "seconds": 3.0}
    summary.write_text(json.dumps({"ok": False, "source": "git 1a2b3c4", "steps": steps}))
    with pytest.raises(BundleError, match=r"did not pass \(tests failed\(1\)"):
        require_board_check(PI, "git 1a2b3c4", summary)
    summary.write_text("{not json")
    with pytest.raises(BundleError, match="cannot read the board check result"):
        require_board_check(PI, "git 1a2b3c4", summary)
    assert require_board_check(PLATFORMS["x86_64"], "tree", summary) == {}  # this host's platform has no separate board check


def test_converter_tests_skip_where_tensorflow_is_not_installed(tmp_path: Path) -> None:
    """On aarch64 the `models` extra installs without TensorFlow: the tests marked `converter` skip, saying why."""
    import os
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['tensorflow'] = None  # as if not installed\n")
    test = "tests/test_models_convert.py::test_float32_tflite_equals_numpy_reference"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", test, "-q", "-rs", "-p", "no:cacheprovider"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0 and "1 skipped" in run.stdout, run.stdout[-2000:]
    assert "needs TensorFlow (the `models` extra), not installed here" in run.stdout
