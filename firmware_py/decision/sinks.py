"""Decision sinks available now: the console, JSON lines, and the event bus.

Punches, the door relay, LEDs and MQTT plug in the same way: anything with
``on_decision(decision)`` (the :class:`~firmware_py.decision.ports.DecisionSink`
protocol).  :class:`SinkFanOut` hands each decision to every sink and keeps
one failing sink from silencing the others.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from firmware_py.decision.outcome import Decision
from firmware_py.decision.ports import DecisionSink
from firmware_py.events import EventBus

log = logging.getLogger(__name__)


def describe(d: Decision) -> str:
    """One human line: verdict, who, evidence, reason."""
    clock = time.strftime("%H:%M:%S", time.localtime(d.ts))
    who = f"{d.person_name or d.person_id} ({d.person_id})" if d.person_id else "-"
    ev = []
    if d.distance is not None and d.threshold is not None:
        ev.append(f"distance {d.distance:.3f} {'<=' if d.distance <= d.threshold else '>'} {d.threshold:.3f}")
    if d.margin is not None:
        ev.append(f"margin {d.margin:.3f}")
    ev.append(f"{d.frames} frame(s)")
    if d.liveness is not None:
        ev.append(f"liveness {d.liveness.policy}" + ("" if d.liveness.score is None else f" {d.liveness.score:.2f}"))
    if d.accepted:
        return f"{clock}  ACCEPT  {who}  [{', '.join(ev)}]  track {d.track_id}"
    best = f"nearest enrolled: {who}" if d.person_id else "no candidate"
    return f"{clock}  REJECT  {d.reason}: {d.detail}  ({best}; {', '.join(ev)})  track {d.track_id}"


class ConsoleSink:
    """Human-readable lines on a text stream (stdout by default)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    def on_decision(self, decision: Decision) -> None:
        out = self.stream or sys.stdout
        print(describe(decision), file=out, flush=True)


class JsonLinesSink:
    """One JSON object per decision, on a stream or appended to a file."""

    def __init__(self, target: IO[str] | Path | str | None = None) -> None:
        self._lock = threading.Lock()
        self._path = Path(target) if isinstance(target, (str, Path)) else None
        self._stream: IO[str] | None = None if isinstance(target, (str, Path)) else target

    def on_decision(self, decision: Decision) -> None:
        line = json.dumps(decision.as_dict(), sort_keys=True, ensure_ascii=False)
        with self._lock:
            if self._path is not None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with self._path.open("a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
            else:
                out = self._stream or sys.stdout
                out.write(line + "\n")
                out.flush()


class EventSink:
    """Publishes ``decision.accept`` / ``decision.reject`` on the event bus."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def on_decision(self, decision: Decision) -> None:
        kind = "decision.accept" if decision.accepted else "decision.reject"
        self.bus.emit_new(kind, "info", **decision.as_dict())


class SinkFanOut:
    """Every sink gets every decision, in order; a failing sink is logged and skipped."""

    def __init__(self, sinks: Iterable[DecisionSink] = ()) -> None:
        self.sinks: list[DecisionSink] = list(sinks)

    def add(self, sink: DecisionSink) -> None:
        self.sinks.append(sink)

    def on_decision(self, decision: Decision) -> None:
        for s in self.sinks:
            try:
                s.on_decision(decision)
            except Exception:
                log.exception("decision sink %r failed", s)
