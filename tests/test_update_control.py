"""Restarting the service: systemctl as the updater calls it, and a restart command for boards without systemd."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from firmware_py.update.control import CommandControl, NoControl, SystemdControl, from_settings

# systemd cannot run as PID 1 in this sandbox, so a stand-in `systemctl` on PATH answers
# from a file the test edits and logs how it was called.
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$SYSTEMCTL_LOG"
case "$1" in
    show) cat "$SYSTEMCTL_STATE" ;;
    restart) [ -z "$SYSTEMCTL_FAIL" ] || { echo "Job for $2 failed." >&2; exit 1; } ;;
esac
"""


@pytest.fixture
def systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(FAKE_SYSTEMCTL)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SYSTEMCTL_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("SYSTEMCTL_STATE", str(tmp_path / "state"))
    (tmp_path / "state").write_text("ActiveState=active\nSubState=running\nNRestarts=4\nResult=success\n")
    return tmp_path


def test_systemd_restart_then_steady_until_the_unit_restarts_again(systemctl: Path) -> None:
    ctl = SystemdControl("kaoclock.service")
    assert ctl.restart() == (True, "restarted kaoclock.service")
    assert systemctl.joinpath("log").read_text().splitlines()[:2] == ["reset-failed kaoclock.service", "restart kaoclock.service"]
    assert ctl.running() == (True, "kaoclock.service is active/running")
    systemctl.joinpath("state").write_text("ActiveState=active\nSubState=running\nNRestarts=6\nResult=success\n")
    ok, detail = ctl.running()
    assert ok is False and "restarted 2 time(s) since the update" in detail
    systemctl.joinpath("state").write_text("ActiveState=failed\nSubState=failed\nNRestarts=6\nResult=watchdog\n")
    ok, detail = ctl.running()
    assert ok is False and "failed/failed (result watchdog)" in detail


def test_a_failing_systemctl_restart_is_reported(systemctl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSTEMCTL_FAIL", "1")
    ok, detail = SystemdControl("kaoclock.service").restart()
    assert not ok and "Job for kaoclock.service failed." in detail


def test_a_restart_command_runs_in_a_shell_and_its_failure_and_hang_are_reported(tmp_path: Path) -> None:
    assert CommandControl(f"touch {tmp_path / 'restarted'}").restart() == (True, "restarted by command")
    assert (tmp_path / "restarted").exists()
    ok, detail = CommandControl("echo no such service >&2; exit 3").restart()
    assert not ok and "exited 3: no such service" in detail
    ok, detail = CommandControl("sleep 5", timeout=0.3).restart()
    assert not ok and "did not finish within 0.3 s" in detail


def test_the_control_is_chosen_from_the_config() -> None:
    assert isinstance(from_settings("kaoclock.service", "systemctl restart x"), CommandControl)
    chosen = from_settings("kaoclock.service", "")
    assert isinstance(chosen, SystemdControl if Path("/run/systemd/system").is_dir() else NoControl)
    assert isinstance(from_settings("", ""), NoControl)
