"""Live enrolment: frames through the reader's real front-end and embedder, gated like enrolment photos."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from firmware_py.capture.frame import Frame
from firmware_py.config import load, with_changes
from firmware_py.events import EventBus
from firmware_py.gallery.store import GalleryStore, default_paths
from firmware_py.mqtt.commands.registry import CommandContext, CommandRefused
from firmware_py.pipeline.build import build_pipeline
from firmware_py.provision.gallery_sync import GallerySync
from firmware_py.provision.live_enrol import LiveEnrolment


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = with_changes(load(None), {"device.data_dir": str(tmp_path_factory.mktemp("live")), "device.site": "hq"})
    db, key = default_paths(cfg)
    pipe, _ = build_pipeline(cfg, store=GalleryStore.open(db, key))
    return cfg, pipe


@pytest.fixture
def live(pipeline: Any, tmp_path: Path) -> tuple[LiveEnrolment, Clock, list[Any], Path]:
    _, pipe = pipeline
    db, key = tmp_path / "g.sqlite", tmp_path / "g.key"
    sync = GallerySync(lambda: GalleryStore.open(db, key), "hq", pipe.embedder.version, pipe.set_gallery)
    bus = EventBus()
    events: list[Any] = []
    bus.subscribe(events.append, "gallery.")
    clock = Clock()
    return LiveEnrolment(sync, pipe.analyzer, pipe.embedder, bus=bus, clock=clock, min_gap_s=0.2), clock, events, db


def _feed(pipe: Any, live: LiveEnrolment, clock: Clock, image: np.ndarray, i: int) -> None:
    clock.t += 0.25
    pipe.analyzer.process(Frame(image, time.time() + i * 0.25, i, "test"))
    live()


def _ctx(**args: Any) -> CommandContext:
    return CommandContext("c1", "gallery.enrol_live", args, {}, "kid", time.time())


def test_collects_good_frames_then_stores_them(pipeline: Any, live: Any, grace_hopper: np.ndarray) -> None:
    _, pipe = pipeline
    le, clock, events, db = live
    out = le.command(_ctx(person_id="e7", name="Grace Hopper", sites=["hq"], frames=3, window_s=10))
    assert out["window_open"] is True
    with pytest.raises(CommandRefused) as busy:
        le.command(_ctx(person_id="e8", name="X", sites=["hq"]))
    assert busy.value.reason == "busy"
    rng = np.random.default_rng(1)
    for i in range(3):  # a little sensor noise per frame, as a camera gives
        noisy = np.clip(grace_hopper.astype(np.int16) + rng.integers(-4, 5, grace_hopper.shape), 0, 255).astype(np.uint8)
        _feed(pipe, le, clock, noisy, i)
    # Held, not stored, until confirmed.
    assert le.window is None and le.pending is not None, le.last_outcome
    st = le.status()
    assert st["state"] == "pending" and st["templates"] == 3 and st["near_duplicate"] is None
    assert [e.type for e in events][-1] == "gallery.enrol_live_pending"
    with GalleryStore.open(db, db.with_suffix(".key"), create=False) as s:
        assert s.get_person("e7") is None and s.version == 0
    with pytest.raises(CommandRefused) as wrong:
        le.confirm("e8")
    assert wrong.value.reason == "bad_args" and le.pending is not None
    out = le.confirm("e7", by="test")
    assert out["ok"] is True and out["templates"] == 3 and le.status()["state"] == "idle"
    assert [e.type for e in events][-1] == "gallery.enrol_live_done"
    with pytest.raises(CommandRefused) as none:
        le.confirm()
    assert none.value.reason == "nothing_pending"
    with GalleryStore.open(db, db.with_suffix(".key"), create=False) as s:
        p = s.get_person("e7")
        assert len(p.templates) == 3 and {t.source for t in p.templates} == {"live"}
        assert {t.embedder_version for t in p.templates} == {pipe.embedder.version}
    assert pipe.gallery.persons == 1  # the running pipeline got the new matrix


def test_refusals_and_the_window_ending(pipeline: Any, live: Any, grace_hopper: np.ndarray, astronaut: np.ndarray) -> None:
    _, pipe = pipeline
    le, clock, events, db = live
    for bad in ({"frames": 1}, {"window_s": 500}, {"sites": []}, {"name": ""}):
        with pytest.raises(CommandRefused) as exc:
            le.command(_ctx(**({"person_id": "e9", "name": "N", "sites": ["hq"]} | bad)))
        assert exc.value.reason == "bad_args"
    # Two different people in one window: refused, nothing stored.
    le.open("e9", "Mixed", ["hq"], frames=2, window_s=10)
    _feed(pipe, le, clock, grace_hopper, 10)
    _feed(pipe, le, clock, astronaut, 11)
    assert le.last_outcome["ok"] is False and le.last_outcome["reason"] == "not_same_person"
    # A blank frame and a blurred face, then the window runs out: the reasons are reported.
    le.open("e9", "Blurred", ["hq"], frames=2, window_s=5)
    _feed(pipe, le, clock, np.full((480, 640, 3), 128, np.uint8), 20)
    _feed(pipe, le, clock, np.asarray(Image.fromarray(grace_hopper).filter(ImageFilter.GaussianBlur(4))), 21)
    clock.t += 10
    le()
    out = le.last_outcome
    assert out["ok"] is False and out["reason"] == "window_ended" and out["taken"] == 0
    assert "no_face x1" in out["refused"] and "too_blurred x1" in out["refused"]
    assert events[-1].type == "gallery.enrol_live_failed"
    assert not db.exists()  # nothing was ever stored


def test_console_enrol_over_a_pty_flags_a_near_duplicate_and_confirms(pipeline: Any, live: Any, grace_hopper: np.ndarray, tmp_path: Path) -> None:
    """The technician's `enrol` on the serial console (real pyserial on a pty), through the same window."""
    import os

    import serial
    from test_serial_console import PASS, Terminal

    from firmware_py.mqtt.event_catalogue import CATALOGUE
    from firmware_py.provision.console_enrol import enrol_command
    from firmware_py.serial.commands import ConsoleContext
    from firmware_py.serial.console import ConsoleSession, SerialConsole
    from firmware_py.serial.passphrase import LoginLimiter, PassphraseStore

    cfg, pipe = pipeline
    le, clock, events, db = live
    # Grace Hopper is already enrolled as e7; someone now tries to enrol her face as e9.
    le.open("e7", "Grace Hopper", ["hq"], frames=2, window_s=10)
    for i in range(2):
        _feed(pipe, le, clock, grace_hopper, i)
    le.confirm("e7")

    PassphraseStore(tmp_path).set(PASS)
    ctx = ConsoleContext(version="test", get_config=lambda: cfg)
    master, slave = os.openpty()

    def session(write: Any) -> ConsoleSession:
        s = ConsoleSession(ctx, write, passphrases=PassphraseStore(tmp_path), limiter=LoginLimiter(tmp_path))
        s.registry.add(enrol_command(le))
        return s

    con = SerialConsole(lambda: serial.Serial(os.ttyname(slave), 115200, timeout=0.05), session)
    con.start()
    term = Terminal(master)
    try:
        term.read_until(b"passphrase: ")
        term.cmd(PASS)
        out = term.cmd('enrol start e9 "Not Grace" hq 2 10')
        assert "enrolment window open for e9 (Not Grace): 2 good frames within 10 s" in out
        assert "refused (busy)" in term.cmd('enrol start e10 "Other"')
        assert "state: collecting" in term.cmd("enrol status")
        assert "error: FRAMES must be from 2 to 10" in term.cmd('enrol start e11 "X" hq 50')
        for i in range(2):
            _feed(pipe, le, clock, grace_hopper, 10 + i)
        out = term.cmd("enrol status")
        assert "state: pending" in out and '"person_id": "e7"' in out, out  # flagged: looks like e7
        assert "refused (bad_args)" in term.cmd("enrol confirm e8")
        assert "discarded the enrolment of e9" in term.cmd("enrol cancel")
        assert "nothing to cancel" in term.cmd("enrol cancel")
        with GalleryStore.open(db, db.with_suffix(".key"), create=False) as s:
            assert s.get_person("e9") is None

        # Again, confirmed this time: the technician decides twins are possible.
        term.cmd('enrol start e9 "Twin" hq 2 10')
        for i in range(2):
            _feed(pipe, le, clock, grace_hopper, 20 + i)
        out = term.cmd("enrol confirm e9")
        assert "stored 2 templates for e9" in out, out
        with GalleryStore.open(db, db.with_suffix(".key"), create=False) as s:
            assert len(s.get_person("e9").templates) == 2

        # A candidate nobody confirms is discarded when its time runs out.
        term.cmd('enrol start e12 "Late" hq 2 10')
        for i in range(2):
            _feed(pipe, le, clock, grace_hopper, 30 + i)
        assert "state: pending" in term.cmd("enrol status")
        clock.t += 121
        out = term.cmd("enrol status")
        assert "state: idle" in out and "not_confirmed" in out, out
    finally:
        con.stop()
        os.close(master)
        os.close(slave)
    pending = [e for e in events if e.type == "gallery.enrol_live_pending"]
    assert pending[1].severity == "warning" and pending[1].data["near_duplicate"]["person_id"] == "e7"
    assert [e.data["reason"] for e in events if e.type == "gallery.enrol_live_discarded"] == ["cancelled", "not_confirmed"]
    assert {e.type for e in events} <= set(CATALOGUE)
    with GalleryStore.open(db, db.with_suffix(".key"), create=False) as s:
        assert s.get_person("e12") is None
