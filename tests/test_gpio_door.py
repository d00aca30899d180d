"""The door on gpiozero's MockFactory: relay pulse timing and polarity, held open, forced open, REX, tamper.

Pulse lengths are measured from the mock pins' own state history (each
entry's timestamp is the time spent in the previous state), compared with
generous tolerance to the configured duration; no wall-clock asserts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from gpiozero.pins.mock import MockFactory

from firmware_py.config import Config, with_changes
from firmware_py.events import Event, EventBus
from firmware_py.gpio.devices import GateDevices
from firmware_py.gpio.door import GpioDoor
from firmware_py.gpio.feedback import GpioFeedback


def intervals(pin) -> list[tuple[bool, float]]:
    """(level, seconds) of every completed interval in a MockPin's history."""
    return [(pin.states[i - 1].state, pin.states[i].timestamp) for i in range(1, len(pin.states))]


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


class Rig:
    def __init__(self, **changes: object) -> None:
        base = {"door.pulse_s": 0.4, "door.held_open_s": 1.0, "door.open_grace_s": 0.2, "door.forced_alarm_s": 0.6}
        self.cfg = with_changes(Config(), {**base, **changes})
        self.bus = EventBus()
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)
        self.factory = MockFactory(revision="c03114")
        self.dev = GateDevices.from_config(self.cfg, self.factory)
        # Door shut, lid shut: the NC contacts pull their inputs low.
        self.dev.door_contact.pin.drive_low()
        self.dev.tamper.pin.drive_low()
        self.feedback = GpioFeedback.from_config(self.cfg, self.bus, self.dev.outputs())
        self.door = GpioDoor.from_config(self.cfg, self.bus, self.dev, self.feedback)
        self.feedback.start()
        self.door.start()

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def close(self) -> None:
        self.door.stop()
        self.feedback.stop()
        self.dev.close()


@pytest.fixture
def rig():
    rigs: list[Rig] = []

    def make(**changes: object) -> Rig:
        rigs.append(Rig(**changes))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


@pytest.mark.parametrize(("active", "rest", "pulse"), [("high", False, True), ("low", True, False)])
def test_relay_pulse_length_and_polarity(rig, active: str, rest: bool, pulse: bool) -> None:
    r = rig(**{"door.relay_active": active})
    pin = r.dev.relay.pin
    assert pin.state == rest  # locked at rest, whatever the polarity
    pin.clear_states()
    r.door.grant("face")
    assert pin.state == pulse
    assert wait_for(lambda: len(pin.states) >= 3)
    iv = intervals(pin)
    assert [lvl for lvl, _ in iv] == [rest, pulse]
    # The released interval matches door.pulse_s (0.4 s) with a tolerance for a busy machine.
    assert 0.38 <= iv[1][1] <= 0.4 + 0.25
    assert pin.state == rest
    assert r.types().count("door.granted") == 1


def test_second_grant_extends_the_pulse_without_a_click(rig) -> None:
    r = rig()
    pin = r.dev.relay.pin
    pin.clear_states()
    r.door.grant("face")
    time.sleep(0.2)
    r.door.grant("face")
    assert wait_for(lambda: len(pin.states) >= 3, 3)
    iv = intervals(pin)
    assert [lvl for lvl, _ in iv] == [False, True]  # one release, not two
    assert iv[1][1] >= 0.55  # 0.2 s + a full 0.4 s pulse from the second grant


def test_door_held_open_raises_event_and_sounds_buzzer_until_closed(rig) -> None:
    r = rig()
    r.door.grant("face")
    r.dev.door_contact.pin.drive_high()  # the person opens the door
    assert "door.opened" in r.types() and "door.forced_open" not in r.types()
    assert wait_for(lambda: "door.held_open" in r.types(), 3)
    ev = next(e for e in r.events if e.type == "door.held_open")
    assert ev.severity == "alarm" and ev.data["limit_s"] == 1.0
    buzzer = r.dev.buzzer.pin
    assert wait_for(lambda: sum(1 for s in buzzer.states if s.state) >= 2, 3)  # pulsing, not one beep
    r.dev.door_contact.pin.drive_low()
    closed = next(e for e in r.events if e.type == "door.closed")
    assert closed.data["was_held_open"] is True and closed.data["open_s"] >= 1.0
    assert wait_for(lambda: not buzzer.state, 1)
    n = len(buzzer.states)
    time.sleep(0.6)
    assert len(buzzer.states) == n  # silent once closed


