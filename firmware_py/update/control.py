"""Restarting the reader's service and asking whether it runs.

Under systemd the updater uses ``systemctl``; for a board without systemd (or
a test) ``[update] restart_command`` names a shell command instead; with
neither, nothing is restarted and the technician is told to do it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class ServiceControl(Protocol):
    """How the updater restarts the service and watches it."""

    description: str

    def restart(self) -> tuple[bool, str]:
        """Restart; (ok, detail)."""
        ...

    def running(self) -> tuple[bool | None, str]:
        """Whether the service runs steadily since the last restart (None: cannot tell)."""
        ...


class NoControl:
    description = "no service manager (start the new release yourself)"

    def restart(self) -> tuple[bool, str]:
        return True, "not restarted: no service manager configured"

    def running(self) -> tuple[bool | None, str]:
        return None, ""


class CommandControl:
    """Restart with a shell command (``[update] restart_command``)."""

    def __init__(self, command: str, timeout: float = 120.0) -> None:
        self.command = command
        self.timeout = timeout
        self.description = f"command: {command}"

    def restart(self) -> tuple[bool, str]:
        try:
            res = subprocess.run(self.command, shell=True, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return False, f"restart command did not finish within {self.timeout:g} s"
        if res.returncode != 0:
            return False, f"restart command exited {res.returncode}: {(res.stderr or res.stdout).strip()[-300:]}"
        return True, "restarted by command"

    def running(self) -> tuple[bool | None, str]:
        return None, ""


class SystemdControl:
    """``systemctl restart UNIT``; steady means active with no restart since ours."""

    def __init__(self, unit: str, timeout: float = 300.0) -> None:
        self.unit = unit
        self.timeout = timeout
        self.description = f"systemd unit {unit}"
        self._restarts: int | None = None

    def _show(self) -> dict[str, str]:
        res = subprocess.run(["systemctl", "show", self.unit, "-p", "ActiveState,SubState,NRestarts,Result"], capture_output=True, text=True)
        return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)

    def restart(self) -> tuple[bool, str]:
        subprocess.run(["systemctl", "reset-failed", self.unit], capture_output=True)
        try:
            # Type=notify: this returns once the daemon has sent READY=1 (or failed).
            res = subprocess.run(["systemctl", "restart", self.unit], capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return False, f"systemctl restart {self.unit} did not return within {self.timeout:.0f} s"
        self._restarts = int(self._show().get("NRestarts", "0") or 0)
        if res.returncode != 0:
            return False, f"systemctl restart {self.unit} failed: {res.stderr.strip()[-300:]}"
        return True, f"restarted {self.unit}"

    def running(self) -> tuple[bool | None, str]:
        props = self._show()
        state = f"{props.get('ActiveState', '?')}/{props.get('SubState', '?')}"
        if props.get("ActiveState") != "active":
            return False, f"{self.unit} is {state} (result {props.get('Result', '?')})"
        restarts = int(props.get("NRestarts", "0") or 0)
        if self._restarts is not None and restarts > self._restarts:
            return False, f"{self.unit} restarted {restarts - self._restarts} time(s) since the update (crashing or watchdog)"
        return True, f"{self.unit} is {state}"


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def from_settings(service: str, restart_command: str) -> ServiceControl:
    if restart_command:
        return CommandControl(restart_command)
    if service and systemd_running():
        return SystemdControl(service)
    return NoControl()
