"""`kaoclock bench outbox` runs end to end against a mosquitto it starts and prints the agreed JSON fields."""

from __future__ import annotations

import json

import pytest

from firmware_py.cli.main import main


def test_bench_outbox_prints_its_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "outbox", "--n", "60", "--rounds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("n", "drain_msgs_per_s", "raw_paho_msgs_per_s", "ratio", "enqueue_ms_p50", "enqueue_ms_p95"):
        assert key in out
    assert out["receipts"] is True and out["deleted_on"].startswith("the backend's signed receipt")
    assert out["n"] == 60 and out["drain_msgs_per_s"] > 0 and out["raw_paho_msgs_per_s"] > 0
    assert out["ratio"] == pytest.approx(out["drain_msgs_per_s"] / out["raw_paho_msgs_per_s"], rel=0.01)
    assert 0 < out["enqueue_ms_p50"] <= out["enqueue_ms_p95"] <= out["enqueue_ms_max"]
    assert main(["bench", "outbox", "--n", "0"]) == 2
