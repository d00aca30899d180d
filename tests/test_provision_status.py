"""`kaoclock status` on a real data dir: provisioned, one person enrolled, punches queued, daemon heartbeat."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from firmware_py.cli.main import main
from firmware_py.config import load
from firmware_py.gallery.store import Person, Template, open_from_config
from firmware_py.outbox.store import Outbox, OutMessage
from firmware_py.service.heartbeat import Heartbeat, heartbeat_path


def _status(cfg_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    capsys.readouterr()
    assert main(["status", "--config", str(cfg_path), *extra]) == 0
    return capsys.readouterr().out


def test_status_reports_a_real_reader(tmp_path: Path, grace_hopper_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = tmp_path / "kaoclock.toml"
    argv = ["provision", "--device-id", "gate-01", "--site", "hq", "--broker", "mqtt://127.0.0.1:1883"]
    assert main([*argv, "--config-out", str(cfg_path), "--data-dir", str(tmp_path / "data")]) == 0

    # Fresh reader: nothing enrolled, no outbox, no daemon; each said, not guessed.
    snap = json.loads(_status(cfg_path, capsys, "--json"))
    assert (snap["site"], snap["device"]) == ("hq", "gate-01")
    assert snap["gallery"] is None and "no gallery" in snap["unavailable"]["gallery"]
    assert snap["outbox"] is None and snap["daemon"] is None
    assert snap["models"] and snap["disk"]["free_mb"] > 0 and snap["memory"]["total_mb"] > 0
    assert snap["clock"]["synced"] in (True, False, None)
    assert not (tmp_path / "data" / "gallery.sqlite").exists()  # status creates nothing

    assert main(["enroll", "--config", str(cfg_path), "--person", "e7", "--name", "Grace Hopper", str(grace_hopper_path)]) == 0
    cfg = load(cfg_path)
    ob = Outbox.from_config(cfg)
    for i in range(3):
        ob.enqueue(OutMessage(f"p{i}", "kaoclock/v1/hq/gate-01/punch", b"x", meta={"id": f"p{i}"}))
    ob.close()
    Heartbeat(heartbeat_path(cfg.device.data_dir)).write(frames=420, last_frame_age=0.07, stalled=False, status="processing")

    snap = json.loads(_status(cfg_path, capsys, "--json"))
    g = snap["gallery"]
    assert (g["size"], g["site_size"], g["templates"], g["version"]) == (1, 1, 1, "1")
    assert g["needs_resync"] is False and g["embedder_version"] in g["template_versions"]
    assert snap["outbox"]["depth"] == 3
    assert snap["daemon"]["frames"] == 420 and snap["camera"]["state"] == "running"

    # A template of another embedder is reported as needing a re-sync, and told to the technician.
    with open_from_config(cfg, create=False) as store:
        store.upsert_person(Person("e8", "Old Template", ("hq",), (Template(np.zeros(128, np.float32), "dlib-old-float"),)))
    text = _status(cfg_path, capsys)
    assert "daemon   running: pid" in text and "420 frames" in text
    assert "gallery  v2 2 people" in text and "1 templates of another embedder: RE-SYNC" in text
    assert "outbox   3/" in text
    heartbeat_path(cfg.device.data_dir).unlink()
    assert "daemon   not running" in _status(cfg_path, capsys)
