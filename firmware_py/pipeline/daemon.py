"""The reader daemon: a frame source, the recognition pipeline, sinks and services.

:class:`Daemon` owns the loop and nothing else.  What happens with a
decision is up to the :class:`~firmware_py.decision.ports.DecisionSink`s it
is given (console and JSON lines now; the punch recorder, door and LEDs plug
in the same way), and anything that must run beside the loop (MQTT client,
outbox publisher, GPIO, serial console, systemd watchdog) is a *service*
with ``start()`` / ``stop()``, started before the first frame and stopped,
in reverse order, after the last.  ``on_frame`` hooks see every
:class:`~firmware_py.pipeline.loop.FrameResult` (telemetry, watchdog pings).

SIGTERM / SIGINT stop the loop cleanly: the current frame finishes, open
tracks are ended, services stop.

A ``camera.lost`` or ``camera.stalled`` event on the bus (the capture thread
reopens the camera) resets the pipeline before the next frame: the reopened
camera shows a new scene, so open tracks end there and then and the tracker
starts afresh (see :meth:`RecognitionPipeline.reset`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from firmware_py.decision.ports import DecisionSink
from firmware_py.decision.sinks import EventSink, SinkFanOut
from firmware_py.events import EventBus
from firmware_py.pipeline.loop import FrameResult, RecognitionPipeline

log = logging.getLogger(__name__)

# Capture events after which the camera is reopened on what may be another scene.
SCENE_RESET_EVENTS = frozenset({"camera.lost", "camera.stalled"})


class Service(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


class FrameSource(Protocol):
    """The capture side as the daemon sees it (the vision package's camera + newest-frame holder)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def get(self, timeout: float | None = None) -> Any | None:
        """The newest frame not yet returned, or None after ``timeout`` or at the end."""
        ...

    @property
    def finished(self) -> bool:
        """True once a replayed source has delivered its last frame (or capture stopped)."""
        ...


class Daemon:
    """Runs frames through the pipeline until stopped (or until a replayed source ends)."""

    def __init__(
        self,
        source: FrameSource,
        pipeline: RecognitionPipeline,
        sinks: Iterable[DecisionSink] = (),
        services: Iterable[Service] = (),
        bus: EventBus | None = None,
        on_frame: Iterable[Callable[[FrameResult], None]] = (),
        decision_events: bool = True,
    ) -> None:
        self.source = source
        self.pipeline = pipeline
        self.bus = bus or pipeline.bus
        # decision_events=False when the caller publishes its own (the assembled reader emits the
        # MQTT contract's catalogue events instead of whole decisions, which carry names).
        self.sinks = SinkFanOut([*sinks, EventSink(self.bus)] if decision_events else list(sinks))
        self.services = list(services)
        self.on_frame = list(on_frame)
        self._stop = threading.Event()
        self._new_scene = threading.Event()  # set from the capture thread, handled by the loop
        self.frames = 0
        self.decisions = 0

    def stop(self, *_: object) -> None:
        """Ask the loop to finish (safe from a signal handler or another thread)."""
        self._stop.set()

    def _on_camera_event(self, event: Any) -> None:
        if event.type in SCENE_RESET_EVENTS:
            self._new_scene.set()

    def _reset_if_new_scene(self, ts: float) -> None:
        # Checked once per loop turn, after get(): at most the one frame that was already waiting
        # in the capture slot when the camera failed is processed after the reset.
        if self._new_scene.is_set():
            self._new_scene.clear()
            decisions = self.pipeline.reset(ts)
            log.info("camera lost or stalled: pipeline reset, %d open track(s) decided", len(decisions))
            for d in decisions:
                self._deliver(d)

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)

    def run(self, max_frames: int | None = None, idle_timeout_s: float | None = None) -> int:
        """The loop; returns the number of frames processed.

        ``idle_timeout_s``: give up when no frame arrives for that long
        (reported as an event); None waits forever (a live camera that stalls
        is the capture package's to reopen).
        """
        started: list[Service] = []
        unsubscribe = self.bus.subscribe(self._on_camera_event, "camera.")
        try:
            for s in self.services:
                s.start()
                started.append(s)
            self.source.start()
            self.bus.emit_new("daemon.started", "info", gallery_templates=len(self.pipeline.gallery), persons=self.pipeline.gallery.persons)
            last_frame_at = time.monotonic()
            last_ts = 0.0
            while not self._stop.is_set():
                if max_frames is not None and self.frames >= max_frames:
                    break
                frame = self.source.get(timeout=0.2)
                self._reset_if_new_scene(last_ts)
                if frame is None:
                    if self.source.finished:
                        break
                    if idle_timeout_s is not None and time.monotonic() - last_frame_at > idle_timeout_s:
                        self.bus.emit_new("camera.no_frames", "fault", seconds=idle_timeout_s)
                        break
                    continue
                last_frame_at = time.monotonic()
                last_ts = float(frame.ts)
                result = self.pipeline.process(frame)
                self.frames += 1
                for d in result.decisions:
                    self._deliver(d)
                for hook in self.on_frame:
                    try:
                        hook(result)
                    except Exception:
                        log.exception("frame hook %r failed", hook)
            for d in self.pipeline.finish(last_ts + self.pipeline.lost_after_s + 1e-3):
                self._deliver(d)
        finally:
            unsubscribe()
            try:
                self.source.stop()
            finally:
                for s in reversed(started):
                    try:
                        s.stop()
                    except Exception:
                        log.exception("service %r failed to stop", s)
                self.bus.emit_new("daemon.stopped", "info", frames=self.frames, decisions=self.decisions)
        return self.frames

    def _deliver(self, decision: Any) -> None:
        self.decisions += 1
        self.sinks.on_decision(decision)
