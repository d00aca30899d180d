"""An update killed with SIGKILL at every step leaves a bootable reader, and the next start resolves it deterministically.

The update runs as the technician runs it, `kaoclock update BUNDLE` from the
running slot, in a subprocess; ``KAOCLOCK_CRASH_AT`` makes it SIGKILL itself
at the chosen point of the real code path. Then the unit's boot check
(`kaoclock update --boot-check` from the *committed* slot) runs, as systemd's
ExecStartPre would at the next start.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from lifecycle_support import Reader, add_bogus_runtime_model, make_reader

from firmware_py.update.bundle import verify_bundle
from firmware_py.update.signing import TrustedKeys
from firmware_py.update.slots import SlotStore


@pytest.fixture
def reader(tmp_path: Path, grace_hopper_path: Path) -> Reader:
    return make_reader(tmp_path / "reader", grace_hopper_path)


def killed_update(reader: Reader, bundle: Path, point: str) -> None:
    run = reader.kaoclock("update", str(bundle), env={"KAOCLOCK_CRASH_AT": point})
    assert run.returncode == -signal.SIGKILL, f"{point}: expected SIGKILL, got {run.returncode}: {run.stderr[-500:]}"


def boot_check(reader: Reader, **env: str) -> dict:
    run = reader.kaoclock("update", "--boot-check", "--json", via="committed", env=env)
    assert run.returncode == 0, run.stderr[-800:]  # ExecStartPre: the start always goes on
    return json.loads(run.stdout)


def assert_bootable(reader: Reader, checked: dict | None = None) -> None:
    """What the unit's ExecStart would run is a complete, intact slot that passes its health check.

    ``checked``: the boot check's own report when it already ran that slot's health check.
    """
    store = SlotStore(reader.opt)
    cur = store.current()
    assert cur is not None and store.meta(cur) is not None
    assert store.verify(cur) == []
    if checked is not None and checked.get("slot") == cur and (checked.get("health") or {}).get("ok"):
        return
    health = reader.kaoclock("health", "--json")
    assert health.returncode == 0, health.stdout[-800:]


# point -> what the boot check must do with a good release, and which slot then runs
GOOD_RELEASE = {
    "install-start": ("abandoned", "a"),
    "copy": ("abandoned", "a"),
    "after-copy": ("abandoned", "a"),
    "before-switch": ("abandoned", "a"),
    "after-switch": ("committed", "b"),
    "after-restart": ("committed", "b"),
    "health": ("committed", "b"),
    "before-commit": ("committed", "b"),
    "commit": ("committed", "b"),
}


@pytest.mark.parametrize("point", list(GOOD_RELEASE))
def test_an_update_killed_at_each_step_is_resolved_at_next_start(reader: Reader, point: str) -> None:
    bundle = reader.bundle("0.2.0")
    killed_update(reader, bundle, point)
    assert reader.link("committed") == "a" or point == "commit"
    if point == "copy":
        total = len(verify_bundle(bundle, TrustedKeys.load(reader.pubkey)).manifest.files)
        written = [p for p in (reader.opt / "slots" / "b").rglob("*") if p.is_file()]
        assert 0 < len(written) < total  # really killed halfway through the files

    action, slot = GOOD_RELEASE[point]
    result = boot_check(reader)
    assert result["action"] == action, result
    assert (reader.link("current"), reader.link("committed")) == (slot, slot)
    assert_bootable(reader, result)
    assert boot_check(reader)["action"] == "nothing"  # resolved for good: the next start does nothing

    if point == "copy":
        # The interrupted update can simply be run again.
        again = reader.kaoclock("update", str(bundle), "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["action"] == "committed", again.stderr[-800:]
        assert reader.link("current") == "b"


def test_a_bad_release_killed_on_trial_is_rolled_back_at_next_start(reader: Reader) -> None:
    killed_update(reader, reader.bundle("0.2.0", add_bogus_runtime_model), "after-switch")
    assert reader.link("current") == "b"  # the bad release is what would start...
    result = boot_check(reader)  # ...but the committed slot's boot check judges it first
    assert result["action"] == "rolled-back" and "bogus" in result["detail"]
    assert (reader.link("current"), reader.link("committed")) == ("a", "a")
    assert_bootable(reader)


def test_a_rollback_killed_halfway_is_finished_at_next_start(reader: Reader) -> None:
    killed_update(reader, reader.bundle("0.2.0", add_bogus_runtime_model), "rollback")
    assert reader.link("current") == "a"
    result = boot_check(reader)
    assert result["action"] == "rolled-back" and "bogus" in result["detail"]
    status = json.loads(reader.kaoclock("update", "--status", "--json").stdout)
    assert status["slots"]["b"]["status"] == "bad" and status["pending"] is None
    assert_bootable(reader)


def test_a_release_that_never_finishes_its_check_is_rolled_back_after_max_starts(reader: Reader) -> None:
    killed_update(reader, reader.bundle("0.2.0"), "after-switch")
    # Three starts in a row die during the health check (power cut, hang killed by TimeoutStartSec).
    for start in range(1, 4):
        run = reader.kaoclock("update", "--boot-check", via="committed", env={"KAOCLOCK_CRASH_AT": "boot-health"})
        assert run.returncode == -signal.SIGKILL
        state = json.loads((reader.data / "update" / "state.json").read_text())
        assert state["pending"]["boots"] == start and reader.link("current") == "b"
    result = boot_check(reader)
    assert result["action"] == "rolled-back" and "started 3 time(s) without passing" in result["detail"]
    assert (reader.link("current"), reader.link("committed")) == ("a", "a")
    assert_bootable(reader)


def test_the_boot_check_leaves_a_running_update_alone(reader: Reader) -> None:
    """While the updater (alive, holding the lock) waits for health, a service start must not decide for it."""
    import os
    import time

    from firmware_py.service.proc import this_process
    from firmware_py.update.state import Pending, StateFile

    sf = StateFile(reader.data / "update")
    st = sf.load()
    st.pending = Pending("b", "0.2.0", "a", "0.1.0", "trial", time.time(), this_process())
    sf.save(st)
    with sf.locked():
        result = boot_check(reader)
    assert result["action"] == "in-progress" and result["version"] == "0.2.0"
    assert sf.load().pending.boots == 0
    assert os.getpid() == st.pending.updater["pid"]
