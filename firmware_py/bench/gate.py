"""`kaoclock bench gate`: how fast an accept becomes an open door, measured.

Runs the real gate (controller, door, feedback) on gpiozero's MockFactory
pins with a small SQLite punch recorder (WAL, ``synchronous=FULL``: an fsync
per punch, like the outbox) in a temporary directory, and prints JSON:

``on_decision_us``
    time the recognition loop spends handing over a decision (it must not wait);
``record_ms``
    the durable punch write;
``decision_to_relay_ms``
    from the hand-over to the relay energised (direction + durable punch + grant);
``pulse_s_measured``
    the relay pulse read back from the mock pin's history.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

from firmware_py.config import Config, with_changes
from firmware_py.decision.outcome import Decision, Direction
from firmware_py.events import EventBus


class _Recorder:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE punches (id INTEGER PRIMARY KEY, person TEXT, direction TEXT, ts REAL)")
        self.times: list[float] = []

    def record(self, decision: Decision, direction: Direction) -> str:
        t = time.perf_counter()
        with self.db:
            cur = self.db.execute("INSERT INTO punches (person, direction, ts) VALUES (?, ?, ?)", (decision.person_id, direction, decision.ts))
        self.times.append(time.perf_counter() - t)
        return str(cur.lastrowid)


def _pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def run(n: int, pulse_s: float = 0.25, directory: str | None = None) -> dict[str, object]:
    from gpiozero.pins.mock import MockFactory

    from firmware_py.compose.gate_edge import GateEdge

    with tempfile.TemporaryDirectory(dir=directory, prefix="kaoclock-bench-") as tmp:
        cfg = with_changes(Config(), {"device.data_dir": tmp, "direction.mode": "fixed-in", "door.pulse_s": pulse_s})
        bus = EventBus()
        rec = _Recorder(Path(tmp) / "punches.sqlite")
        edge = GateEdge.from_config(cfg, bus, rec, pin_factory=MockFactory(revision="c03114"), card_reader=False)
        contact, tamper = edge.devices.door_contact, edge.devices.tamper
        assert contact is not None and tamper is not None  # the default pin map fits both
        contact.pin.drive_low()
        tamper.pin.drive_low()
        granted = threading.Event()
        granted_at: list[float] = []

        def on_grant(e: object) -> None:
            granted_at.append(time.perf_counter())
            granted.set()

        bus.subscribe(on_grant, "door.granted")
        edge.start()
        handover, to_relay = [], []
        try:
            for i in range(n):
                granted.clear()
                d = Decision(accepted=True, reason="match", track_id=i, person_id=f"p-{i % 50:03d}")
                t0 = time.perf_counter()
                edge.controller.on_decision(d)
                handover.append(time.perf_counter() - t0)
                if not granted.wait(10):
                    raise RuntimeError("the gate did not open within 10 s")
                to_relay.append(granted_at[-1] - t0)
            assert edge.devices.relay is not None
            relay = edge.devices.relay.pin
            relay.clear_states()
            time.sleep(pulse_s + 0.3)  # let the last pulse end, then measure a fresh one
            relay.clear_states()
            edge.door.grant("bench")
            time.sleep(pulse_s + 0.3)
            highs = [relay.states[k].timestamp for k in range(1, len(relay.states)) if relay.states[k - 1].state]
        finally:
            edge.stop()
    return {
        "n": n,
        "pin_factory": "mock",
        "storage": "sqlite WAL synchronous=FULL",
        "dir": directory or tempfile.gettempdir(),
        "on_decision_us_p50": round(statistics.median(handover) * 1e6, 1),
        "on_decision_us_p95": round(_pct(handover, 95) * 1e6, 1),
        "record_ms_p50": round(statistics.median(rec.times) * 1e3, 3),
        "record_ms_p95": round(_pct(rec.times, 95) * 1e3, 3),
        "decision_to_relay_ms_p50": round(statistics.median(to_relay) * 1e3, 3),
        "decision_to_relay_ms_p95": round(_pct(to_relay, 95) * 1e3, 3),
        "pulse_s_configured": pulse_s,
        "pulse_s_measured": round(highs[0], 4) if highs else None,
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gate", help="accept -> durable punch -> relay latency on mock pins (JSON)")
    p.add_argument("--n", type=int, default=200, help="accepts to time (default 200)")
    p.add_argument("--dir", help="where to put the punch database (default: the temp dir; on a board: the data dir's disk)")
    p.add_argument("--json", action="store_true", help="JSON output (the default; kept for symmetry with other benches)")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    if args.n < 1:
        from firmware_py.errors import UsageError

        raise UsageError("--n must be at least 1")
    print(json.dumps(run(args.n, directory=args.dir)))
    return 0
