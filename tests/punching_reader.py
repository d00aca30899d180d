"""A reader process for the crash and chaos tests: the real punch path (recorder, outbox, DeviceLink) in its own process.

Run by path, so a test can SIGKILL it at any moment:

    python tests/punching_reader.py HOME BROKER_URL punch|drain [--config JSON] [--pause MIN SPAN]

``punch`` records accepted decisions one after another and prints each punch
id only after ``record()`` returned (the punch is durable); ``drain`` waits up
to 60 s for the outbox to empty and prints ``DRAINED`` or ``LEFT n``.  Both
print ``READY`` once the link is started.  ``--config`` adds config changes
(a JSON object of dotted keys); ``--pause`` sleeps MIN + random * SPAN
seconds between punches.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from pathlib import Path
from typing import IO

SCRIPT = Path(__file__).resolve()


def collect(stream: IO[bytes], lines: list[str], ready: threading.Event) -> None:
    """Read a reader's stdout: set ``ready`` at READY, append every other line."""
    for raw in stream:
        line = raw.decode().strip()
        if line == "READY":
            ready.set()
        elif line:
            lines.append(line)
    stream.close()


def main() -> None:
    from firmware_py.compose.punch_path import recorder_from_config
    from firmware_py.config import load, with_changes
    from firmware_py.decision.outcome import Decision
    from firmware_py.events import EventBus
    from firmware_py.mqtt.device_link import DeviceLink
    from firmware_py.outbox.store import Outbox

    p = argparse.ArgumentParser()
    p.add_argument("home")
    p.add_argument("url")
    p.add_argument("mode", choices=["punch", "drain"])
    p.add_argument("--config", default="{}")
    p.add_argument("--pause", nargs=2, type=float, default=[0.0, 0.01])
    args = p.parse_args()
    changes = {
        "device.data_dir": args.home,
        "device.site": "site-a",
        "device.id": "reader-1",
        "mqtt.enabled": True,
        "mqtt.brokers": [args.url],
        "mqtt.max_inflight": 10,
        "mqtt.reconnect_min_s": 0.05,
        "mqtt.reconnect_max_s": 0.3,
        "telemetry.interval_s": 3600,
    }
    cfg = with_changes(load(None), changes | json.loads(args.config))
    bus = EventBus()
    outbox = Outbox.from_config(cfg, bus)
    recorder = recorder_from_config(cfg, bus, outbox)
    link = DeviceLink.from_config(cfg, bus, outbox=outbox)
    link.start()
    print("READY", flush=True)
    if args.mode == "punch":
        rnd = random.Random()
        pause_min, pause_span = args.pause
        for i in range(100000):  # walk-ups: one accepted decision after another
            d = Decision(True, "match", i, person_id=f"emp-{i % 7}", distance=0.4, threshold=0.55)
            pid = recorder.record(d, "in" if i % 2 == 0 else "out")
            print(pid, flush=True)  # only after record() returned: the punch is durable
            time.sleep(pause_min + rnd.random() * pause_span)
    else:
        deadline = time.monotonic() + 60
        while outbox.depth() > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        link.stop()
        print("DRAINED" if outbox.depth() == 0 else f"LEFT {outbox.depth()}", flush=True)


if __name__ == "__main__":
    main()
