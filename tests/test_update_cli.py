"""The vendor's and the technician's commands: release keygen/build/verify, update with clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lifecycle_support import Reader, copy_release_tree, make_reader

from firmware_py.cli.main import main


def test_release_keygen_build_verify_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["release", "keygen", "--out", str(tmp_path / "keys")]) == 0
    assert main(["release", "keygen", "--out", str(tmp_path / "keys")]) == 5  # never replaces a key
    assert "refusing to replace" in capsys.readouterr().err
    tree = copy_release_tree(tmp_path / "tree", "1.2.3")
    out = tmp_path / "kaoclock-1.2.3.bundle"
    assert main(["release", "build", "--key", str(tmp_path / "keys" / "release.key"), "--tree", str(tree), "-o", str(out)]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["version"] == "1.2.3" and built["bundle"] == str(out) and not built["wheels"]
    assert main(["release", "verify", str(out), "--pubkey", str(tmp_path / "keys" / "release.pub"), "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified["ok"] and verified["signed_by"] == built["key_id"] and verified["files"] == built["files"]

    other = tmp_path / "other"
    main(["release", "keygen", "--out", str(other)])
    capsys.readouterr()
    assert main(["release", "verify", str(out), "--pubkey", str(other / "release.pub")]) == 4
    assert f"signed by release key {built['key_id']}" in capsys.readouterr().err


def test_update_usage_errors_are_clear(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["update"]) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert main(["update", "x.bundle", "--rollback"]) == 2
    assert "not both" in capsys.readouterr().err


def test_update_on_a_machine_without_a_release_says_how_to_install_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[update]\nslots_root = "{tmp_path / "opt"}"\nservice = ""\n')
    assert main(["update", "--config", str(cfg), str(tmp_path / "x.bundle")]) == 5
    err = capsys.readouterr().err
    assert "no release is installed" in err and "device/install.sh" in err


@pytest.fixture
def reader(tmp_path: Path, grace_hopper_path: Path) -> Reader:
    return make_reader(tmp_path / "reader", grace_hopper_path)


def test_update_via_the_command_line_commits_and_reports_json(reader: Reader) -> None:
    run = reader.kaoclock("update", str(reader.bundle("0.2.0")), "--json")
    out = json.loads(run.stdout)
    assert run.returncode == 0 and out["action"] == "committed" and out["version"] == "0.2.0" and out["health"]["ok"]
    assert "switched to slot b (0.2.0)" in run.stderr
    missing = reader.kaoclock("update", str(reader.root / "nope.bundle"))
    assert missing.returncode == 4 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
