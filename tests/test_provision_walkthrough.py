"""The technician's walk-through, as commands: provision -> register at the backend -> run -> enrol live
by a signed command, confirmed -> the punch arrives at the backend.  Every step is the real CLI in its own process,
over a real mosquitto; only the camera is a replayed walk-up (the Pi camera is not on this machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from firmware_py.config import load


@pytest.fixture(scope="module")
def walkup(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Path:
    from firmware_py.demo import write_walkup
    from firmware_py.demo_assets import ensure_demo_assets
    from firmware_py.pipeline.build import build_analyzer

    folder = tmp_path_factory.mktemp("walkup")
    write_walkup(folder, ensure_demo_assets(models_dir), build_analyzer(load(None), enrolment=True))
    return folder


def kc(*argv: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "firmware_py", *argv], input=stdin, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


def test_bring_up_to_first_punch(tmp_path: Path, mosquitto, walkup: Path, grace_hopper_path: Path) -> None:
    bhome, data, cfg = tmp_path / "backend", tmp_path / "reader", tmp_path / "kaoclock.toml"
    # Live enrolment enrols whoever stands at the reader: only Grace Hopper's walk-up (the last 30 frames) is replayed.
    grace = tmp_path / "grace_walkup"
    grace.mkdir()
    for f in sorted(walkup.iterdir())[60:]:
        (grace / f.name).write_bytes(f.read_bytes())
    url = mosquitto.url
    # At the backend: its command-signing key, exported for the reader.
    assert kc("backend", "init", "--home", str(bhome)).returncode == 0
    out = kc("backend", "key", "--jwk", "--home", str(bhome)).stdout
    (tmp_path / "backend.jwk").write_text(out[out.index("{") :])
    # At the reader: provision.
    argv = ["provision", "--device-id", "gate-01", "--site", "hq", "--broker", url, "--config-out", str(cfg), "--data-dir", str(data)]
    r = kc(*argv, "--backend-key", str(tmp_path / "backend.jwk"), "--passphrase-stdin", "--json", stdin="technician-pass-1\n")
    assert r.returncode == 0, r.stderr
    reg = json.loads(r.stdout)
    # At the backend: register the reader's public key.
    r = kc("backend", "devices", "add", "hq", "gate-01", str(data / "keys" / "device.jwk"), "--home", str(bhome))
    assert r.returncode == 0 and "registered hq/gate-01" in r.stdout, r.stderr
    listed = kc("backend", "devices", "list", "--home", str(bhome)).stdout
    assert reg["kid"] in listed
    # This machine has no GPIO header: mock pins; the camera is a looping replay of a walk-up
    # synthesised from a still photo, which liveness rightly refuses: off for this walk-through.
    with cfg.open("a") as f:
        f.write('\n[gpio]\npin_factory = "mock"\n\n[camera]\nreplay_loop = true\n\n[liveness]\npolicy = "off"\n')
    assert kc("config", "check", str(cfg)).returncode == 0

    consumer = subprocess.Popen(
        [sys.executable, "-m", "firmware_py", "backend", "consume", "--home", str(bhome), "--broker", url, "--count", "1", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The backend must be subscribed before the first punch is published (a plain consumer keeps no session).
    assert "consuming punches" in consumer.stderr.readline()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "firmware_py", "run", "--config", str(cfg), "--source", str(grace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = [daemon.stdout.readline() for _ in range(10)]
        assert any("gate-01 at hq: 0 person(s)" in line for line in lines), lines
        time.sleep(2)  # let the reader connect and subscribe to its commands
        args = json.dumps({"person_id": "e7", "name": "Grace Hopper", "sites": ["hq"], "frames": 3, "window_s": 60})
        r = kc("backend", "command", "hq", "gate-01", "gallery.enrol_live", "--args", args, "--home", str(bhome), "--broker", url, "--wait", "20")
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["result"]["window_open"] is True
        # The candidate is held until the technician confirms it (after a look at the pending result).
        backend = ("--home", str(bhome), "--broker", url, "--wait", "20")
        for _ in range(30):
            r = kc("backend", "command", "hq", "gate-01", "gallery.enrol_live_status", *backend)
            status = json.loads(r.stdout)["result"]
            if status["state"] != "collecting":
                break
            time.sleep(1)
        assert status["state"] == "pending" and status["templates"] == 3 and status["near_duplicate"] is None, status
        r = kc("backend", "command", "hq", "gate-01", "gallery.enrol_live_confirm", "--args", '{"person_id": "e7"}', *backend)
        assert json.loads(r.stdout)["result"]["templates"] == 3, r.stdout + r.stderr
        try:
            consumer.wait(timeout=60)  # the first punch, verified and stored by the backend
        except subprocess.TimeoutExpired:
            daemon.terminate()
            pytest.fail("no punch reached the backend; the reader said:\n" + daemon.communicate(timeout=30)[0][-6000:])
        assert consumer.returncode == 0, consumer.stderr.read()
        status = json.loads(kc("status", "--config", str(cfg), "--json").stdout)
        assert status["daemon"]["frames"] > 0 and status["gallery"]["size"] == 1 and status["gallery"]["templates"] == 3
    finally:
        daemon.terminate()
        rest = daemon.communicate(timeout=30)[0]
        if consumer.poll() is None:
            consumer.kill()
    assert "PUNCH" in rest
    day = datetime.now().astimezone().strftime("%Y-%m-%d")
    table = kc("backend", "attendance", "--date", day, "--tz", "UTC", "--home", str(bhome)).stdout
    table += kc("backend", "attendance", "--date", datetime.now(UTC).strftime("%Y-%m-%d"), "--tz", "UTC", "--home", str(bhome)).stdout
    assert "e7" in table, table
    # The person enrolled live is recognised from her own portrait.
    r = kc("snapshot", "--config", str(cfg), "--source", str(grace_hopper_path), "--annotate", str(tmp_path / "check.png"), "--json")
    (face,) = json.loads(r.stdout)["faces"]
    assert face["verdict"] == "match" and face["person_id"] == "e7", face
