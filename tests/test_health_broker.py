"""Health means the reader can do its job: the post-update check reaches the broker with the device's credentials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lifecycle_support import Reader, make_reader

from firmware_py.config import load
from firmware_py.devtools.broker import Capture, LocalBroker, free_port
from firmware_py.gallery.store import open_from_config
from firmware_py.service.health import run_health


def write_cfg(path: Path, data: Path, broker: str) -> Path:
    path.write_text(
        f'[device]\nid = "gate-1"\nsite = "hq"\ndata_dir = "{data}"\n\n[camera]\nbackend = "replay"\nsource = "{data / "none"}"\n\n'
        f'[mqtt]\nenabled = true\nbrokers = ["{broker}"]\nconnect_timeout_s = 2.0\n'
    )
    return path


def broker_check(report: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["name"] == "broker_or_outbox")


def test_health_publishes_a_status_and_needs_its_puback(tmp_path: Path, mosquitto: LocalBroker, contract: Any) -> None:
    cfg_path = write_cfg(tmp_path / "ok.toml", tmp_path / "data", mosquitto.url)
    open_from_config(load(cfg_path), create=True).close()  # a reader with an (empty) gallery
    cap = Capture(mosquitto.url)
    report = run_health(cfg_path, frames=1, frame_timeout=1)
    check = broker_check(report)
    assert check["status"] == "ok" and "PUBACK" in check["detail"] and "outbox opens" in check["detail"], check
    assert "gallery opens (version 0, 0 person(s))" in check["detail"]
    (topic, payload, retained) = cap.wait_for(lambda m: any(t.endswith("/status") for t, _, _ in m))[0]
    status = contract.check(topic, payload)
    assert status["reason"] == "health_check" and not retained  # the daemon's retained status is left alone
    cap.close()


def test_health_fails_when_the_broker_is_dead(tmp_path: Path) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    report = run_health(write_cfg(tmp_path / "dead.toml", tmp_path / "data", dead), frames=1, frame_timeout=1)
    check = broker_check(report)
    assert check["status"] == "fail" and not check["permanent"] and "no broker" in check["detail"], check
    assert report["ok"] is False


@pytest.fixture
def reader(tmp_path: Path, grace_hopper_path: Path) -> Reader:
    return make_reader(tmp_path / "reader", grace_hopper_path)


def test_a_release_that_cannot_reach_the_broker_is_rolled_back(reader: Reader, mosquitto: LocalBroker) -> None:
    reader.config.write_text(reader.config.read_text() + f'\n[mqtt]\nenabled = true\nbrokers = ["{mosquitto.url}"]\nconnect_timeout_s = 1.0\n')

    def broken_link(tree: Path) -> None:  # the new release dials a port nothing listens on
        link = tree / "firmware_py" / "mqtt" / "link.py"
        text = link.read_text()
        assert "return cls(parts.hostname, port, tls)" in text
        link.write_text(text.replace("return cls(parts.hostname, port, tls)", "return cls(parts.hostname, 1, tls)"))

    outcome = reader.updater(health_deadline=4.0, retry_interval=0.5).apply(reader.bundle("0.2.0", broken_link))
    assert outcome.action == "rolled-back", outcome
    assert "broker_or_outbox" in outcome.detail and not outcome.health.permanent
    assert reader.link("current") == "a"
    run = reader.kaoclock("health", "--json")  # the release rolled back to reaches the broker
    assert run.returncode == 0, run.stdout + run.stderr
    assert broker_check(json.loads(run.stdout))["status"] == "ok"
