"""`kaoclock hw ...`: the technician's tools at the board.

``pins`` prints where everything is wired, ``test relay|leds|buzzer|inputs``
exercises each part on the real pins (stop the daemon first: it holds them),
``patterns`` prints the LED / buzzer table, ``diagram`` draws the wiring
picture, ``safe`` drives the relay to locked (for systemd's ExecStopPost).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

from firmware_py.config import Config, load
from firmware_py.errors import ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hw", help="pin table, hardware tests, LED patterns and wiring diagram")
    hsub = p.add_subparsers(dest="hw_command", metavar="ACTION")
    hsub.required = True

    def add(name: str, help: str, func: object) -> argparse.ArgumentParser:
        a = hsub.add_parser(name, help=help)
        a.add_argument("--config", help="config file (default: the embedded default: mock pins)")
        a.add_argument("--json", action="store_true", help="print the report as JSON")
        a.set_defaults(func=func)
        return a

    add("pins", "where each role is wired on this reader (validates [gpio])", cmd_pins)
    t = add("test", "exercise a part: relay, leds, buzzer or inputs", cmd_test)
    t.add_argument("part", choices=["relay", "leds", "buzzer", "inputs"])
    t.add_argument("--seconds", type=float, help="relay: release time (default door.pulse_s); leds: per pattern (2); inputs: how long to watch (30)")
    add("patterns", "the LED / buzzer pattern of every state", cmd_patterns)
    d = add("diagram", "draw the wiring diagram as a PNG", cmd_diagram)
    d.add_argument("--out", required=True, help="PNG file to write")
    add("safe", "drive the relay to locked and exit (systemd ExecStopPost)", cmd_safe)


def _where(cfg: Config, role: str) -> str:
    from firmware_py.config.pinmap import load_pinmap, resolve_pins

    pm = load_pinmap(cfg.gpio.pinmap)
    pins, _ = resolve_pins(pm, cfg.gpio.pins, cfg.gpio.not_fitted, cfg.gpio.release)
    return f"GPIO{pins[role]} (pin {pm.physical(pins[role])})" if role in pins else "not fitted"


def cmd_pins(args: argparse.Namespace) -> int:
    from firmware_py.config.pinmap import ROLES, load_pinmap, resolve_pins

    cfg = load(args.config)
    pm = load_pinmap(cfg.gpio.pinmap)
    pins, _ = resolve_pins(pm, cfg.gpio.pins, cfg.gpio.not_fitted, cfg.gpio.release)
    if args.json:
        roles = [
            {"role": role, "gpio": pins[role], "pin": pm.physical(pins[role]), "wiring": r.wiring}
            if role in pins
            else {"role": role, "gpio": None, "pin": None, "wiring": "not fitted"}
            for role, r in ROLES.items()
        ]
        reserved = [
            {"gpio": g, "pin": pm.physical(g), "state": "released" if g in cfg.gpio.release else "reserved", "why": why}
            for g, why in sorted(pm.reserved.items())
        ]
        doc = {"board": pm.board, "pinmap": str(pm.path), "pin_factory": cfg.gpio.pin_factory, "roles": roles, "reserved": reserved}
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{pm.board} (pin map {pm.path}), pin factory {cfg.gpio.pin_factory}")
    print(f"{'role':<13} {'GPIO':>4} {'pin':>4}  wiring")
    for role, r in ROLES.items():
        if role in pins:
            print(f"{role:<13} {pins[role]:>4} {pm.physical(pins[role]):>4}  {r.wiring}")
        else:
            print(f"{role:<13} {'-':>4} {'-':>4}  not fitted")
    for g, why in sorted(pm.reserved.items()):
        state = "released" if g in cfg.gpio.release else "reserved"
        print(f"{state:<13} {g:>4} {pm.physical(g):>4}  {why}")
    return 0


def cmd_patterns(args: argparse.Namespace) -> int:
    from firmware_py.gpio.patterns import ALARM, PATTERNS, table_markdown

    if args.json:
        rows = [{"state": p.name, "colour": p.colour, "rhythm": p.rhythm, "beeps": p.beeps} for p in (*PATTERNS.values(), ALARM)]
        print(json.dumps({"patterns": rows}, indent=2))
    else:
        print(table_markdown())
    return 0


class _Report:
    """Lines of a hardware test: printed as they happen, or gathered for ``--json``."""

    def __init__(self, part: str, as_json: bool) -> None:
        self.doc: dict[str, object] = {"part": part, "ok": True, "lines": []}
        self.as_json = as_json

    def say(self, line: str) -> None:
        self.doc["lines"].append(line)  # type: ignore[attr-defined]
        if not self.as_json:
            print(line, flush=True)

    def finish(self, ok: bool = True) -> int:
        self.doc["ok"] = ok
        if self.as_json:
            print(json.dumps(self.doc, indent=2))
        return 0 if ok else int(ExitCode.FAILED)


def cmd_test(args: argparse.Namespace) -> int:
    from firmware_py.gpio.selftest import HardwareBench, buzzer_test, led_test

    cfg = load(args.config)
    if cfg.gpio.pin_factory == "mock":
        print("note: gpio.pin_factory is 'mock': the pins are simulated, nothing on a board will move", file=sys.stderr)
    rep = _Report(args.part, args.json)
    with HardwareBench(cfg) as bench:
        assert bench.devices is not None and bench.feedback is not None
        if args.part == "relay":
            if bench.devices.relay is None:
                rep.say("the relay is not fitted (gpio.not_fitted)")
                return rep.finish(False)
            seconds = args.seconds or cfg.door.pulse_s
            rep.say(f"relay on {_where(cfg, 'relay')}, active {cfg.door.relay_active}: releasing the lock for {seconds:g} s ...")
            pin = bench.devices.relay.pin
            if hasattr(pin, "clear_states"):
                pin.clear_states()
            bench.relay_test(seconds)
            rep.say("relocked")
            if hasattr(pin, "states"):  # the mock pin's history: what the relay input saw
                history = [{"level": "high" if s.state else "low", "after_s": round(s.timestamp, 3)} for s in pin.states[1:]]
                rep.doc["pin_history"] = history
                rep.say("pin history: " + ", ".join(f"{h['level']} after {h['after_s']:.3f} s" for h in history))
        elif args.part == "leds":
            for line in led_test(bench.feedback, args.seconds or 2.0):
                rep.say(line)
        elif args.part == "buzzer":
            if bench.devices.buzzer is None:
                rep.say("the buzzer is not fitted (gpio.not_fitted)")
                return rep.finish(False)
            rep.say(f"buzzer on {_where(cfg, 'buzzer')}: sounding the alarm pattern for 1 s")
            buzzer_test(bench.feedback)
        else:
            _watch_inputs(cfg, bench, args.seconds or 30.0, rep)
    return rep.finish()


def _watch_inputs(cfg: Config, bench: object, seconds: float, rep: _Report) -> None:
    from firmware_py.gpio.devices import detach

    devices = bench.devices  # type: ignore[attr-defined]
    bench.door.stop()  # type: ignore[attr-defined]  # the door would react (REX opens): here we only watch
    roles = ("button_in", "button_out", "door_contact", "rex", "tamper")
    fitted = {r: devices.device(r) for r in roles if devices.device(r) is not None}
    meaning = {
        "door_contact": ("door shut", "door OPEN") if cfg.door.contact == "nc" else ("door OPEN", "door shut"),
        "tamper": ("lid shut", "lid OPEN (tamper)") if cfg.door.tamper == "nc" else ("lid OPEN (tamper)", "lid shut"),
    }

    def show(role: str, closed: bool) -> None:
        closed_txt, open_txt = meaning.get(role, ("pressed", "released"))
        rep.say(f"{time.strftime('%H:%M:%S')}  {role:<13} {_where(cfg, role):<18} {closed_txt if closed else open_txt}")

    for role, dev in fitted.items():
        show(role, dev.is_active)
        dev.when_activated = lambda r=role: show(r, True)
        dev.when_deactivated = lambda r=role: show(r, False)
    rep.say(f"watching {len(fitted)} input(s) for {seconds:g} s: press each button, open and close the door and the lid ...")
    with contextlib.suppress(KeyboardInterrupt):
        time.sleep(seconds)
    detach(*fitted.values())


def cmd_diagram(args: argparse.Namespace) -> int:
    from firmware_py.gpio.diagram import draw_wiring

    cfg = load(args.config)
    path = draw_wiring(cfg, args.out)
    print(json.dumps({"out": str(path)}) if args.json else f"wiring diagram written to {path}")
    return 0


def cmd_safe(args: argparse.Namespace) -> int:
    from gpiozero import OutputDevice

    from firmware_py.config.pinmap import load_pinmap, resolve_pins
    from firmware_py.gpio.factory import make_pin_factory

    cfg = load(args.config)
    pm = load_pinmap(cfg.gpio.pinmap)
    pins, _ = resolve_pins(pm, cfg.gpio.pins, cfg.gpio.not_fitted, cfg.gpio.release)
    if "relay" not in pins:
        print(json.dumps({"relay": None, "locked": None}) if args.json else "the relay is not fitted: nothing to do")
        return 0
    relay = OutputDevice(
        pins["relay"], active_high=cfg.door.relay_active == "high", initial_value=False, pin_factory=make_pin_factory(cfg.gpio.pin_factory, pm)
    )
    relay.off()
    # On exit gpiozero releases the pin (an input again): the relay's pull resistor keeps it off (hw/README.md).
    relay.close()
    where = _where(cfg, "relay")
    print(json.dumps({"relay": where, "locked": True}) if args.json else f"relay on {where} driven to locked")
    return 0
