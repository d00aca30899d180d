"""The daemon loop on the real replay camera: services, events, clean SIGTERM, model mismatch."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from firmware_py.config import load, with_changes
from firmware_py.events import EventBus
from firmware_py.gallery.store import Person, Template, open_from_config


@pytest.fixture(scope="module")
def walkup(tmp_path_factory, models_dir) -> Path:
    """The demo's walk-up frames (Grace Hopper, the astronaut, Grace Hopper) as an image folder."""
    from firmware_py.demo import write_walkup
    from firmware_py.demo_assets import ensure_demo_assets
    from firmware_py.pipeline.build import build_analyzer

    folder = tmp_path_factory.mktemp("walkup")
    write_walkup(folder, ensure_demo_assets(models_dir), build_analyzer(load(None), enrolment=True))
    return folder


def _cfg(walkup: Path, **extra):
    # The walk-up is synthesised from a still photo, which liveness (passive by default) rightly refuses.
    changes = {"camera.source": str(walkup), "camera.replay_realtime": False, "camera.fps": 10.0, "liveness.policy": "off"}
    return with_changes(load(None), {**changes, **extra})


class Recorder:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def start(self) -> None:
        self.log.append(f"start {self.name}")

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")


def test_sigterm_stops_the_loop_cleanly_and_services_stop_in_reverse(walkup, models_dir, grace_hopper_path):
    from firmware_py.capture.factory import latest_frame_from_config
    from firmware_py.gallery.enrol import enrol_photos
    from firmware_py.pipeline.build import build_analyzer, build_pipeline
    from firmware_py.pipeline.daemon import Daemon
    from firmware_py.vision.embedding import load_embedder

    cfg = _cfg(walkup, **{"camera.replay_loop": True, "camera.replay_realtime": True})
    embedder = load_embedder(cfg)
    with open_from_config(cfg) as store:
        enrol_photos(store, build_analyzer(cfg, enrolment=True), embedder, "grace", "Grace Hopper", [cfg.device.site], [grace_hopper_path])
        bus = EventBus()
        events: list[str] = []
        bus.subscribe(lambda e: events.append(e.type))
        pipeline, _ = build_pipeline(cfg, store=store, embedder=embedder, bus=bus)
        calls: list[str] = []
        decisions = []

        class Sink:
            def on_decision(self, d):
                decisions.append(d)
                if d.accepted:  # first accept: the technician stops the service
                    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()

        daemon = Daemon(latest_frame_from_config(cfg, bus), pipeline, [Sink()], [Recorder(calls, "mqtt"), Recorder(calls, "gpio")], bus=bus)
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            daemon.install_signal_handlers()
            watchdog = threading.Timer(60, daemon.stop)  # never hang the suite
            watchdog.start()
            frames = daemon.run()
            watchdog.cancel()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    assert decisions and decisions[0].accepted and decisions[0].person_id == "grace"
    assert frames > 0
    assert calls == ["start mqtt", "start gpio", "stop gpio", "stop mqtt"]
    assert events[0] == "daemon.started" and events[-1] == "daemon.stopped"
    assert "decision.accept" in events


def test_templates_of_another_embedder_give_model_mismatch(walkup, models_dir, grace_hopper):
    import numpy as np

    from firmware_py.capture.factory import latest_frame_from_config
    from firmware_py.pipeline.build import build_pipeline
    from firmware_py.pipeline.daemon import Daemon
    from firmware_py.vision.embedding import load_embedder

    cfg = _cfg(walkup)
    embedder = load_embedder(cfg)
    with open_from_config(cfg) as store:
        old = Template(np.full(128, 0.05, np.float32), "an-older-embedder-v0", "old.jpg")
        store.upsert_person(Person("grace", "Grace Hopper", (cfg.device.site,), (old,)))
        bus = EventBus()
        events = []
        bus.subscribe(events.append)
        pipeline, _ = build_pipeline(cfg, store=store, embedder=embedder, bus=bus)
        decisions = []

        class Sink:
            def on_decision(self, d):
                decisions.append(d)

        Daemon(latest_frame_from_config(cfg, bus), pipeline, [Sink()], bus=bus).run()
    assert decisions and {d.reason for d in decisions} == {"model_mismatch"}
    assert "re-enrol" in decisions[0].detail
    mm = [e for e in events if e.type == "gallery.model_mismatch"]
    assert mm and mm[0].severity == "warning" and mm[0].data["mismatched"] == 1
