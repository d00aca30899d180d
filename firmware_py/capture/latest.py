"""LatestFrame: capture in its own thread; the pipeline always takes the newest frame.

The capture thread reads the camera as fast as it delivers and puts each
frame into a one-slot buffer, replacing the frame there if the pipeline has
not taken it yet (counted in ``dropped``).  Capture never waits for the
pipeline, so a slow frame never delays the next, and the pipeline never
works on a stale frame.  (For a replay that is *not* paced in real time the
buffer is ``lossless`` instead: the reader waits for each frame to be taken,
so an evaluation sees every frame.)

The thread also watches the camera:

- no frame for ``stall_timeout_s`` -> ``camera.stalled`` (warning), the
  camera is closed and reopened;
- a read or open error -> ``camera.lost`` (fault, once per outage, with the
  error and the next retry delay), then reopen attempts with exponential
  backoff (``backoff_initial_s`` doubling up to ``backoff_max_s``) and jitter
  (each delay drawn from [d/2, d]) so a fleet does not retry in lock-step;
- frames again after a stall or loss -> ``camera.recovered`` (info, with the
  outage's length and attempts);
- a finite replay at its end -> ``camera.ended`` (info); :meth:`get` then
  returns ``None`` and :attr:`finished` is true.

Events go to the :class:`~firmware_py.events.EventBus` given; ``state`` and
:meth:`stats` serve telemetry.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from firmware_py.capture.base import Camera, CameraError, EndOfStream
from firmware_py.capture.frame import Frame
from firmware_py.events import EventBus

log = logging.getLogger(__name__)

State = Literal["idle", "opening", "running", "stalled", "lost", "ended", "stopped"]


@dataclass(frozen=True)
class CaptureStats:
    """Counters since :meth:`LatestFrame.start`."""

    state: str
    captured: int
    delivered: int
    dropped: int
    reopens: int
    stalls: int
    errors: int
    last_frame_age_s: float | None


@dataclass
class _Outage:
    """One camera outage: when it began, failed attempts so far, whether ``camera.lost`` was reported."""

    start: float | None = None  # monotonic
    attempt: int = 0
    reported: bool = False


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Delay before reopen attempt ``attempt`` (0-based): ``min(max, initial * 2**attempt)`` with equal jitter."""
    d = min(maximum, initial * (2 ** min(attempt, 30)))
    r = (rng or random).random()
    return d / 2 + r * d / 2


