"""Updates end to end on a real slots root: install, switch, health check in the new slot's own process, commit or roll back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lifecycle_support import Reader, RecordingControl, add_bogus_runtime_model, make_reader

from firmware_py.update.errors import BundleError, UpdateError
from firmware_py.update.slots import SlotStore


@pytest.fixture
def reader(tmp_path: Path, grace_hopper_path: Path) -> Reader:
    return make_reader(tmp_path / "reader", grace_hopper_path)


def state(reader: Reader) -> dict:
    return json.loads((reader.data / "update" / "state.json").read_text())


def test_a_good_update_installs_switches_and_commits(reader: Reader) -> None:
    control = RecordingControl()
    outcome = reader.updater(control).apply(reader.bundle("0.2.0"))
    assert outcome.action == "committed", outcome
    assert (reader.link("current"), reader.link("committed")) == ("b", "b")
    assert control.restarts == 1
    # The health check ran in the new slot's own process, with its own code.
    config_check = next(c for c in outcome.health.checks if c["name"] == "config")
    assert "release 0.2.0" in config_check["detail"]
    assert next(c for c in outcome.health.checks if c["name"] == "camera")["status"] == "ok"
    st = state(reader)
    assert st["pending"] is None
    assert st["slots"]["b"]["status"] == "good" and st["slots"]["a"]["status"] == "good"
    assert SlotStore(reader.opt).verify("b") == []
    run = reader.kaoclock("health", "--json")
    assert run.returncode == 0 and json.loads(run.stdout)["version"] == "0.2.0"
    assert json.loads(run.stdout)["tree"] == str((reader.opt / "slots" / "b").resolve())


def test_a_release_whose_model_fails_to_load_is_rolled_back(reader: Reader) -> None:
    control = RecordingControl()
    outcome = reader.updater(control).apply(reader.bundle("0.2.0", add_bogus_runtime_model))
    assert outcome.action == "rolled-back" and outcome.exit_code != 0
    assert "bogus" in outcome.detail and "not a valid Flatbuffer" in outcome.detail
    assert outcome.health is not None and outcome.health.permanent  # no waiting for the deadline
    assert (reader.link("current"), reader.link("committed")) == ("a", "a")
    assert control.restarts == 2  # into the new release, and back
    st = state(reader)
    assert st["pending"] is None and st["slots"]["b"]["status"] == "bad" and "bogus" in st["slots"]["b"]["reason"]
    assert reader.kaoclock("health").returncode == 0


def test_a_release_that_refuses_the_readers_config_is_rolled_back(reader: Reader) -> None:
    def stricter_schema(tree: Path) -> None:
        model = tree / "firmware_py" / "config" / "model.py"
        model.write_text(model.read_text().replace("setting(1, ge=1, le=1", "setting(2, ge=2, le=2"))

    reader.config.write_text("schema_version = 1\n" + reader.config.read_text())  # valid for 0.1.0, not for the new release
    outcome = reader.updater().apply(reader.bundle("0.2.0", stricter_schema))
    assert outcome.action == "rolled-back"
    assert "config" in outcome.detail and "schema_version" in outcome.detail
    assert reader.link("current") == "a"


def test_a_release_that_never_sees_frames_is_rolled_back_at_the_deadline(reader: Reader) -> None:
    for p in reader.images.iterdir():
        p.unlink()  # the camera delivers nothing
    outcome = reader.updater(health_deadline=4.0, retry_interval=0.5).apply(reader.bundle("0.2.0"))
    assert outcome.action == "rolled-back"
    assert "camera" in outcome.detail and "deadline of 4 s passed" in outcome.detail
    assert not outcome.health.permanent
    assert reader.link("current") == "a"


def test_a_service_that_does_not_restart_is_rolled_back(reader: Reader) -> None:
    outcome = reader.updater(RecordingControl(ok=False)).apply(reader.bundle("0.2.0"))
    assert outcome.action == "rolled-back" and "did not start" in outcome.detail
    assert reader.link("current") == "a"


def test_forged_and_tampered_bundles_are_refused_before_anything_changes(reader: Reader) -> None:
    control = RecordingControl()
    updater = reader.updater(control)
    assert updater.apply(reader.bundle("0.2.0")).action == "committed"  # slot b now holds good 0.2.0; a holds 0.1.0
    before = {p: p.read_bytes() for p in (reader.opt / "slots" / "a").rglob("*") if p.is_file() and not p.is_symlink()}
    history = state(reader)["history"]

    forged = reader.bundle("0.3.0", key=Ed25519PrivateKey.generate())
    with pytest.raises(BundleError, match="signed by release key"):
        updater.apply(forged)
    tampered = reader.bundle("0.3.0")
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"corrupt|tampered"):
        updater.apply(tampered)

    after = {p: p.read_bytes() for p in (reader.opt / "slots" / "a").rglob("*") if p.is_file() and not p.is_symlink()}
    assert after == before  # the rollback target was not touched
    assert (reader.link("current"), reader.link("committed")) == ("b", "b")
    assert state(reader)["history"] == history and state(reader)["pending"] is None
    assert control.restarts == 1


def test_rollback_by_hand_goes_back_and_forth_between_good_releases(reader: Reader) -> None:
    control = RecordingControl()
    updater = reader.updater(control)
    updater.apply(reader.bundle("0.2.0"))
    out = updater.rollback()
    assert out.action == "rolled-back-by-hand" and out.version == "0.1.0" and out.health.ok
    assert (reader.link("current"), reader.link("committed")) == ("a", "a")
    assert updater.rollback().version == "0.2.0"
    assert reader.link("current") == "b"
    assert control.restarts == 3


def test_rollback_by_hand_refuses_a_bad_or_damaged_slot(reader: Reader) -> None:
    updater = reader.updater()
    with pytest.raises(UpdateError, match="slot b holds no complete release"):
        updater.rollback()
    updater.apply(reader.bundle("0.2.0", add_bogus_runtime_model))  # rolled back: b is bad
    with pytest.raises(UpdateError, match=r"not a known-good release \(bad"):
        updater.rollback()
    updater.apply(reader.bundle("0.2.0"))  # b good, running
    (reader.opt / "slots" / "a" / "firmware_py" / "events.py").write_text("broken = True\n")
    with pytest.raises(UpdateError, match=r"damaged.*events\.py was modified"):
        updater.rollback()
    assert reader.link("current") == "b"


def test_downgrades_and_too_old_starting_points_are_refused(reader: Reader) -> None:
    updater = reader.updater()
    updater.apply(reader.bundle("0.3.0"))
    with pytest.raises(BundleError, match=r"older than the running 0\.3\.0"):
        updater.apply(reader.bundle("0.2.0"))
    assert updater.apply(reader.bundle("0.2.0"), allow_downgrade=True).action == "committed"
    with pytest.raises(BundleError, match=r"only over 0\.2\.5 or newer \(running 0\.2\.0\)"):
        updater.apply(reader.bundle("0.4.0", min_from_version="0.2.5"))


def test_a_release_with_new_dependencies_and_no_wheels_is_refused_untouched(reader: Reader) -> None:
    def new_dependency(tree: Path) -> None:
        pyproject = tree / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace("dependencies = [", 'dependencies = [\n    "kaoclock-extra==1.0",', 1))

    with pytest.raises(BundleError, match=r"changes the Python dependencies \(adds kaoclock-extra==1\.0\).*--wheels"):
        reader.updater().apply(reader.bundle("0.2.0", new_dependency))
    assert not (reader.opt / "slots" / "b" / "firmware_py").exists()
    assert state(reader)["pending"] is None and reader.link("current") == "a"


def test_status_reports_slots_pending_and_history(reader: Reader) -> None:
    updater = reader.updater()
    updater.apply(reader.bundle("0.2.0", add_bogus_runtime_model))
    st = updater.status()
    assert st["current"] == "a" and st["slots"]["a"]["version"] == "0.1.0"
    assert st["slots"]["b"]["status"] == "bad" and st["slots"]["b"]["version"] == "0.2.0"
    assert [h["event"] for h in st["history"]] == ["first-install", "install-start", "switched", "rolled-back"]
    run = reader.kaoclock("update", "--status")
    assert run.returncode == 0 and "bad: models: bogus" in run.stdout and "[running, committed]" in run.stdout


def test_a_second_first_install_is_refused_politely(reader: Reader) -> None:
    out = reader.updater().init(reader.tree("0.9.0"))
    assert out.action == "already-installed" and out.version == "0.1.0"


def test_a_first_install_killed_between_its_links_is_completed_by_running_it_again(reader: Reader) -> None:
    (reader.opt / "committed").unlink()  # current -> a, committed missing: killed between the two links
    out = reader.updater().init(reader.tree("0.9.0"))
    assert out.action == "already-installed" and out.version == "0.1.0"
    assert (reader.link("current"), reader.link("committed")) == ("a", "a")
    (reader.opt / "slots" / "a" / ".kaoclock" / "slot.json").unlink()  # a never-finished slot a
    out = reader.updater().init(reader.tree("0.9.0"), venv=Path(sys.prefix))
    assert out.action == "installed" and out.version == "0.9.0" and reader.link("committed") == "a"
