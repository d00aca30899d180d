"""Crash test: the publishing process is SIGKILLed at random moments while the broker restarts in between.

Every punch whose ``record()`` returned reaches the backend; after
de-duplication by id none is stored twice, and the per-device sequence
numbers arrive without a gap or a repeat.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from punching_reader import SCRIPT, collect

from firmware_py.backend.consumer import PunchConsumer
from firmware_py.backend.registry import DeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.devtools.broker import LocalBroker
from firmware_py.keys.jwk import public_jwk
from firmware_py.keys.store import backend_public_path, device_key_path, init_private_key, load_private_key
from firmware_py.outbox.store import Outbox

KILLS = 24
BROKER_RESTART_EVERY = 3


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rnd = random.Random(seed)
    home = tmp_path / "device"
    init_private_key(device_key_path(home))
    backend = tmp_path / "backend"
    registry = DeviceRegistry(backend / "devices")
    registry.add("site-a", "reader-1", public_jwk(load_private_key(device_key_path(home))))
    store = PunchStore(backend / "punches.sqlite")
    backend_key = Ed25519PrivateKey.generate()
    backend_public_path(home).write_text(json.dumps(public_jwk(backend_key)))  # the reader trusts the backend's receipts
    consumer = PunchConsumer(store, registry, receipt_key=backend_key)

    broker = LocalBroker(tmp_path / "broker", persistence=True).start()
    link = consumer.connect([broker.url], client_id="backend-soak", reconnect_min_s=0.05, reconnect_max_s=0.3)
    assert link.wait_connected(10) is not None
    script = SCRIPT
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))  # this checkout's firmware_py
    enqueued: list[str] = []
    try:
        for cycle in range(KILLS):
            child = subprocess.Popen(
                [sys.executable, str(script), str(home), broker.url, "punch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
            )
            lines: list[str] = []
            ready = threading.Event()
            reader = threading.Thread(target=collect, args=(child.stdout, lines, ready), daemon=True)
            reader.start()
            if cycle % 6 == 5:
                time.sleep(rnd.random() * 0.3)  # now and then: during start-up
            else:
                assert ready.wait(30), "the publishing process did not start"
                time.sleep(rnd.random() * 0.5)  # mostly: mid-traffic
            child.send_signal(signal.SIGKILL)
            child.wait()
            reader.join(10)
            err = child.stderr.read().decode() if child.stderr else ""
            if child.stderr:
                child.stderr.close()
            assert "Traceback" not in err, err
            enqueued += [line for line in lines if line != "READY"]
            if cycle % BROKER_RESTART_EVERY == BROKER_RESTART_EVERY - 1:
                broker.restart()  # queued messages and the backend's session survive (persistence)
        # A last, clean run drains whatever is still queued.
        done = subprocess.run([sys.executable, str(script), str(home), broker.url, "drain"], capture_output=True, text=True, timeout=90, env=env)
        assert "DRAINED" in done.stdout, (done.stdout, done.stderr[-2000:])
        deadline = time.monotonic() + 30
        while not set(enqueued) <= set(store.ids()) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        consumer.stop()
        broker.stop()

    stored = store.ids()
    missing = set(enqueued) - set(stored)
    assert len(enqueued) > 5 * KILLS, f"too few punches made it through record() ({len(enqueued)}); seed {seed}"
    assert not missing, f"{len(missing)} enqueued punches never arrived (seed {seed})"
    assert len(stored) == len(set(stored))
    assert store.rejects() == []
    seqs = sorted(r[0] for r in store.db.query("SELECT seq FROM punches"))
    assert seqs == list(range(1, len(seqs) + 1)), f"sequence has gaps or repeats (seed {seed})"
    assert Outbox(home / "outbox.sqlite").depth() == 0
    print(f"seed {seed}: {len(enqueued)} acknowledged by record(), {len(stored)} stored, {consumer.counts['duplicate']} duplicates dropped")
