"""The serial card reader over a real pty: good frames, garbage, over-long lines, repeats; then end to end to the relay."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
import serial
from gpiozero.pins.mock import MockFactory

from firmware_py.cli.main import main
from firmware_py.compose.gate_edge import GateEdge
from firmware_py.config import Config, with_changes
from firmware_py.decision.outcome import Decision, Direction
from firmware_py.events import Event, EventBus
from firmware_py.gate.card_store import CARD_DB, CardStore
from firmware_py.serial.card_reader import CardFrames, SerialCardReader


def wait_for(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.02)
    return cond()


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_frames_garbage_and_repeats_over_a_pty(pty_pair) -> None:
    master, path = pty_pair
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    cards: list[str] = []
    frames = CardFrames(cards.append, pattern="[0-9A-F]{4,20}", max_frame_bytes=32, repeat_s=1.0, bus=bus)
    reader = SerialCardReader(lambda: serial.Serial(path, 9600, timeout=0.05), frames, bus)
    reader.start()
    try:
        assert wait_for(lambda: reader.service.connected)
        os.write(master, b"0012345678\r\n")  # a Wiegand converter's decimal number
        os.write(master, b"0012345678\r\n")  # the same card again at once: the reader repeating itself
        os.write(master, b"\x0212ab34cd\x03\r\n")  # STX ... ETX framing, lower-case hex
        os.write(master, b"\xff\xfe\x00\x81\r\n")  # line noise / wrong baud rate
        os.write(master, b"9" * 500 + b"\r\n")  # an over-long line
        os.write(master, b"hello!\r\n")  # text of the wrong shape
        os.write(master, b"\r\n\r\n")  # bare line ends: ignored, not bad
        os.write(master, b"  CAFE01  \n")
        assert wait_for(lambda: len(cards) >= 3 and frames.bad >= 3)
        time.sleep(0.2)
        assert cards == ["0012345678", "12AB34CD", "CAFE01"]
        assert frames.bad == 3 and frames.good == 3
        bad = [e for e in events if e.type == "card.bad_frame"]
        assert 1 <= len(bad) <= 3 and bad[0].severity == "warning"  # reported, rate-limited
        assert reader.status() == {"connected": True, "cards_read": 3, "bad_frames": 3}
    finally:
        reader.stop()


def test_missing_device_is_retried_and_reported(tmp_path: Path) -> None:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    cfg = with_changes(Config(), {"card_reader.device": str(tmp_path / "ttyUSB9")})
    reader = SerialCardReader.from_config(cfg, bus, lambda c: None)
    reader.start()
    try:
        assert wait_for(lambda: any(e.type == "card_reader.port_lost" for e in events))
        msg = next(e for e in events if e.type == "card_reader.port_lost").data["error"]
        assert "card_reader.device" in msg and "ttyUSB9" in msg and "dialout" in msg
    finally:
        reader.stop()


class Recorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE punches (person TEXT, direction TEXT, method TEXT)")

    def record(self, decision: Decision, direction: Direction) -> str:
        with sqlite3.connect(self.path) as db:
            db.execute("INSERT INTO punches VALUES (?, ?, ?)", (decision.person_id, direction, decision.method))
        return "ok"

    def rows(self) -> list[tuple]:
        with sqlite3.connect(self.path) as db:
            return db.execute("SELECT * FROM punches").fetchall()


def test_card_fallback_end_to_end_from_serial_to_relay(pty_pair, tmp_path: Path, capsys) -> None:
    master, path = pty_pair
    cfg_file = tmp_path / "k.toml"
    cfg_file.write_text(f'[device]\ndata_dir = "{tmp_path}"\n[card_reader]\ndevice = "{path}"\npolicy = "card-fallback"\nfallback_after = 1\n')
    # The technician registers the card with the CLI.
    assert main(["card", "add", "0012345678", "p-007", "--config", str(cfg_file)]) == 0
    assert main(["card", "list", "--config", str(cfg_file)]) == 0
    listing = capsys.readouterr().out
    assert "******5678" in listing and "p-007" in listing and "0012345678" not in listing
    assert CardStore(tmp_path / CARD_DB).person_for("0012345678") == "p-007"

    cfg = with_changes(
        Config(),
        {
            "device.data_dir": str(tmp_path),
            "card_reader.device": path,
            "card_reader.policy": "card-fallback",
            "card_reader.fallback_after": 1,
            "door.pulse_s": 0.3,
        },
    )
    bus = EventBus()
    rec = Recorder(tmp_path / "punches.sqlite")
    edge = GateEdge.from_config(cfg, bus, rec, pin_factory=MockFactory(revision="c03114"))
    edge.devices.door_contact.pin.drive_low()
    edge.devices.tamper.pin.drive_low()
    edge.start()
    try:
        assert wait_for(lambda: edge.card_reader.service.connected)
        edge.controller.on_decision(Decision(accepted=False, reason="unknown", track_id=3))
        os.write(master, b"0012345678\r\n")
        assert wait_for(lambda: rec.rows() == [("p-007", "in", "card")])
        assert wait_for(lambda: any(s.state for s in edge.devices.relay.pin.states))
    finally:
        edge.stop()


def test_unplugged_adapter_is_reopened(tmp_path: Path) -> None:
    """A USB adapter that disappears and comes back (same /dev path): the reader reconnects by itself."""
    link = tmp_path / "ttyUSB0"
    m1, s1 = os.openpty()
    link.symlink_to(os.ttyname(s1))
    bus = EventBus()
    types: list[str] = []
    bus.subscribe(lambda e: types.append(e.type), "card_reader.")
    cards: list[str] = []
    reader = SerialCardReader(lambda: serial.Serial(str(link), 9600, timeout=0.05), CardFrames(cards.append), bus)
    reader.start()
    m2 = s2 = -1
    try:
        assert wait_for(lambda: reader.service.connected)
        os.write(m1, b"1111\r\n")
        assert wait_for(lambda: cards == ["1111"])
        os.close(s1)
        os.close(m1)  # unplugged: reads on the port now fail
        assert wait_for(lambda: "card_reader.port_lost" in types)
        m2, s2 = os.openpty()
        link.unlink()
        link.symlink_to(os.ttyname(s2))  # plugged back in
        assert wait_for(lambda: types.count("card_reader.port_open") >= 2, 10)
        os.write(m2, b"2222\r\n")
        assert wait_for(lambda: cards == ["1111", "2222"])
    finally:
        reader.stop()
        for fd in (m2, s2):
            if fd >= 0:
                os.close(fd)