def test_door_opened_without_grant_is_forced(rig) -> None:
    r = rig()
    r.dev.door_contact.pin.drive_high()
    forced = [e for e in r.events if e.type == "door.forced_open"]
    assert len(forced) == 1 and forced[0].severity == "alarm"
    assert wait_for(lambda: any(s.state for s in r.dev.buzzer.pin.states), 1)
    r.dev.door_contact.pin.drive_low()


def test_opening_just_after_relock_is_within_grace_but_later_is_forced(rig) -> None:
    r = rig()
    r.door.grant("face")
    assert wait_for(lambda: not r.door.released, 2)
    r.dev.door_contact.pin.drive_high()  # within open_grace_s (0.2 s) of the relock
    r.dev.door_contact.pin.drive_low()
    assert "door.forced_open" not in r.types()
    time.sleep(0.3)
    r.dev.door_contact.pin.drive_high()
    assert "door.forced_open" in r.types()
    r.dev.door_contact.pin.drive_low()


def test_request_to_exit_opens_without_recognition(rig) -> None:
    r = rig()
    relay = r.dev.relay.pin
    relay.clear_states()
    r.dev.rex.pin.drive_low()  # button pressed (to GND)
    r.dev.rex.pin.drive_high()
    rex = [e for e in r.events if e.type == "door.rex"]
    assert rex and rex[0].data["granted"] is True
    granted = [e for e in r.events if e.type == "door.granted"]
    assert granted[0].data["reason"] == "rex"
    assert relay.states[1].state is True
    r.dev.door_contact.pin.drive_high()  # walking out is not a forced opening
    assert "door.forced_open" not in r.types()
    r.dev.door_contact.pin.drive_low()


def test_rex_can_be_disabled(rig) -> None:
    r = rig(**{"door.rex": False})
    r.dev.rex.pin.drive_low()
    assert [e.data["granted"] for e in r.events if e.type == "door.rex"] == [False]
    assert "door.granted" not in r.types()
    assert r.dev.relay.pin.state is False


def test_tamper_raises_event_and_fault_until_closed(rig) -> None:
    r = rig()
    r.dev.tamper.pin.drive_high()  # lid opened: the NC switch opens, the pull-up wins
    tamper = [e for e in r.events if e.type == "tamper"]
    assert tamper and tamper[0].severity == "alarm"
    assert r.feedback.state == "fault" and r.feedback.conditions == {"fault": ["tamper"]}
    r.dev.tamper.pin.drive_low()
    assert "tamper.cleared" in r.types()
    assert r.feedback.state == "idle"


def test_no_wiring_contact(rig) -> None:
    # A normally-open contact: closed (low) means the door is OPEN.
    r = rig(**{"door.contact": "no"})
    assert r.door.is_open is True  # the test rig drove it low
    r.dev.door_contact.pin.drive_high()
    assert r.door.is_open is False and "door.closed" in r.types()


def test_stop_relocks_at_once(rig) -> None:
    r = rig(**{"door.pulse_s": 10.0})
    r.door.grant("face")
    assert r.dev.relay.pin.state is True
    r.door.stop()
    assert r.dev.relay.pin.state is False


def test_the_simulated_board_starts_quiet() -> None:
    """The embedded demo (mock pins) starts with the door and the lid shut: no alarm without a cause."""
    cfg = Config()
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    dev = GateDevices.from_config(cfg)  # gpio.pin_factory = "mock" by default
    door = GpioDoor.from_config(cfg, bus, dev)
    door.start()
    try:
        assert door.status()["door"] == "closed" and door.status()["tamper"] == "closed"
        assert not [e for e in events if e.severity in ("alarm", "warning")]
    finally:
        door.stop()
        dev.close()
