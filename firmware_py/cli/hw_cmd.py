"""`kaoclock hw ...`: the technician's tools at the board.

``pins`` prints where everything is wired, ``test relay|leds|buzzer|inputs``
exercises each part on the real pins (stop the daemon first: it holds them),
``patterns`` prints the LED / buzzer table, ``diagram`` draws the wiring
picture, ``safe`` drives the relay to locked (for systemd's ExecStopPost).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from firmware_py.config import Config, load


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hw", help="pin table, hardware tests, LED patterns and wiring diagram")
    hsub = p.add_subparsers(dest="hw_command", metavar="ACTION")
    hsub.required = True

    def add(name: str, help: str, func: object) -> argparse.ArgumentParser:
        a = hsub.add_parser(name, help=help)
        a.add_argument("--config", help="config file (default: the embedded default: mock pins)")
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
    from firmware_py.gpio.patterns import table_markdown

    print(table_markdown())
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from firmware_py.gpio.selftest import HardwareBench, buzzer_test, led_test

    cfg = load(args.config)
    if cfg.gpio.pin_factory == "mock":
        print("note: gpio.pin_factory is 'mock': the pins are simulated, nothing on a board will move", file=sys.stderr)
    with HardwareBench(cfg) as bench:
        assert bench.devices is not None and bench.feedback is not None
        if args.part == "relay":
            if bench.devices.relay is None:
                print("the relay is not fitted (gpio.not_fitted)")
                return 1
            seconds = args.seconds or cfg.door.pulse_s
            print(f"relay on {_where(cfg, 'relay')}, active {cfg.door.relay_active}: releasing the lock for {seconds:g} s ...", flush=True)
            pin = bench.devices.relay.pin
            if hasattr(pin, "clear_states"):
                pin.clear_states()
            bench.relay_test(seconds)
            print("relocked")
            if hasattr(pin, "states"):  # the mock pin's history: what the relay input saw
                print("pin history: " + ", ".join(f"{'high' if s.state else 'low'} after {s.timestamp:.3f} s" for s in pin.states[1:]))
        elif args.part == "leds":
            for line in led_test(bench.feedback, args.seconds or 2.0):
                print(line, flush=True)
        elif args.part == "buzzer":
            if bench.devices.buzzer is None:
                print("the buzzer is not fitted (gpio.not_fitted)")
                return 1
            print(f"buzzer on {_where(cfg, 'buzzer')}: sounding the alarm pattern for 1 s", flush=True)
            buzzer_test(bench.feedback)
        else:
            return _watch_inputs(cfg, bench, args.seconds or 30.0)
    return 0


def _watch_inputs(cfg: Config, bench: object, seconds: float) -> int:
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
        print(f"{time.strftime('%H:%M:%S')}  {role:<13} {_where(cfg, role):<18} {closed_txt if closed else open_txt}", flush=True)

    for role, dev in fitted.items():
        show(role, dev.is_active)
        dev.when_activated = lambda r=role: show(r, True)
        dev.when_deactivated = lambda r=role: show(r, False)
    print(f"watching {len(fitted)} input(s) for {seconds:g} s: press each button, open and close the door and the lid ...", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        time.sleep(seconds)
    detach(*fitted.values())
    return 0


def cmd_diagram(args: argparse.Namespace) -> int:
    from firmware_py.gpio.diagram import draw_wiring

    cfg = load(args.config)
    path = draw_wiring(cfg, args.out)
    print(f"wiring diagram written to {path}")
    return 0


def cmd_safe(args: argparse.Namespace) -> int:
    from gpiozero import OutputDevice

    from firmware_py.config.pinmap import load_pinmap, resolve_pins
    from firmware_py.gpio.factory import make_pin_factory

    cfg = load(args.config)
    pm = load_pinmap(cfg.gpio.pinmap)
    pins, _ = resolve_pins(pm, cfg.gpio.pins, cfg.gpio.not_fitted, cfg.gpio.release)
    if "relay" not in pins:
        return 0
    relay = OutputDevice(
        pins["relay"], active_high=cfg.door.relay_active == "high", initial_value=False, pin_factory=make_pin_factory(cfg.gpio.pin_factory, pm)
    )
    relay.off()
    # On exit gpiozero releases the pin (an input again): the relay's pull resistor keeps it off (hw/README.md).
    relay.close()
    print(f"relay on {_where(cfg, 'relay')} driven to locked")
    return 0
