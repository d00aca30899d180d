"""The LED / buzzer state machine on MockFactory pins: every pattern, told apart, measured from pin history."""

from __future__ import annotations

import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from firmware_py.config import Config, with_changes
from firmware_py.gpio.devices import GateDevices
from firmware_py.gpio.feedback import GpioFeedback
from firmware_py.gpio.patterns import ALARM, PATTERNS, table_markdown

OUTPUTS = ("green", "red", "amber", "buzzer")


def on_intervals(pin, since_index: int = 0) -> list[float]:
    """Durations of the completed 'on' intervals in a MockPin's history."""
    st = pin.states
    return [st[i].timestamp for i in range(max(since_index, 1), len(st)) if st[i - 1].state]


def expected(pattern, window: float) -> dict[str, list[float]]:
    """The on-intervals each output should show in the first ``window`` seconds (only ones that end in it)."""
    out: dict[str, list[float]] = {o: [] for o in OUTPUTS}
    t, started = 0.0, {}
    steps = list(pattern.intro)
    while t < window:
        steps += list(pattern.loop)
        for s in steps:
            for o in OUTPUTS:
                if o in s.on and o not in started:
                    started[o] = t
                if o not in s.on and o in started:
                    out[o].append(t - started.pop(o))
            t += s.seconds
            if t >= window:
                break
        steps = []
    return out


def make(cfg: Config):
    dev = GateDevices.from_config(cfg, MockFactory(revision="c03114"))
    fb = GpioFeedback.from_config(cfg, None, dev.outputs())
    return dev, fb


def test_patterns_are_distinct_without_colour() -> None:
    # Shown to a person: which outputs, the beep count and length, the rhythm. Two states may share a
    # colour, never the whole signature; and results differ in beeps alone (for colour-blind staff).
    def signature(p):
        beeps = tuple(s.seconds for s in p.intro if "buzzer" in s.on)
        lamps = frozenset(o for s in (*p.intro, *p.loop) for o in s.on if o != "buzzer")
        rhythm = tuple((s.seconds, frozenset(s.on - {"buzzer"})) for s in p.loop)
        return beeps, lamps, rhythm

    sigs = {name: signature(p) for name, p in PATTERNS.items()}
    assert len(set(sigs.values())) == len(sigs)
    results = ["accepted", "rejected_unknown", "rejected_spoof", "rejected_other"]
    assert len({sigs[r][0] for r in results}) == len(results)
    assert ALARM.loop[0].on >= {"red", "buzzer"}
    table = table_markdown()
    assert all(f"| {n} |" in table for n in PATTERNS)


@pytest.mark.parametrize("window", [3.2])
def test_every_state_drives_its_pattern_on_the_pins(window: float) -> None:
    """All states at once, each on its own mock board, then each pin history is compared with its pattern."""
    cfg = Config()
    rigs = {name: make(cfg) for name in PATTERNS}
    try:
        for dev, _fb in rigs.values():
            for pin in (d.pin for d in dev.outputs().values()):
                pin.clear_states()
        start = threading.Barrier(len(rigs) + 1)

        def run(name: str) -> None:
            _dev, fb = rigs[name]
            start.wait()
            if name == "fault":
                fb.show("fault", "test")
            elif name == "offline":
                fb.show("offline")
            elif name != "idle":
                fb._hold[name] = 60  # keep moments on for the whole window
                fb._result_s = 60
                fb.show(name)  # type: ignore[arg-type]
            fb.start()

        threads = [threading.Thread(target=run, args=(n,)) for n in rigs]
        for t in threads:
            t.start()
        start.wait()
        for t in threads:
            t.join()
        time.sleep(window)
        for name, (dev, fb) in rigs.items():
            want = expected(PATTERNS[name], window - 0.4)  # leave slack for a busy machine
            outs = dev.outputs()
            for o in OUTPUTS:
                got = on_intervals(outs[o].pin)
                w = want[o]
                assert len(got) >= len(w), f"{name}/{o}: expected on-intervals {w}, pin shows {got}"
                for g, e in zip(got, w, strict=False):
                    assert abs(g - e) <= max(0.12, 0.3 * e), f"{name}/{o}: on for {g:.3f} s, pattern says {e:.3f} s"
                if not any(o in s.on for s in (*PATTERNS[name].intro, *PATTERNS[name].loop)):
                    assert not got and not outs[o].pin.state, f"{name}: {o} must stay off"
            assert fb.state == name
    finally:
        for dev, fb in rigs.values():
            fb.stop()
            dev.close()


def test_moment_falls_back_to_background_and_conditions_persist() -> None:
    cfg = with_changes(Config(), {"feedback.result_s": 0.5})
    dev, fb = make(cfg)
    fb.start()
    try:
        fb.show("offline")
        fb.show("accepted")
        assert fb.state == "accepted"
        time.sleep(0.8)
        assert fb.state == "offline"  # the moment ended; the condition did not
        fb.show("idle")  # a face left: idle ends moments but does not hide "offline"
        assert fb.state == "offline"
        fb.show("fault", "punch not stored")
        fb.show("fault", "tamper")
        fb.clear("fault", "tamper")
        assert fb.state == "fault"  # the other cause still stands
        fb.clear("fault", "punch not stored")
        assert fb.state == "offline"
        fb.clear("offline")
        assert fb.state == "idle"
        with pytest.raises(ValueError):
            fb.show("sparkly")  # type: ignore[arg-type]
    finally:
        fb.stop()
        dev.close()


def test_quiet_mode_mutes_results_but_not_alarms() -> None:
    cfg = with_changes(Config(), {"feedback.buzzer": False})
    dev, fb = make(cfg)
    buzzer = dev.buzzer.pin
    fb.start()
    try:
        buzzer.clear_states()
        fb.show("rejected_unknown")
        time.sleep(0.5)
        assert not on_intervals(buzzer) and not buzzer.state
        assert dev.leds["red"].pin.state  # the lamp still shows
        fb.alarm("held_open", True)
        time.sleep(0.7)
        fb.alarm("held_open", False)
        assert len(on_intervals(buzzer)) >= 1
    finally:
        fb.stop()
        dev.close()


def test_missing_outputs_are_skipped() -> None:
    cfg = with_changes(Config(), {"gpio.not_fitted": ["led_amber", "buzzer"]})
    dev, fb = make(cfg)
    assert set(dev.outputs()) == {"green", "red"}
    fb.start()
    try:
        fb.show("accepted")
        time.sleep(0.2)
        assert dev.leds["green"].pin.state
    finally:
        fb.stop()
        dev.close()


def test_readme_table_is_the_code_table() -> None:
    from firmware_py.paths import HW_DIR

    assert table_markdown() in (HW_DIR / "README.md").read_text()


def test_led_test_walks_every_pattern_and_restores_state() -> None:
    from firmware_py.gpio.selftest import led_test

    cfg = Config()
    dev, fb = make(cfg)
    fb.start()
    try:
        fb.show("offline")
        shown: list[str] = []
        preview = fb.preview

        def spy(name: str, seconds: float) -> None:
            preview(name, seconds)
            shown.append(fb.state)  # what the engine now shows

        fb.preview = spy  # type: ignore[method-assign]
        lines = list(led_test(fb, 0.05))
        assert [ln.split(":")[0] for ln in lines[:-1]] == list(PATTERNS)
        assert shown == list(PATTERNS)
        assert fb.state == "offline" and lines[-1] == "done: back to offline"
    finally:
        fb.stop()
        dev.close()
