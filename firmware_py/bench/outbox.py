"""`kaoclock bench outbox`: durable-enqueue latency and drain throughput against plain paho.

1. enqueue: ``n`` real punches (claims built, signed, committed with an
   fsync) through :class:`~firmware_py.punch.recorder.SignedPunchRecorder`;
   each ``record()`` call is timed: that is what the gate waits for before it
   may signal success.
2. raw: plain paho, QoS 1, the same ``n`` payloads published from memory,
   timed from the first publish to the last PUBACK.  Plain paho is
   handed all ``n`` at once; it is also measured "windowed" (never more than
   the in-flight window handed over, as the drainer does), the stricter
   baseline: ``ratio_windowed``.
3. drain: the outbox drainer publishing the same ``n`` messages from SQLite
   (a fresh copy of the filled outbox each round), timed from the start to
   the last message *deleted*.  With receipts on (the default) a real
   reference backend runs beside it: it verifies each punch, stores it in its
   database (SQLite, synced), and publishes signed receipts; the reader
   verifies each receipt and only then deletes.  ``--no-receipts`` measures the
   drainer alone (deleting on PUBACK, as before end-to-end receipts).

Raw, drain and windowed raw run interleaved for ``--rounds`` rounds and the
medians are reported, so the load of a shared machine hits them alike.

Both publishers use MQTT 5, the same broker and the same in-flight window.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from firmware_py.backend.consumer import PunchConsumer
from firmware_py.backend.registry import DeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.decision.outcome import Decision, LivenessVerdict
from firmware_py.devtools.broker import LocalBroker
from firmware_py.errors import UsageError
from firmware_py.keys.jwk import parse_public_jwk, public_jwk
from firmware_py.mqtt.link import BrokerUrl, BrokerUrlError, LinkSettings, MqttLink
from firmware_py.mqtt.receipts import verify_receipt
from firmware_py.outbox.drain import OutboxDrainer
from firmware_py.outbox.store import Outbox
from firmware_py.punch.recorder import SignedPunchRecorder
from firmware_py.telemetry.latency import percentile
from firmware_py.topics import Topics


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("outbox", help="durable enqueue latency and outbox drain rate vs plain paho QoS 1")
    p.add_argument("--n", type=int, default=10000, help="punches to enqueue and publish (default 10000)")
    p.add_argument("--broker", default=None, help="HOST:PORT of a broker to use (default: start a local mosquitto)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved raw/drain rounds; medians are reported (default 3)")
    p.add_argument("--inflight", type=int, default=20, help="QoS 1 messages in flight for both publishers (default 20, paho's default)")
    p.add_argument("--no-receipts", action="store_true", help="delete on PUBACK instead of the backend's receipt (the drainer alone)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format; accepted for symmetry)")
    p.set_defaults(func=cmd_bench_outbox)


def _decision(i: int) -> Decision:
    return Decision(
        accepted=True,
        reason="match",
        track_id=i,
        person_id=f"emp-{i % 500:04d}",
        distance=0.41,
        threshold=0.55,
        margin=0.12,
        frames=5,
        liveness=LivenessVerdict("passive", True, 0.93, 0.5),
        model_versions={"embedder": "dlib_resnet_v1-int8", "detector": "blazeface_short_range"},
    )


def _raw_paho(url: BrokerUrl, payloads: list[bytes], topic: str, inflight: int, windowed: bool = False) -> float:
    """Messages per second of plain paho QoS 1 publishing ``payloads`` from memory.

    Plain: every message handed to paho at once (paho queues what exceeds its
    in-flight limit).  ``windowed``: at most ``inflight`` handed over at a time,
    as the drainer does, which spares paho its internal queue.
    """
    acked = 0
    done = threading.Event()
    connected = threading.Event()
    window = threading.Semaphore(inflight)
    n = len(payloads)

    def on_publish(c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
        nonlocal acked
        acked += 1
        window.release()
        if acked >= n:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{time.monotonic_ns()}", protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.on_connect = lambda *a: connected.set()
    client.connect(url.host, url.port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise UsageError(f"no CONNACK from {url}")
        t0 = time.perf_counter()
        for p in payloads:
            if windowed:
                window.acquire()
            client.publish(topic, p, qos=1)
        if not done.wait(600):
            raise UsageError(f"raw paho: only {acked} of {n} acknowledged within 600 s")
        return n / (time.perf_counter() - t0)
    finally:
        client.disconnect()
        client.loop_stop()


class _PubackDeletes:
    """``--no-receipts``: every successful PUBACK counts as a receipt (what the drainer did before receipts)."""

    def __init__(self, link: MqttLink) -> None:
        self.link = link
        self.drainer: OutboxDrainer | None = None

    def wait_connected(self, timeout: float) -> int | None:
        return self.link.wait_connected(timeout)

    @property
    def generation(self) -> int | None:
        return self.link.generation

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, *, content_type: str | None = None, on_ack: Any = None) -> bool:
        msg_id = _id_of(payload)

        def acked(ok: bool, reason: str) -> None:
            # Any PUBACK, even 0x10 "no matching subscribers" (nobody subscribes in this bench): the old rule.
            if on_ack is not None:
                on_ack(True, "")
            if self.drainer is not None:
                self.drainer.confirm([msg_id])

        return self.link.publish(topic, payload, qos, retain, content_type=content_type, on_ack=acked)


def _id_of(token: bytes) -> str:
    from firmware_py.keys.jws import peek

    return str(peek(token)[1]["id"])


def _drain(url: BrokerUrl, outbox: Outbox, inflight: int, backend: Path | None, device_key: Ed25519PrivateKey, topics: Topics) -> float:
    """Messages per second from the first publish to the last deletion; ``backend``: the directory of a fresh
    reference backend whose receipts do the deleting (None: PUBACK deletes)."""
    n = outbox.depth()
    link = MqttLink(
        LinkSettings(brokers=[url], client_id=f"bench-drain-{time.monotonic_ns()}", protocol="5", clean_start=True, max_inflight=inflight + 20)
    )
    consumer = None
    if backend is None:
        transport = _PubackDeletes(link)
        drainer = OutboxDrainer(outbox, transport, window=inflight)
        transport.drainer = drainer
    else:
        backend_key = Ed25519PrivateKey.generate()
        registry = DeviceRegistry(backend / "devices")
        registry.add(topics.site, topics.device, public_jwk(device_key))
        consumer = PunchConsumer(PunchStore(backend / "punches.sqlite"), registry, receipt_key=backend_key)
        drainer = OutboxDrainer(outbox, link, window=inflight)
        trusted = {k.kid: k for k in [parse_public_jwk(public_jwk(backend_key))]}

        def on_receipt(_t: str, payload: bytes, _p: Any) -> None:
            drainer.confirm(verify_receipt(payload, trusted, topics.site, topics.device))

        link.subscribe(topics.receipts, on_receipt)
        clink = consumer.connect([str(url)], client_id=f"bench-backend-{time.monotonic_ns()}", shared=False, session_expiry_s=60)
        if clink.wait_connected(10) is None:
            raise UsageError(f"the bench backend could not connect to {url}")
    link.start()
    try:
        if link.wait_connected(10) is None:
            raise UsageError(f"the outbox link could not connect to {url}")
        t0 = time.perf_counter()
        drainer.start()
        deadline = time.monotonic() + 600
        while outbox.depth() > 0:
            if time.monotonic() > deadline:
                raise UsageError(f"drain: {outbox.depth()} of {n} messages still queued after 600 s")
            time.sleep(0.002)
        return n / (time.perf_counter() - t0)
    finally:
        drainer.stop()
        link.stop()
        if consumer is not None:
            consumer.stop()
            consumer.store.close()


def run(n: int, broker: str | None, inflight: int, workdir: Path, rounds: int = 3, receipts: bool = True) -> dict[str, Any]:
    local = None
    if broker is None:
        local = LocalBroker(workdir / "broker").start()
        url = BrokerUrl.parse(local.url)
    else:
        try:
            url = BrokerUrl.parse(broker)
        except BrokerUrlError as exc:
            raise UsageError(str(exc)) from None
    try:
        topics = Topics("bench-site", "bench-device")
        filled = workdir / "outbox.sqlite"
        outbox = Outbox(filled, capacity=max(100, n + 1))
        device_key = Ed25519PrivateKey.generate()
        recorder = SignedPunchRecorder(outbox, device_key, site="bench-site", device="bench-device", topics=topics)
        times = []
        for i in range(n):
            d = _decision(i)
            t0 = time.perf_counter()
            recorder.record(d, "in" if i % 2 == 0 else "out")
            times.append((time.perf_counter() - t0) * 1000)
        payloads = [m.payload for m in outbox.pending(0, n)]
        outbox.close()  # checkpoints the WAL: the file alone now holds the n punches
        raws, wins, drains = [], [], []
        for r in range(rounds):
            # Interleaved rounds: a shared machine's load hits all three alike.
            raws.append(_raw_paho(url, payloads, topics.punch, inflight))
            copy = workdir / f"outbox-round{r}.sqlite"
            shutil.copyfile(filled, copy)
            ob = Outbox(copy, capacity=max(100, n + 1))
            drains.append(_drain(url, ob, inflight, workdir / f"backend-round{r}" if receipts else None, device_key, topics))
            ob.close()
            wins.append(_raw_paho(url, payloads, topics.punch, inflight, windowed=True))
    finally:
        if local is not None:
            local.stop()
    raw, win, drain = statistics.median(raws), statistics.median(wins), statistics.median(drains)
    times.sort()
    return {
        "n": n,
        "drain_msgs_per_s": round(drain, 1),
        "raw_paho_msgs_per_s": round(raw, 1),
        "ratio": round(drain / raw, 3),
        "enqueue_ms_p50": round(percentile(times, 50), 3),
        "enqueue_ms_p95": round(percentile(times, 95), 3),
        "enqueue_ms_max": round(times[-1], 3),
        "enqueue_ms_mean": round(statistics.fmean(times), 3),
        "rounds": rounds,
        "drain_runs_msgs_per_s": [round(x, 1) for x in drains],
        "raw_runs_msgs_per_s": [round(x, 1) for x in raws],
        "raw_windowed_msgs_per_s": round(win, 1),
        "ratio_windowed": round(drain / win, 3),
        "inflight": inflight,
        "payload_bytes": len(payloads[0]) if payloads else 0,
        "mqtt": "5",
        "broker": "local mosquitto" if local is not None else str(url),
        "sqlite": "WAL, synchronous=FULL (enqueue), NORMAL (delivery marks)",
        "receipts": receipts,
        "deleted_on": "the backend's signed receipt (reference consumer: verify, store synced, sign)" if receipts else "PUBACK",
    }


def cmd_bench_outbox(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UsageError("--n must be at least 1")
    if not 1 <= args.rounds <= 20:
        raise UsageError("--rounds must be between 1 and 20")
    if not 1 <= args.inflight <= 1000:
        raise UsageError("--inflight must be between 1 and 1000")
    with tempfile.TemporaryDirectory(prefix="kaoclock-bench-outbox-") as tmp:
        result = run(args.n, args.broker, args.inflight, Path(tmp), args.rounds, receipts=not args.no_receipts)
    print(json.dumps(result, indent=2))
    return 0
