"""A systemd watchdog that is petted only while frames are actually being processed.

The pipeline calls :meth:`Watchdog.frame_processed` for every frame it has
finished; a thread wakes every half ``WatchdogSec`` and sends ``WATCHDOG=1``
only if the last frame is younger than ``stall_after`` seconds. If the camera
stalls or the pipeline hangs, the petting stops, ``STATUS=`` says why, and
systemd restarts the service when ``WatchdogSec`` runs out (so a stall is
acted on after at most ``stall_after + WatchdogSec``). When frames flow again
before that, petting resumes. A hung petting thread cannot fake health: it
pets only on fresh evidence from the pipeline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from firmware_py.events import EventBus
from firmware_py.service.heartbeat import Heartbeat
from firmware_py.service.notify import Notifier

log = logging.getLogger(__name__)


class Watchdog:
    """Frame-driven watchdog petting.

    ``timeout`` is the unit's WatchdogSec (None: systemd's watchdog is off;
    status and heartbeat are still kept). ``stall_after`` is how long without
    a processed frame counts as stalled. Starting counts as a frame, which
    gives the pipeline ``stall_after`` seconds to deliver its first one.
    """

    def __init__(
        self,
        notifier: Notifier,
        timeout: float | None,
        stall_after: float,
        *,
        interval: float | None = None,
        heartbeat: Heartbeat | None = None,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.timeout = timeout
        self.stall_after = stall_after
        self.interval = interval or (timeout / 2 if timeout else min(stall_after / 2, 5.0))
        self.heartbeat = heartbeat
        self.bus = bus
        self.clock = clock
        self._last = clock()
        self._frames = 0
        self._stalled = False
        self._pets = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def frame_processed(self) -> None:
        """Called by the pipeline for every frame it has finished (cheap, any thread)."""
        self._last = self.clock()
        self._frames += 1

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def pets(self) -> int:
        """How many times WATCHDOG=1 was sent."""
        return self._pets

    @property
    def last_frame_age(self) -> float:
        return self.clock() - self._last

    @property
    def stalled(self) -> bool:
        return self.last_frame_age > self.stall_after

    def tick(self) -> bool:
        """One round: pet if frames are flowing, report changes; returns whether it petted."""
        age = self.last_frame_age
        stalled = age > self.stall_after
        if stalled != self._stalled:
            self._stalled = stalled
            if stalled:
                msg = f"camera stalled: no frame processed for {age:.1f} s; watchdog not petted"
                log.warning(msg)
                if self.bus:
                    self.bus.emit_new("service.stalled", "fault", last_frame_age=round(age, 1))
            else:
                msg = "processing frames"
                log.info("frames flowing again; watchdog petted")
                if self.bus:
                    self.bus.emit_new("service.resumed", "info")
            self.notifier.status(msg)
        petted = False
        if not stalled and self.timeout:
            petted = self.notifier.watchdog()
            self._pets += int(petted)
        if self.heartbeat is not None:
            try:
                status = "stalled" if stalled else "processing frames"
                self.heartbeat.write(frames=self._frames, last_frame_age=age, stalled=stalled, status=status)
            except OSError as exc:
                log.debug("heartbeat not written: %s", exc)
        return petted

    def start(self) -> None:
        if self._thread is not None:
            return
        self._last = self.clock()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)
            self._thread = None
        if self.heartbeat is not None:
            self.heartbeat.remove()
