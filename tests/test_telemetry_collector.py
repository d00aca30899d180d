"""Telemetry: the R14 snapshot, provider hooks, honest unknowns, the no-face alarm, clock sync from the kernel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from firmware_py.events import EventBus
from firmware_py.outbox.store import Outbox, OutMessage
from firmware_py.telemetry import system
from firmware_py.telemetry.clock import MAX_ERROR_US_SYNCED, TIME_ERROR, ClockSync, read_adjtimex
from firmware_py.telemetry.collector import TelemetryCollector, manifest_model_versions
from firmware_py.telemetry.latency import StageTimes, percentile


def test_stage_times_percentiles_and_fps() -> None:
    st = StageTimes(window=100, fps_window_s=10)
    for v in range(1, 101):
        st.record("embed", float(v))
    st.record("detect", 4.0)
    for i in range(21):
        st.frame(now=100.0 + i * 0.5)  # 2 frames per second
    snap = st.snapshot(now=110.0)
    assert snap["stages"]["embed"] == {"p50_ms": 50.5, "p95_ms": 95.05, "n": 100}
    assert snap["stages"]["detect"] == {"p50_ms": 4.0, "p95_ms": 4.0, "n": 1}
    assert snap["fps"] == 2.0
    assert st.snapshot(now=200.0)["fps"] == 0.0  # old frames fall out of the window
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    with pytest.raises(ValueError):
        percentile([], 50)


def test_snapshot_is_complete_and_honest(tmp_path: Path, contract: Any) -> None:
    bus = EventBus()
    outbox = Outbox(tmp_path / "o.sqlite", capacity=1000)
    outbox.enqueue(OutMessage("p-1", "kaoclock/v1/s/d/punch", b"t", meta={"id": "p-1", "ts": "2026-03-02T00:00:00.000Z", "seq": 7}))
    stages = StageTimes()
    stages.record("detect", 12.0)
    stages.frame()
    col = TelemetryCollector(
        site="site-a",
        device="reader-1",
        data_dir=tmp_path,
        outbox=outbox,
        bus=bus,
        providers={"pipeline": stages.snapshot, "gallery": lambda: {"version": "g-12", "size": 42}, "camera": lambda: 1 / 0},
    )
    snap = col.snapshot()
    contract.check("kaoclock/v1/site-a/reader-1/telemetry", json.dumps(snap).encode())
    assert snap["pipeline"]["stages"]["detect"]["p95_ms"] == 12.0
    assert snap["gallery"] == {"version": "g-12", "size": 42}
    assert snap["outbox"]["depth"] == 1 and snap["outbox"]["oldest_age_s"] >= 0
    assert snap["last_punch"] == {"id": "p-1", "ts": "2026-03-02T00:00:00.000Z", "seq": 7}
    assert snap["models"] == manifest_model_versions() and snap["models"]
    assert snap["camera"] is None and "ZeroDivisionError" in snap["unavailable"]["camera"]
    assert snap["link"] is None and snap["unavailable"]["link"] == "no provider wired"
    assert snap["memory"]["total_mb"] > 0 and snap["disk"]["free_mb"] > 0 and snap["uptime"]["process_s"] >= 0
    assert len(snap["cpu"]["load"]) == 3
    col.set_provider("camera", lambda: "running")  # not an object
    assert "not an object" in col.snapshot()["unavailable"]["camera"]
    with pytest.raises(ValueError, match="unknown telemetry provider"):
        col.set_provider("weather", dict)


def test_no_face_alarm_once_per_episode(tmp_path: Path) -> None:
    bus = EventBus()
    events: list[Any] = []
    bus.subscribe(events.append)
    last = {"ts": 1000.0}
    col = TelemetryCollector(
        site="s",
        device="d",
        data_dir=tmp_path,
        bus=bus,
        no_face_alarm_s=600,
        providers={"pipeline": lambda: {"fps": 5.0, "stages": {}, "last_face_ts": last["ts"]}},
    )
    col.snapshot(now=1500.0)
    assert events == []
    col.snapshot(now=1700.0)
    col.snapshot(now=1900.0)
    assert [(e.type, e.severity) for e in events] == [("camera.no_face", "warning")]
    assert events[0].data["idle_s"] == 700.0
    last["ts"] = 1950.0  # someone walked up
    col.snapshot(now=2000.0)
    col.snapshot(now=2600.0)
    assert len(events) == 2


def test_clock_sync_is_asked_of_the_kernel() -> None:
    tx = read_adjtimex()
    snap = ClockSync().snapshot()
    assert set(snap) == {"synced", "source", "max_error_ms", "detail"}
    if tx is None:  # not Linux: honest "unknown"
        assert snap["synced"] is None and snap["source"] == "unknown"
    else:
        assert snap["source"] == "adjtimex"
        assert snap["synced"] == (tx["state"] != TIME_ERROR and tx["maxerror_us"] < MAX_ERROR_US_SYNCED)


def test_cpu_temperature_from_thermal_zones(tmp_path: Path) -> None:
    assert system.cpu_temp_c(tmp_path) is None  # no sensor: null, not 0
    for i, (kind, milli) in enumerate([("acpitz", "41000"), ("cpu-thermal", "52375")]):
        zone = tmp_path / f"thermal_zone{i}"
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(milli + "\n")
    assert system.cpu_temp_c(tmp_path) == 52.4
