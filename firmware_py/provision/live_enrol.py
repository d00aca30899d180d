"""Live enrolment at the reader: a window collects good frames, a technician confirms what it found.

A signed ``gallery.enrol_live`` command (or the console's ``enrol start``)
opens a window. While it is open, every frame the running pipeline analyses
is looked at (a frame hook reading the analyzer's last analysis, so the
frames go through the reader's own detector, landmarks, alignment and
quality): a frame is taken when it shows exactly one clear face that passes
the *enrolment* quality limits (``[vision.quality]``, stricter than the
gate's), at least ``min_gap_s`` after the previous one (several good frames,
not one frame copied). When ``frames`` have been taken they must agree (each
within dlib's same-person bound of the others' mean); the window closes with
a failure, naming the commonest reasons frames were refused, when
``window_s`` passes first.

The agreeing templates are then **held, not stored**: the candidate waits up
to ``confirm_s`` for ``gallery.enrol_live_confirm`` (or the console's
``enrol confirm``), so the person standing at the reader is the one the
technician meant. The pending result flags a *near-duplicate*: someone else
already enrolled whose templates are within the recognition threshold (twins
exist, so it is a flag for the technician, not a refusal). A cancel, or the
confirmation time running out, discards the candidate; nothing is stored.

Events on the bus: ``gallery.enrol_live_started``, ``gallery.enrol_live_pending``,
``gallery.enrol_live_done``, ``gallery.enrol_live_failed``, ``gallery.enrol_live_discarded``.
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
from firmware_py.gallery.enrol import _closest_others as closest_others
from firmware_py.gallery.store import GalleryStore, Person, Template
from firmware_py.mqtt.commands.registry import CommandContext, CommandRefused, CommandRegistry
from firmware_py.provision.gallery_sync import SITE_RE, GallerySync
from firmware_py.vision.embedding import describe_face


@dataclass
class Window:
    person_id: str
    name: str
    sites: tuple[str, ...]
    frames: int
    deadline: float
    opened_by: str
    confirm_s: float = 120.0
    descriptors: list[np.ndarray] = field(default_factory=list)
    last_taken: float = -1e9
    refused: Counter[str] = field(default_factory=Counter)


@dataclass
class Candidate:
    """Templates that passed every check, held until confirmed or discarded."""

    window: Window
    person: Person
    deadline: float
    near_duplicate: dict[str, Any] | None

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "person_id": self.person.person_id,
            "name": self.person.name,
            "templates": len(self.person.templates),
            "near_duplicate": self.near_duplicate,
            "confirm_within_s": round(max(0.0, self.deadline - now), 1),
        }


class LiveEnrolment:
    """The enrolment window, the frame hook that fills it, and the candidate awaiting confirmation."""

    def __init__(
        self,
        sync: GallerySync,
        analyzer: Any,
        embedder: Any,
        *,
        bus: EventBus | None = None,
        mirror: bool = False,
        min_gap_s: float = 0.2,
        threshold: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sync = sync
        self.analyzer = analyzer
        self.embedder = embedder
        self.bus = bus or EventBus()
        self.mirror = mirror
        self.min_gap_s = min_gap_s
        # Someone else closer than this to the candidate is flagged (the gate's match threshold).
        self.threshold = threshold if threshold is not None else SAME_PERSON_MAX
        self.clock = clock
        self.window: Window | None = None
        self.pending: Candidate | None = None
        self.last_outcome: dict[str, Any] | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ commands

    def register(self, registry: CommandRegistry) -> None:
        registry.register(
            "gallery.enrol_live",
            self.command,
            doc="Open a live enrolment window: person_id, name, sites, frames (2-10), window_s (3-120), confirm_s (10-900).",
            args=["person_id", "name", "sites", "frames", "window_s", "confirm_s"],
        )
        registry.register("gallery.enrol_live_status", lambda ctx: self.status(), doc="The live enrolment's state.", args=[])
        registry.register(
            "gallery.enrol_live_confirm",
            lambda ctx: self.confirm(ctx.args.get("person_id"), by=f"command {ctx.id}"),
            doc="Store the pending candidate's templates (person_id must name it).",
            args=["person_id"],
        )
        registry.register(
            "gallery.enrol_live_cancel", lambda ctx: self.cancel(by=f"command {ctx.id}"), doc="Discard the window or candidate.", args=[]
        )

    def command(self, ctx: CommandContext) -> dict[str, Any]:
        a = ctx.args
        pid, name, sites = a.get("person_id"), a.get("name"), a.get("sites")
        frames, window_s, confirm_s = a.get("frames", 5), a.get("window_s", 20), a.get("confirm_s", 120)
        if not isinstance(pid, str) or not pid or not isinstance(name, str) or not name.strip():
            raise CommandRefused("bad_args", "args.person_id and args.name must be non-empty strings")
        if not isinstance(sites, list) or not sites or not all(isinstance(s, str) and SITE_RE.fullmatch(s) for s in sites):
            raise CommandRefused("bad_args", "args.sites must be a non-empty list of site ids")
        if not isinstance(frames, int) or isinstance(frames, bool) or not 2 <= frames <= 10:
            raise CommandRefused("bad_args", "args.frames must be an integer from 2 to 10")
        if not isinstance(window_s, (int, float)) or isinstance(window_s, bool) or not 3 <= window_s <= 120:
            raise CommandRefused("bad_args", "args.window_s must be from 3 to 120 seconds")
        if not isinstance(confirm_s, (int, float)) or isinstance(confirm_s, bool) or not 10 <= confirm_s <= 900:
            raise CommandRefused("bad_args", "args.confirm_s must be from 10 to 900 seconds")
        return self.open(pid, name, sites, frames, float(window_s), opened_by=ctx.id, confirm_s=float(confirm_s))

    def open(
        self,
        person_id: str,
        name: str,
        sites: list[str],
        frames: int = 5,
        window_s: float = 20.0,
        opened_by: str = "",
        confirm_s: float = 120.0,
    ) -> dict[str, Any]:
        with self._lock:
            self._expire()
            if self.window is not None:
                raise CommandRefused("busy", f"an enrolment window for {self.window.person_id} is open; wait for it to end or cancel it")
            if self.pending is not None:
                who = self.pending.person.person_id
                raise CommandRefused("busy", f"the candidate for {who} awaits confirmation; confirm or cancel it first")
            self.window = Window(person_id, name, tuple(dict.fromkeys(sites)), frames, self.clock() + window_s, opened_by, confirm_s)
        self.bus.emit_new("gallery.enrol_live_started", "info", person_id=person_id, frames=frames, window_s=window_s)
        return {"window_open": True, "person_id": person_id, "frames": frames, "window_s": window_s, "confirm_s": confirm_s}

    def status(self) -> dict[str, Any]:
        """``state``: idle, collecting or pending, with what the technician needs to decide."""
        with self._lock:
            self._expire()
            now = self.clock()
            if self.window is not None:
                w = self.window
                top = ", ".join(f"{k} x{n}" for k, n in w.refused.most_common(3))
                return {
                    "state": "collecting",
                    "person_id": w.person_id,
                    "taken": len(w.descriptors),
                    "frames": w.frames,
                    "remaining_s": round(max(0.0, w.deadline - now), 1),
                    "refused": top,
                }
            if self.pending is not None:
                return {"state": "pending", **self.pending.describe(now)}
            return {"state": "idle", "last": self.last_outcome}

    def confirm(self, person_id: Any = None, by: str = "") -> dict[str, Any]:
        """Store the pending candidate; ``person_id``, when given, must name it (a guard against confirming the wrong one)."""
        with self._lock:
            self._expire()
            c = self.pending
            if c is None:
                what = (
                    f"the window for {self.window.person_id} is still collecting frames" if self.window else "no live enrolment awaits confirmation"
                )
                raise CommandRefused("nothing_pending", what)
            if person_id is not None and person_id != c.person.person_id:
                raise CommandRefused("bad_args", f"the pending candidate is {c.person.person_id!r}, not {person_id!r}; nothing was stored")
            self.pending = None

        def store(s: GalleryStore) -> dict[str, Any]:
            s.upsert_person(c.person)
            return {}

        try:
            out = self.sync._apply(store)
        except Exception as exc:
            c.window.refused[f"store: {exc}"] += 1
            self._failed(c.window, "store_failed")
            raise CommandRefused("store_failed", f"the templates could not be stored: {exc}") from None
        self.last_outcome = {"ok": True, "person_id": c.person.person_id, "templates": len(c.person.templates), "confirmed_by": by, **out}
        self.bus.emit_new("gallery.enrol_live_done", "info", near_duplicate=c.near_duplicate, **self.last_outcome)
        return self.last_outcome

    def cancel(self, by: str = "") -> dict[str, Any]:
        """Discard the open window or the pending candidate (nothing is stored)."""
        with self._lock:
            self._expire()
            if self.window is not None:
                pid, self.window = self.window.person_id, None
            elif self.pending is not None:
                pid, self.pending = self.pending.person.person_id, None
            else:
                return {"cancelled": False, "state": "idle"}
        self._discarded(pid, "cancelled", by)
        return {"cancelled": True, "person_id": pid}

    def _discarded(self, person_id: str, reason: str, by: str = "") -> None:
        self.last_outcome = {"ok": False, "person_id": person_id, "reason": reason}
        self.bus.emit_new("gallery.enrol_live_discarded", "info", person_id=person_id, reason=reason, by=by)

    def _expire(self) -> None:
        """Close a window or drop a candidate whose time ran out (called with the lock held)."""
        now = self.clock()
        if self.window is not None and now >= self.window.deadline:
            w, self.window = self.window, None
            self._failed(w, "window_ended")
        if self.pending is not None and now >= self.pending.deadline:
            pid, self.pending = self.pending.person.person_id, None
            self._discarded(pid, "not_confirmed")

    # ------------------------------------------------------------ the frame hook

    def __call__(self, _result: Any = None) -> None:
        """Frame hook: look at the frame the pipeline just analysed."""
        with self._lock:
            self._expire()
            w = self.window
            if w is None:
                return
            why = self._take(w, self.clock())
            if why:
                w.refused[why] += 1
                return
            if len(w.descriptors) < w.frames:
                return
            self.window = None
            self._hold(w)

    def _take(self, w: Window, now: float) -> str | None:
        if now - w.last_taken < self.min_gap_s:
            return None  # not refused: just waiting for a different frame
        analysis = getattr(self.analyzer, "last", None)
        faces = list(getattr(analysis, "observations", []) or [])
        if not faces:
            return "no_face"
        primary = getattr(analysis, "primary", None) or faces[0]
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

    def _hold(self, w: Window) -> None:
        """The frames agree: keep them as the candidate (lock held)."""
        descs = w.descriptors
        for i, d in enumerate(descs):
            others = np.mean([o for j, o in enumerate(descs) if j != i], axis=0)
            dist = float(np.linalg.norm(d - others))
            if dist > SAME_PERSON_MAX:
                w.refused[f"not_same_person (frame {i + 1} at {dist:.2f})"] += 1
                self._failed(w, "not_same_person")
                return
        person = Person(w.person_id, w.name, w.sites, tuple(Template(d, self.embedder.version, "live") for d in descs))
        near = None
        try:
            with self.sync.open_store() as s:
                closest = closest_others(s, w.person_id, descs, self.embedder.version)
            if closest and closest[0][1] <= self.threshold:
                near = {"person_id": closest[0][0], "distance": round(closest[0][1], 4), "threshold": round(self.threshold, 4)}
        except Exception as exc:  # a gallery that cannot be read now is reported at confirmation
            near = {"error": str(exc)}
        self.pending = Candidate(w, person, self.clock() + w.confirm_s, near)
        self.bus.emit_new("gallery.enrol_live_pending", "warning" if near else "info", **self.pending.describe(self.clock()))

    def _failed(self, w: Window, reason: str) -> None:
        top = ", ".join(f"{k} x{n}" for k, n in w.refused.most_common(3))
        self.last_outcome = {"ok": False, "person_id": w.person_id, "reason": reason, "taken": len(w.descriptors), "refused": top}
        self.bus.emit_new("gallery.enrol_live_failed", "warning", **self.last_outcome)
