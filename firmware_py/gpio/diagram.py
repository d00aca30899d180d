"""The wiring diagram: the 40-pin header and every part on it, drawn with Pillow.

``kaoclock hw diagram --out wiring.png [--config FILE]`` draws the reader's
own wiring (pin overrides and not-fitted parts included);
``hw/wiring.png`` is this drawing for the default rpi4 map.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from firmware_py.config import Config
from firmware_py.config.pinmap import ROLES, load_pinmap, resolve_pins

W, H = 1800, 1240
ROW = 40  # pixels between header rows
HX, HY = 800, 150  # top-left pin (pin 1)
PIN_R = 12
BOX_W, BOX_H = 520, 150

COLOURS = {
    "relay": "#7b3fb5",
    "led_green": "#1d9b3a",
    "led_red": "#d62828",
    "led_amber": "#e89a00",
    "buzzer": "#444444",
    "button_in": "#1565c0",
    "button_out": "#00838f",
    "door_contact": "#6d4c41",
    "rex": "#5e35b1",
    "tamper": "#ad1457",
}


@dataclass(frozen=True)
class Placement:
    role: str
    gpio: int
    physical: int
    side: str  # "left" / "right" of the header


@dataclass(frozen=True)
class Circuit:
    """One output's circuit as the picture draws it: the source data a test checks against the config."""

    role: str
    gpio: int
    level_on: str  # pin level that switches the part on: "high" / "low"
    boot_pull: str  # the pin's pull before kaoclock runs: "up" (GPIO0-8) / "down" (GPIO9-27)
    parts: tuple[str, ...]

    @property
    def off_at_boot(self) -> bool:
        """Whether the pin's boot pull holds the part off (the relay must stay locked while the Pi boots)."""
        return (self.boot_pull == "down") == (self.level_on == "high")


def boot_pull(gpio: int) -> str:
    """BCM2711 / RP1 reset pulls: GPIO0-8 up, GPIO9-27 down (hw/README.md, "Boot")."""
    return "up" if gpio <= 8 else "down"


RELAY_MODULE = {
    "high": "relay module with a HIGH-level trigger input (opto-isolated module with its H/L jumper on H, or a transistor board / HAT)",
    "low": "relay module with a LOW-level trigger input (the common opto-isolated module: IN low = relay on)",
}


def circuits(cfg: Config) -> list[Circuit]:
    """The output circuits of ``cfg``, in the polarity the code drives them (gpio/devices.py)."""
    pm = load_pinmap(cfg.gpio.pinmap)
    pins, _ = resolve_pins(pm, cfg.gpio.pins, cfg.gpio.not_fitted, cfg.gpio.release)
    out: list[Circuit] = []
    if "relay" in pins:
        level = cfg.door.relay_active
        hold = "10 kohm from IN to GND holds it off while the pin floats" if level == "high" else "the module's own pull-up to VCC holds it off"
        contact = "NO -> electric strike (fail-secure)" if cfg.door.lock == "fail-secure" else "NC -> maglock (fail-safe)"
        out.append(
            Circuit(
                "relay",
                pins["relay"],
                level,
                boot_pull(pins["relay"]),
                (RELAY_MODULE[level], hold, f"lock supply + -> COM; {contact}; lock - -> supply -", "1N4007 across the lock coil, band to +"),
            )
        )
    if "buzzer" in pins:
        parts = ("1 kohm -> NPN base (S8050 / 2N2222)", "active 5 V buzzer: + to 5 V, - to collector", "emitter -> GND")
        out.append(Circuit("buzzer", pins["buzzer"], "high", boot_pull(pins["buzzer"]), parts))
    for role in ("led_green", "led_red", "led_amber"):
        if role in pins:
            out.append(Circuit(role, pins[role], "high", boot_pull(pins[role]), ("330 ohm -> LED anode", "LED cathode -> GND")))
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def pin_xy(physical: int) -> tuple[int, int]:
    """Centre of a header pin: odd pins in the left column, even in the right."""
    row = (physical - 1) // 2
    return HX + (0 if physical % 2 else ROW), HY + row * ROW


def draw_wiring(cfg: Config, out: str | Path) -> Path:
    """Draw the wiring of ``cfg`` into the PNG ``out``; returns its path."""
    image, _ = render(cfg)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path