class LatestFrame:
    """Runs ``camera`` in a thread into a one-slot buffer (see the module docstring).

    :param camera: the frame source (opened by the thread, not by the caller).
    :param bus: where ``camera.*`` events go (``None``: nowhere).
    :param stall_timeout_s: seconds without a frame that count as a stall.
    :param backoff_initial_s: first reopen delay; doubles per failed attempt.
    :param backoff_max_s: longest reopen delay.
    :param lossless: wait for each frame to be taken instead of replacing it
        (for replays that are not paced in real time).
    """

    def __init__(
        self,
        camera: Camera,
        bus: EventBus | None = None,
        *,
        stall_timeout_s: float = 3.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        lossless: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.camera = camera
        self.bus = bus
        self.stall_timeout_s = float(stall_timeout_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.lossless = lossless
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state: State = "idle"
        self._captured = self._delivered = self._dropped = 0
        self._reopens = self._stalls = self._errors = 0
        self._last_frame_mono: float | None = None
        self.last_error: str | None = None

    # ------------------------------------------------------------ consumer side

    @property
    def finished(self) -> bool:
        """The source has ended (finite replay) or capture was stopped, and no frame is waiting."""
        with self._cond:
            return self._slot is None and self.state in ("ended", "stopped")

    def get(self, timeout: float | None = None) -> Frame | None:
        """Take the newest frame, waiting up to ``timeout`` seconds; ``None`` if none came or the source ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                if self.state in ("ended", "stopped"):
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self._delivered += 1
            self._cond.notify_all()
            return frame

    def frames(self, timeout: float | None = None) -> Iterator[Frame]:
        """Newest frames until the source ends or :meth:`stop` (``timeout`` per wait; a timeout just waits again)."""
        while True:
            frame = self.get(timeout)
            if frame is not None:
                yield frame
            elif self.finished:
                return

    def stats(self) -> CaptureStats:
        with self._cond:
            age = None if self._last_frame_mono is None else time.monotonic() - self._last_frame_mono
            return CaptureStats(self.state, self._captured, self._delivered, self._dropped, self._reopens, self._stalls, self._errors, age)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the capture thread (returns at once; the camera opens in the thread)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"capture:{self.camera.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop capture and close the camera."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout)
        with self._cond:
            if self.state != "ended":
                self.state = "stopped"
            self._cond.notify_all()

    def __enter__(self) -> LatestFrame:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ capture thread

    def _emit(self, type: str, severity: str = "info", **data: object) -> None:
        log.log(logging.WARNING if severity != "info" else logging.INFO, "%s %s", type, data)
        if self.bus is not None:
            self.bus.emit_new(type, severity, source=self.camera.name, **data)  # type: ignore[arg-type]

    def _set_state(self, state: State) -> None:
        with self._cond:
            self.state = state
            self._cond.notify_all()

    def _close_camera(self) -> None:
        try:
            self.camera.close()
        except Exception:  # closing a failed device may fail too
            log.debug("closing %s failed", self.camera.name, exc_info=True)

    def _run(self) -> None:
        outage = _Outage()
        first_open = True
        try:
            while not self._stop.is_set():
                # ---- open (or reopen) the camera
                if not self.camera.is_open:
                    if first_open:
                        self._set_state("opening")
                    try:
                        self.camera.open()
                    except CameraError as exc:
                        if self._stop.wait(self._camera_failed(exc, outage)):
                            break
                        continue
                    if not first_open:
                        self._reopens += 1
                    first_open = False
                    last = time.monotonic()
                    if outage.start is None:
                        self._set_state("running")
                else:
                    last = self._last_frame_mono or time.monotonic()

                # ---- read frames until the camera stalls, fails or ends
                while not self._stop.is_set():
                    wait = max(0.01, min(0.25, self.stall_timeout_s - (time.monotonic() - last)))
                    try:
                        frame = self.camera.read(timeout=wait)
                    except EndOfStream:
                        self._set_state("ended")
                        self._emit("camera.ended", "info", frames=self._captured)
                        return
                    except CameraError as exc:
                        delay = self._camera_failed(exc, outage)
                        self._close_camera()
                        self._stop.wait(delay)
                        break
                    now = time.monotonic()
                    if frame is None:
                        if now - last >= self.stall_timeout_s:
                            self._stalls += 1
                            if outage.start is None:
                                outage.start = last
                            delay = backoff_delay(outage.attempt, self.backoff_initial_s, self.backoff_max_s, self._rng)
                            self._emit("camera.stalled", "warning", no_frame_for_s=round(now - last, 3), retry_in_s=round(delay, 3))
                            self._set_state("stalled")
                            self._close_camera()
                            outage.attempt += 1
                            self._stop.wait(delay)
                            break
                        continue
                    last = now
                    if outage.start is not None:
                        self._emit("camera.recovered", "info", outage_s=round(now - outage.start, 3), attempts=outage.attempt)
                        outage = _Outage()
                    self._put(frame, now)
                    if self.lossless:
                        last = time.monotonic()  # time spent waiting for the consumer is not a stall
        except Exception as exc:  # never die silently: report, and end the stream
            log.exception("capture thread for %s crashed", self.camera.name)
            self.last_error = repr(exc)
            self._emit("camera.lost", "fault", error=f"capture thread crashed: {exc!r}", retry_in_s=None)
            self._set_state("stopped")
        finally:
            self._close_camera()

    def _camera_failed(self, exc: CameraError, outage: _Outage) -> float:
        """Count an open or read failure into ``outage``; report the loss once; return the backoff delay."""
        self._errors += 1
        self.last_error = str(exc)
        if outage.start is None:
            outage.start = time.monotonic()
        delay = backoff_delay(outage.attempt, self.backoff_initial_s, self.backoff_max_s, self._rng)
        if not outage.reported:
            self._emit("camera.lost", "fault", error=str(exc), retry_in_s=round(delay, 3))
            outage.reported = True
        self._set_state("lost")
        outage.attempt += 1
        return delay

    def _put(self, frame: Frame, now: float) -> None:
        with self._cond:
            if self.lossless:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
            elif self._slot is not None:
                self._dropped += 1
            self._slot = frame
            self._captured += 1
            self._last_frame_mono = now
            if self.state != "running":
                self.state = "running"
            self._cond.notify_all()
