"""Direction modes: fixed-in, fixed-out, buttons (before / after / none) and auto (per person per local day)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory

from firmware_py.config import Config, with_changes
from firmware_py.decision.outcome import Decision
from firmware_py.events import EventBus
from firmware_py.gate.direction import DIRECTION_DB, AutoDirection, ButtonDirection, FixedDirection, direction_from_config
from firmware_py.gpio.devices import GateDevices
from firmware_py.gpio.feedback import GpioFeedback

TOKYO = ZoneInfo("Asia/Tokyo")


def at(local: str, person: str = "p-001") -> Decision:
    ts = dt.datetime.fromisoformat(local).replace(tzinfo=TOKYO).timestamp()
    return Decision(accepted=True, reason="match", track_id=1, person_id=person, ts=ts)


def punch(src, d: Decision) -> str | None:
    direction = src.direction_for(d, 0.5)
    if direction is not None:
        src.confirm(d, direction)
    return direction


def test_fixed_modes() -> None:
    for mode, want in (("fixed-in", "in"), ("fixed-out", "out")):
        src = direction_from_config(with_changes(Config(), {"direction.mode": mode}))
        assert isinstance(src, FixedDirection)
        assert [punch(src, at("2026-04-01T09:00:00")) for _ in range(3)] == [want] * 3


def test_auto_toggles_per_person_per_local_day_and_persists(tmp_path: Path) -> None:
    db = tmp_path / DIRECTION_DB
    a = AutoDirection(db, "Asia/Tokyo")
    assert punch(a, at("2026-04-01T08:55:00")) == "in"
    assert punch(a, at("2026-04-01T08:56:00", "p-002")) == "in"  # another person has their own toggle
    assert punch(a, at("2026-04-01T12:00:00")) == "out"
    # A restart (new instance, same file) remembers.
    a2 = AutoDirection(db, "Asia/Tokyo")
    assert punch(a2, at("2026-04-01T13:00:00")) == "in"
    assert punch(a2, at("2026-04-01T23:59:00")) == "out"
    # Local midnight in Tokyo starts a new day: in again (15:00 UTC is 00:00 JST).
    assert punch(a2, at("2026-04-02T00:01:00")) == "in"


def test_auto_direction_does_not_advance_without_confirm(tmp_path: Path) -> None:
    a = AutoDirection(tmp_path / DIRECTION_DB, "Asia/Tokyo")
    d = at("2026-04-01T09:00:00")
    assert a.direction_for(d) == "in"
    assert a.direction_for(d) == "in"  # the punch failed to store: no confirm, no toggle
    a.confirm(d, "in")
    assert a.direction_for(d) == "out"


def test_auto_day_start_hour_keeps_a_night_shift_on_one_day(tmp_path: Path) -> None:
    a = AutoDirection(tmp_path / DIRECTION_DB, "Asia/Tokyo", day_start_hour=4)
    assert punch(a, at("2026-04-01T22:00:00")) == "in"
    assert punch(a, at("2026-04-02T03:30:00")) == "out"  # before 4:00: still the 1st's attendance day
    assert punch(a, at("2026-04-02T08:00:00")) == "in"


def test_auto_uses_the_site_time_zone(tmp_path: Path) -> None:
    a = AutoDirection(tmp_path / DIRECTION_DB, "Asia/Tokyo")
    utc = dt.datetime(2026, 4, 1, 14, 30, tzinfo=dt.UTC).timestamp()  # 23:30 JST
    assert a.day_of(utc) == "2026-04-01"
    assert a.day_of(utc + 3600) == "2026-04-02"  # 00:30 JST, still the 1st in UTC


class Buttons:
    def __init__(self, tmp_path: Path, no_press: str = "reject") -> None:
        cfg = with_changes(
            Config(),
            {"device.data_dir": str(tmp_path), "direction.mode": "buttons", "direction.press_before_s": 3.0, "direction.no_press": no_press},
        )
        self.bus = EventBus()
        self.types: list[str] = []
        self.bus.subscribe(lambda e: self.types.append(e.type))
        self.dev = GateDevices.from_config(cfg, MockFactory(revision="c03114"))
        self.fb = GpioFeedback.from_config(cfg, None, self.dev.outputs())
        self.src = direction_from_config(cfg, self.dev, self.fb, self.bus)
        assert isinstance(self.src, ButtonDirection)
        self.src.start()

    def press(self, which: str) -> None:
        pin = (self.dev.button_in if which == "in" else self.dev.button_out).pin
        pin.drive_low()
        pin.drive_high()

    def close(self) -> None:
        self.src.stop()
        self.dev.close()


@pytest.fixture
def buttons(tmp_path: Path):
    made: list[Buttons] = []

    def make(no_press: str = "reject") -> Buttons:
        made.append(Buttons(tmp_path, no_press))
        return made[-1]

    yield make
    for b in made:
        b.close()


def now_decision() -> Decision:
    return Decision(accepted=True, reason="match", track_id=1, person_id="p-001")


def test_button_pressed_before_recognition(buttons) -> None:
    b = buttons()
    b.press("out")
    assert b.src.direction_for(now_decision(), 2.0) == "out"
    assert "gate.choose_direction" not in b.types  # no waiting when the choice was already made
    # The press is used once.
    assert b.src.direction_for(now_decision(), 0.2) is None


def test_button_pressed_after_recognition(buttons) -> None:
    b = buttons()
    d = now_decision()
    b.bus.subscribe(lambda e: threading.Timer(0.1, b.press, args=("in",)).start(), "gate.choose_direction")
    assert b.src.direction_for(d, 3.0) == "in"
    assert b.fb.state == "choose_direction"


def test_stale_press_does_not_count(buttons) -> None:
    b = buttons()
    b.press("out")
    d = Decision(accepted=True, reason="match", track_id=1, person_id="p-001", ts=time.time() + 5)  # 5 s later > press_before_s
    assert b.src.direction_for(d, 0.2) is None


def test_no_press_falls_back_as_configured(buttons) -> None:
    b = buttons("auto")
    d = now_decision()
    assert punch(b.src, d) == "in"
    assert punch(b.src, d) == "out"  # automatic toggle when nobody presses
    b.press("out")
    assert punch(b.src, d) == "out"  # a press wins over the toggle ...
    assert punch(b.src, d) == "in"  # ... and the toggle follows what was pressed


def test_no_press_fixed_fallback(buttons) -> None:
    b = buttons("out")
    assert b.src.direction_for(now_decision(), 0.2) == "out"
