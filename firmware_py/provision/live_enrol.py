"""Live enrolment at the reader: a signed ``gallery.enrol_live`` command opens a window.

While the window is open, every frame the running pipeline analyses is
looked at (a frame hook reading the analyzer's last analysis, so the frames
go through the reader's own detector, landmarks, alignment and quality):
a frame is taken when it shows exactly one clear face that passes the
*enrolment* quality limits (``[vision.quality]``, stricter than the gate's),
at least ``min_gap_s`` after the previous one (so the templates differ a
little: several good frames, not one frame copied).  When ``frames`` have
been taken they must agree (each within dlib's same-person bound of the
others' mean), and are stored as templates of the person through the gallery
sync (same store, same version bump, the pipeline gets the new matrix).
The window closes with a failure, naming the commonest reasons frames were
refused, when ``window_s`` passes first.

Events on the bus: ``gallery.enrol_live_started``, ``gallery.enrol_live_done``,
``gallery.enrol_live_failed``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firmware_py.events import EventBus
from firmware_py.gallery.enrol import SAME_PERSON_MAX, SECOND_FACE_RATIO
from firmware_py.gallery.store import GalleryStore, Person, Template
from firmware_py.mqtt.commands.registry import CommandContext, CommandRefused, CommandRegistry
from firmware_py.pipeline.embedding import describe_face
from firmware_py.provision.gallery_sync import SITE_RE, GallerySync


@dataclass
class Window:
    person_id: str
    name: str
    sites: tuple[str, ...]
    frames: int
    deadline: float
    opened_by: str
    descriptors: list[np.ndarray] = field(default_factory=list)
    last_taken: float = -1e9
    refused: Counter[str] = field(default_factory=Counter)


class LiveEnrolment:
    """The enrolment window and the frame hook that fills it."""

    def __init__(
        self,
        sync: GallerySync,
        analyzer: Any,
        embedder: Any,
        *,
        bus: EventBus | None = None,
        mirror: bool = False,
        min_gap_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sync = sync
        self.analyzer = analyzer
        self.embedder = embedder
        self.bus = bus or EventBus()
        self.mirror = mirror
        self.min_gap_s = min_gap_s
        self.clock = clock
        self.window: Window | None = None
        self.last_outcome: dict[str, Any] | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ the command

    def register(self, registry: CommandRegistry) -> None:
        registry.register(
            "gallery.enrol_live",
            self.command,
            doc="Open a live enrolment window at the reader: person_id, name, sites, frames (2-10), window_s (3-120).",
            args=["person_id", "name", "sites", "frames", "window_s"],
        )

    def command(self, ctx: CommandContext) -> dict[str, Any]:
        a = ctx.args
        pid, name, sites = a.get("person_id"), a.get("name"), a.get("sites")
        frames, window_s = a.get("frames", 5), a.get("window_s", 20)
        if not isinstance(pid, str) or not pid or not isinstance(name, str) or not name.strip():
            raise CommandRefused("bad_args", "args.person_id and args.name must be non-empty strings")
        if not isinstance(sites, list) or not sites or not all(isinstance(s, str) and SITE_RE.fullmatch(s) for s in sites):
            raise CommandRefused("bad_args", "args.sites must be a non-empty list of site ids")
        if not isinstance(frames, int) or isinstance(frames, bool) or not 2 <= frames <= 10:
            raise CommandRefused("bad_args", "args.frames must be an integer from 2 to 10")
        if not isinstance(window_s, (int, float)) or isinstance(window_s, bool) or not 3 <= window_s <= 120:
            raise CommandRefused("bad_args", "args.window_s must be from 3 to 120 seconds")
        return self.open(pid, name, sites, frames, float(window_s), opened_by=ctx.id)

    def open(self, person_id: str, name: str, sites: list[str], frames: int = 5, window_s: float = 20.0, opened_by: str = "") -> dict[str, Any]:
        with self._lock:
            if self.window is not None and self.clock() < self.window.deadline:
                raise CommandRefused("busy", f"an enrolment window for {self.window.person_id} is open; wait for it to end")
            self.window = Window(person_id, name, tuple(dict.fromkeys(sites)), frames, self.clock() + window_s, opened_by)
        self.bus.emit_new("gallery.enrol_live_started", "info", person_id=person_id, frames=frames, window_s=window_s)
        return {"window_open": True, "person_id": person_id, "frames": frames, "window_s": window_s}

    # ------------------------------------------------------------ the frame hook

    def __call__(self, _result: Any = None) -> None:
        """Frame hook: look at the frame the pipeline just analysed."""
        with self._lock:
            w = self.window
            if w is None:
                return
            now = self.clock()
            if now >= w.deadline:
                self.window = None
                self._failed(w, "window_ended")
                return
            why = self._take(w, now)
            if why:
                w.refused[why] += 1
                return
            if len(w.descriptors) < w.frames:
                return
            self.window = None
        self._finish(w)

    def _take(self, w: Window, now: float) -> str | None:
        if now - w.last_taken < self.min_gap_s:
            return None  # not refused: just waiting for a different frame
        analysis = getattr(self.analyzer, "last", None)
        faces = list(getattr(analysis, "observations", []) or [])
        if not faces:
            return "no_face"
        primary = analysis.primary or faces[0]
        if sum(o.detection.width >= SECOND_FACE_RATIO * primary.detection.width for o in faces) > 1:
            return "several_faces"
        if primary.quality is None or primary.chip is None:
            return "not_aligned"
        failures = primary.quality.failures(self.analyzer.quality_limits)
        if failures:
            return str(failures[0])
        w.descriptors.append(describe_face(self.embedder, primary.chips, self.mirror))
        w.last_taken = now
        return None

    def _finish(self, w: Window) -> None:
        descs = w.descriptors
        for i, d in enumerate(descs):
            others = np.mean([o for j, o in enumerate(descs) if j != i], axis=0)
            dist = float(np.linalg.norm(d - others))
            if dist > SAME_PERSON_MAX:
                w.refused[f"not_same_person (frame {i + 1} at {dist:.2f})"] += 1
                self._failed(w, "not_same_person")
                return
        person = Person(w.person_id, w.name, w.sites, tuple(Template(d, self.embedder.version, "live") for d in descs))

        def store(s: GalleryStore) -> dict[str, Any]:
            s.upsert_person(person)
            return {}

        try:
            out = self.sync._apply(store)
        except Exception as exc:
            w.refused[f"store: {exc}"] += 1
            self._failed(w, "store_failed")
            return
        self.last_outcome = {"ok": True, "person_id": w.person_id, "templates": len(descs), **out}
        self.bus.emit_new("gallery.enrol_live_done", "info", **self.last_outcome)

    def _failed(self, w: Window, reason: str) -> None:
        top = ", ".join(f"{k} x{n}" for k, n in w.refused.most_common(3))
        self.last_outcome = {"ok": False, "person_id": w.person_id, "reason": reason, "taken": len(w.descriptors), "refused": top}
        self.bus.emit_new("gallery.enrol_live_failed", "warning", **self.last_outcome)
