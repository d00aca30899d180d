"""Crash points: where a test may make the updater kill itself with SIGKILL.

``KAOCLOCK_CRASH_AT=NAME`` makes the process SIGKILL itself when it reaches
the point NAME (``copy`` fires halfway through writing the files). The code
path is the real one; only the moment of death is chosen, so the tests can
prove that an update interrupted at any step leaves a bootable reader. Unset
(always, on a reader) it does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "KAOCLOCK_CRASH_AT"

POINTS = (
    "install-start",  # pending written, slot not yet wiped
    "copy",  # half of the files written into the inactive slot
    "after-copy",  # slot complete, not switched
    "before-switch",  # trial recorded, `current` not yet re-pointed
    "after-switch",  # `current` re-pointed, service not restarted
    "after-restart",  # restarted, health check not started
    "health",  # while the health check runs
    "before-commit",  # health passed, nothing committed
    "commit",  # `committed` re-pointed, state not yet written
    "rollback",  # `current` re-pointed back, state not yet written
    "boot-health",  # the boot check's own health check is running
)


def crashpoint(name: str, index: int | None = None, total: int | None = None) -> None:
    """SIGKILL this process if ``$KAOCLOCK_CRASH_AT`` names this point."""
    want = os.environ.get(ENV)
    if not want or want != name:
        return
    if index is not None and total is not None and index != max(1, total // 2):
        return
    os.kill(os.getpid(), signal.SIGKILL)
