"""Chaos, bounded: 50 random faults while punches are recorded, end to end through receipts.

A reader process records punches (signed, durable in its outbox, printed only
after ``record()`` returned) and drains them to a real mosquitto; the
reference backend (`kaoclock backend consume`, group commit, signed receipts)
stores them.  In random order: the reader is SIGKILLed and restarted, the
broker is SIGKILLed (losing its in-memory sessions and queue) and restarted,
the backend's session is expired (consumer down, session wiped by a clean
start), the consumer is SIGKILLed and restarted.

After every fault the reader's outbox is compared with the backend's
database: a punch missing from the outbox must already be in the database
(nothing deleted before its receipt).  At the end every recorded punch is in
the database exactly once (by id), the per-device sequence has no gap, and
nothing was rejected.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from punching_reader import SCRIPT, collect

from firmware_py.backend.home import BackendHome
from firmware_py.backend.registry import DeviceRegistry
from firmware_py.devtools.broker import LocalBroker
from firmware_py.keys.jwk import public_jwk
from firmware_py.keys.store import backend_public_path, device_key_path, init_private_key, load_private_key

CYCLES = 50
REPO = Path(__file__).resolve().parents[1]
CONSUMER_ID = "chaos-backend"
# The reader gives up waiting for a receipt quickly, so a lost one is resent within the test.
RECEIPT_TIMING = json.dumps({"outbox.receipt_timeout_s": 0.5, "outbox.resend_max_s": 1.0})


class Rig:
    def __init__(self, tmp: Path, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
        self.home = tmp / "reader"
        init_private_key(device_key_path(self.home))
        self.bhome = BackendHome(tmp / "backend")
        subprocess.run(
            [sys.executable, "-m", "firmware_py", "backend", "init", "--home", str(self.bhome.root)], check=True, env=self.env, capture_output=True
        )
        DeviceRegistry(self.bhome.devices_dir).add("site-a", "reader-1", public_jwk(load_private_key(device_key_path(self.home))))
        backend_public_path(self.home).write_text(json.dumps(public_jwk(load_private_key(self.bhome.key_file))))
        self.script = SCRIPT
        self.broker = LocalBroker(tmp / "broker", persistence=True).start()
        self.recorded: list[str] = []
        self.reader: subprocess.Popen[bytes] | None = None
        self.consumer: subprocess.Popen[bytes] | None = None
        self.faults: list[str] = []

    # ------------------------------------------------------------ processes

    def start_reader(self) -> None:
        self.reader = subprocess.Popen(
            [sys.executable, str(self.script), str(self.home), self.broker.url, "punch", "--config", RECEIPT_TIMING, "--pause", "0.01", "0.03"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )
        self._ready = threading.Event()
        self._lines: list[str] = []
        self._thread = threading.Thread(target=collect, args=(self.reader.stdout, self._lines, self._ready), daemon=True)
        self._thread.start()

    def kill_reader(self) -> None:
        assert self.reader is not None
        self.reader.send_signal(signal.SIGKILL)
        self.reader.wait()
        self._thread.join(10)
        self.recorded += self._lines
        self.reader = None

    def start_consumer(self) -> None:
        argv = ["backend", "consume", "--home", str(self.bhome.root), "--broker", self.broker.url, "--client-id", CONSUMER_ID, "--quiet"]
        self.consumer = subprocess.Popen(
            [sys.executable, "-m", "firmware_py", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env
        )

    def kill_consumer(self) -> None:
        assert self.consumer is not None
        self.consumer.send_signal(signal.SIGKILL)
        self.consumer.wait()
        self.consumer = None

    def kill_broker(self) -> None:
        proc = self.broker._proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)  # no chance to save sessions or queued messages
        proc.wait()
        self.broker.stop()
        self.broker.start()

    def expire_backend_session(self) -> None:
        """The consumer is away long enough for its session to expire: wiped with a clean start and expiry 0."""
        self.kill_consumer()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=CONSUMER_ID, protocol=MQTTProtocolVersion.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        done = threading.Event()
        c.on_connect = lambda *a: done.set()
        try:
            c.connect("127.0.0.1", self.broker.port, clean_start=True, properties=props)
            c.loop_start()
            done.wait(5)
            c.disconnect()
            c.loop_stop()
        except OSError:
            pass  # the broker is restarting: its sessions are gone anyway
        time.sleep(self.rnd.random() * 0.5)  # punches published now reach nobody (PUBACK 0x10)
        self.start_consumer()

    # ------------------------------------------------------------ checks

    def stored(self) -> set[str]:
        if not self.bhome.db_file.exists():
            return set()
        db = sqlite3.connect(self.bhome.db_file, timeout=10)
        try:
            return {r[0] for r in db.execute("SELECT id FROM punches")}
        except sqlite3.OperationalError:  # the consumer has not created its tables yet
            return set()
        finally:
            db.close()

    def outbox_ids(self) -> set[str]:
        path = self.home / "outbox.sqlite"
        if not path.exists():
            return set()
        db = sqlite3.connect(path, timeout=10)
        try:
            return {r[0] for r in db.execute("SELECT id FROM messages")}
        finally:
            db.close()

    def check_nothing_deleted_early(self, where: str) -> None:
        # Read the outbox first: the database only grows, so a later read can only hold more.
        waiting = self.outbox_ids()
        stored = self.stored()
        gone = set(self.recorded) - waiting
        early = gone - stored
        assert not early, f"{len(early)} punches left the reader before the backend stored them ({where})"


def test_chaos_every_punch_stored_exactly_once_none_deleted_before_its_receipt(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rig = Rig(tmp_path, seed)
    rig.start_consumer()
    rig.start_reader()
    try:
        assert rig._ready.wait(30), "the reader did not start"
        for cycle in range(CYCLES):
            time.sleep(0.1 + rig.rnd.random() * 0.4)
            fault = rig.rnd.choice(["reader", "reader", "broker", "session", "consumer"])
            rig.faults.append(fault)
            if fault == "reader":
                rig.kill_reader()
                rig.check_nothing_deleted_early(f"cycle {cycle}, seed {seed}")
                rig.start_reader()
            elif fault == "broker":
                rig.kill_broker()
            elif fault == "session":
                rig.expire_backend_session()
            else:
                rig.kill_consumer()
                rig.start_consumer()
        rig.kill_reader()
        rig.check_nothing_deleted_early(f"end, seed {seed}")
        # Calm: a clean reader run drains whatever waits, through receipts.
        done = subprocess.run(
            [sys.executable, str(rig.script), str(rig.home), rig.broker.url, "drain", "--config", RECEIPT_TIMING],
            capture_output=True,
            text=True,
            timeout=90,
            env=rig.env,
        )
        assert "DRAINED" in done.stdout, (seed, done.stdout, done.stderr[-2000:])
    finally:
        for proc in (rig.reader, rig.consumer):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        rig.broker.stop()

    db = sqlite3.connect(rig.bhome.db_file)
    rows = db.execute("SELECT id, seq FROM punches").fetchall()
    rejects = db.execute("SELECT reason FROM rejects").fetchall()
    db.close()
    ids = [r[0] for r in rows]
    assert len(rig.recorded) > 2 * CYCLES, f"too few punches recorded ({len(rig.recorded)}); seed {seed}"
    assert len(set(rig.faults)) == 4, rig.faults  # every kind of fault happened
    assert set(rig.recorded) <= set(ids), f"{len(set(rig.recorded) - set(ids))} recorded punches never stored; seed {seed}"
    assert len(ids) == len(set(ids))  # exactly once by id
    seqs = sorted(r[1] for r in rows)
    assert seqs == list(range(1, len(seqs) + 1)), f"sequence gaps or repeats; seed {seed}"
    assert rejects == [], rejects
    print(f"seed {seed}: {len(rig.recorded)} recorded, {len(ids)} stored, faults {dict(Counter(rig.faults))}")