def render(cfg: Config) -> tuple[Image.Image, list[Placement]]:
    """The drawing and where each role was placed (tests check it against the pin map)."""
    pm = load_pinmap(cfg.gpio.pinmap)
    pins, _ = resolve_pins(pm, cfg.gpio.pins, cfg.gpio.not_fitted, cfg.gpio.release)
    by_physical = {pm.physical(g): r for r, g in pins.items()}
    gpio_at = {p: g for g, p in pm.header.items()}
    power_at = {p: name for name, ps in pm.power.items() for p in ps}

    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    title, small, tiny = _font(30), _font(17), _font(14)
    d.text((40, 30), f"kaoclock wiring: {pm.board}, 40-pin header (pin map {pm.name})", fill="black", font=title)
    d.text(
        (40, 72),
        "Pin numbers are physical header pins; GPIO numbers are BCM. Pin 1 is the square pad nearest the SD card end.",
        fill="#333",
        font=small,
    )

    # Parts: odd pins to the left, even to the right, in header order.
    placements: list[Placement] = []
    sides: dict[str, list[tuple[int, str]]] = {"left": [], "right": []}
    for phys, role in sorted(by_physical.items()):
        sides["left" if phys % 2 else "right"].append((phys, role))
    gnds = pm.power.get("GND", ())
    for side, items in sides.items():
        bx = 40 if side == "left" else W - BOX_W - 40
        for i, (phys, role) in enumerate(items):
            by = 130 + i * (BOX_H + 22)
            colour = COLOURS[role]
            r = ROLES[role]
            gpio = pins[role]
            near_gnd = min(gnds, key=lambda g: abs(g - phys)) if gnds else None
            d.rounded_rectangle((bx, by, bx + BOX_W, by + BOX_H), 8, outline=colour, width=3, fill="#fcfcfc")
            d.rectangle((bx, by, bx + BOX_W, by + 30), fill=colour)
            d.text((bx + 10, by + 15), f"{r.label.upper()}  GPIO{gpio}, pin {phys}", fill="white", font=small, anchor="lm")
            body = r.wiring + (f". GND: pin {near_gnd}" if near_gnd else "")
            for j, line in enumerate(textwrap.wrap(body, 62)[:5]):
                d.text((bx + 10, by + 40 + j * 20), line, fill="#222", font=tiny)
            px, py = pin_xy(phys)
            ax = bx + BOX_W if side == "left" else bx
            ay = by + 40  # near the top of the box: keeps it off the rows where other wires leave the header
            edge_x = px - PIN_R if side == "left" else px + PIN_R
            # Each wire turns at its own x, so no two vertical runs overlap.
            mid = HX - 160 - i * 16 if side == "left" else HX + ROW + 160 + i * 16
            d.line([(ax, ay), (mid, ay), (mid, py), (edge_x, py)], fill=colour, width=4)
            placements.append(Placement(role, gpio, phys, side))

    # The header.
    d.rounded_rectangle((HX - 30, HY - 30, HX + ROW + 30, HY + 19 * ROW + 30), 10, fill="#f3f3f3", outline="#222", width=2)
    # (drawn after the wires, so the pins and their labels sit on top)
    for phys in range(1, 41):
        x, y = pin_xy(phys)
        pin_role = by_physical.get(phys)
        name: str = power_at.get(phys) or (f"GPIO{gpio_at[phys]}" if phys in gpio_at else "?")
        if pin_role:
            fill = COLOURS[pin_role]
        elif phys in power_at:
            fill = {"3V3": "#f4a300", "5V": "#e53935", "GND": "#111"}.get(power_at[phys], "#999")
        elif phys in gpio_at and gpio_at[phys] in pm.reserved and gpio_at[phys] not in cfg.gpio.release:
            fill = "#bbbbbb"
        else:
            fill = "white"
        shape = d.rectangle if phys == 1 else d.ellipse
        shape((x - PIN_R, y - PIN_R, x + PIN_R, y + PIN_R), fill=fill, outline="#222", width=2)
        d.text((x, y), str(phys), fill="white" if fill not in ("white", "#bbbbbb", "#f4a300") else "black", font=tiny, anchor="mm")
        label = name + (" (reserved)" if phys in gpio_at and gpio_at[phys] in pm.reserved and gpio_at[phys] not in cfg.gpio.release else "")
        at, anchor = ((x - PIN_R - 8, y), "rm") if phys % 2 else ((x + PIN_R + 8, y), "lm")
        d.rectangle(d.textbbox(at, label, font=tiny, anchor=anchor), fill="white")
        d.text(at, label, fill="#222", font=tiny, anchor=anchor)

    # The output circuits (from circuits(), the data a test checks), the console cable and what is not fitted.
    y = H - 190
    d.rounded_rectangle((40, y, W - 40, H - 20), 8, outline="#222", width=2)
    notes = []
    for c in circuits(cfg):
        boot = "" if c.off_at_boot else f"  WARNING: GPIO{c.gpio} is pulled {c.boot_pull} at boot: the part is ON until kaoclock starts; move it"
        notes.append(f"{ROLES[c.role].label.upper()} GPIO{c.gpio}, ON = pin {c.level_on.upper()}: " + "; ".join(c.parts) + boot)
    notes += [
        "CONSOLE: 3.3 V USB-TTL cable: cable RX <- pin 8 (GPIO14 TXD), cable TX -> pin 10 (GPIO15 RXD), GND <-> pin 6; 115200 8N1. "
        "Never connect the cable's 5 V. Never power the lock from the Pi.",
        "INPUTS: switch between GPIO and GND (internal pull-up). Runs over ~3 m: twisted pair, 4.7 kohm to 3.3 V and 100 nF to GND at the Pi.",
    ]
    absent = [r for r in ROLES if r not in pins]
    if absent:
        notes.append("NOT FITTED on this reader: " + ", ".join(absent))
    leds = [n for n in notes if n.startswith(("GREEN", "RED", "AMBER"))]
    if len(leds) > 1:  # the three LED circuits are alike: one line
        notes = [n for n in notes if n not in leds[1:]]
        notes[notes.index(leds[0])] = (
            "LEDS " + ", ".join(n.split(",")[0].split()[-1] for n in leds) + ", ON = pin HIGH: 330 ohm -> LED anode; LED cathode -> GND"
        )
    lines = [ln for n in notes for ln in textwrap.wrap(n, 210, subsequent_indent="    ")]
    for j, n in enumerate(lines):
        d.text((60, y + 12 + j * 24), n, fill="#222", font=tiny)
    return img, placements
