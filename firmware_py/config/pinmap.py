"""Pin maps: which header pin each gate role is wired to, per board.

A pin map is a TOML file in ``hw/pinmaps/`` (``rpi4.toml``, ``rpi5.toml``)
naming the board, the GPIOs its header exposes, the pins kaoclock must leave
alone (UART, I2C, HAT EEPROM) and the default pin of every role.  The
``[gpio]`` config section picks a map and may move roles, mark them not
fitted or release reserved pins; :func:`resolve_pins` applies that and names
every problem by its config key.

This module is pure Python (no gpiozero), so config validation can use it
without pulling hardware libraries into the core.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from firmware_py.config.schema import Problem
from firmware_py.errors import ExitCode, KaoclockError
from firmware_py.paths import HW_DIR

PINMAP_DIR = HW_DIR / "pinmaps"


@dataclass(frozen=True)
class Role:
    """One thing wired to the header."""

    name: str
    kind: Literal["output", "input"]
    label: str  # short name for tables and the diagram
    wiring: str  # how a technician connects it


ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role(
            "relay",
            "output",
            "door relay",
            "relay module IN (high-level trigger; module VCC 5 V, GND); lock on the relay's contacts, lock power separate",
        ),
        Role("led_green", "output", "green LED", "GPIO -> 330 ohm -> LED anode; LED cathode -> GND"),
        Role("led_red", "output", "red LED", "GPIO -> 330 ohm -> LED anode; LED cathode -> GND"),
        Role("led_amber", "output", "amber LED", "GPIO -> 330 ohm -> LED anode; LED cathode -> GND"),
        Role("buzzer", "output", "buzzer", "GPIO -> 1 kohm -> NPN base (S8050/2N2222); active 5 V buzzer between 5 V and collector; emitter -> GND"),
        Role("button_in", "input", "IN button", "push button between GPIO and GND (internal pull-up)"),
        Role("button_out", "input", "OUT button", "push button between GPIO and GND (internal pull-up)"),
        Role("door_contact", "input", "door contact", "reed contact between GPIO and GND; closed while the door is shut (NC)"),
        Role("rex", "input", "request-to-exit", "exit push button between GPIO and GND (internal pull-up)"),
        Role("tamper", "input", "tamper switch", "enclosure switch between GPIO and GND; closed while the lid is shut"),
    )
}


class PinMapError(KaoclockError):
    """A pin map file is missing or malformed."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class PinMap:
    """One board's header and kaoclock's default wiring on it."""

    name: str
    path: Path
    board: str
    mock_revision: str
    pin_factories: tuple[str, ...]
    roles: dict[str, int]
    reserved: dict[int, str]
    header: dict[int, int]  # BCM GPIO -> physical pin
    power: dict[str, tuple[int, ...]] = field(default_factory=dict)
    boot_pull_up: frozenset[int] = frozenset()

    def physical(self, gpio: int) -> int:
        return self.header[gpio]

    def free_pins(self, used: Iterable[int], released: Iterable[int] = ()) -> list[int]:
        """GPIOs on the header that no role uses and nothing reserves."""
        taken = set(used)
        rel = set(released)
        return sorted(g for g in self.header if g not in taken and (g not in self.reserved or g in rel))


def pinmap_path(name: str) -> Path:
    """A pin map name (``rpi4``) or a path to a ``.toml`` file."""
    if name.endswith(".toml") or "/" in name:
        return Path(name).expanduser()
    return PINMAP_DIR / f"{name}.toml"


def available_pinmaps() -> list[str]:
    return sorted(p.stem for p in PINMAP_DIR.glob("*.toml"))


def load_pinmap(name: str) -> PinMap:
    """Read and check a pin map; raise :class:`PinMapError` naming the file and the problem."""
    path = pinmap_path(name)
    try:
        stat = path.stat()
    except OSError:
        raise PinMapError(f"pin map {name!r}: {path} does not exist (maps in {PINMAP_DIR}: {', '.join(available_pinmaps())})") from None
    return _load_cached(str(path), stat.st_mtime_ns, name)


@lru_cache(maxsize=16)
def _load_cached(path_s: str, _mtime: int, name: str) -> PinMap:
    path = Path(path_s)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PinMapError(f"pin map {path}: cannot be read: {exc}") from None

    def need(key: str, kind: type) -> Any:
        if not isinstance(raw.get(key), kind):
            raise PinMapError(f"pin map {path}: '{key}' is missing or not {kind.__name__}")
        return raw[key]

    def int_keys(table: str) -> dict[int, Any]:
        out = {}
        for k, v in need(table, dict).items():
            try:
                out[int(k)] = v
            except ValueError:
                raise PinMapError(f"pin map {path}: [{table}] key {k!r} is not a GPIO number") from None
        return out

    header = {g: int(p) for g, p in int_keys("header").items()}
    reserved = {g: str(why) for g, why in int_keys("reserved").items()}
    roles = {str(k): int(v) for k, v in need("roles", dict).items()}
    power = {str(k): tuple(int(x) for x in v) for k, v in raw.get("power", {}).items()}
    pm = PinMap(
        name=path.stem if name.endswith(".toml") or "/" in name else name,
        path=path,
        board=str(need("board", str)),
        mock_revision=str(need("mock_revision", str)),
        pin_factories=tuple(need("pin_factories", list)),
        roles=roles,
        reserved=reserved,
        header=header,
        power=power,
        boot_pull_up=frozenset(int(x) for x in raw.get("boot_pull", {}).get("up", [])),
    )
    problems = [f"role {r!r} is unknown (roles: {', '.join(ROLES)})" for r in roles if r not in ROLES]
    problems += [f"role {r} is on GPIO{g}, which is not on the header" for r, g in roles.items() if g not in header]
    problems += [f"role {r} is on reserved GPIO{g} ({reserved[g]})" for r, g in roles.items() if g in reserved]
    seen: dict[int, str] = {}
    for r, g in roles.items():
        if g in seen:
            problems.append(f"roles {seen[g]} and {r} share GPIO{g}")
        seen[g] = r
    if problems:
        raise PinMapError(f"pin map {path}: " + "; ".join(problems))
    return pm


def resolve_pins(
    pinmap: PinMap,
    overrides: dict[str, int],
    not_fitted: Iterable[str],
    release: Iterable[int],
) -> tuple[dict[str, int], list[Problem]]:
    """The GPIO of every fitted role, and every problem keyed relative to ``[gpio]``.

    Refused: an unknown role, a GPIO that is not on this board's header, a
    reserved GPIO that ``release`` does not free, two roles on one GPIO.
    """
    problems: list[Problem] = []
    absent = list(not_fitted)
    released = set(release)

    def unknown_role(key: str, role: str) -> Problem:
        close = difflib.get_close_matches(role, list(ROLES), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return Problem(key, f"unknown role {role!r}", f"{hint}roles: {', '.join(ROLES)}")

    for i, role in enumerate(absent):
        if role not in ROLES:
            problems.append(unknown_role(f"not_fitted[{i}]", role))
        elif role in overrides:
            problems.append(
                Problem(f"pins.{role}", "the role is also listed in gpio.not_fitted", "either give it a pin or mark it not fitted, not both")
            )
    for g in released:
        if g not in pinmap.reserved:
            problems.append(Problem("release", f"GPIO{g} is not reserved on {pinmap.board}", f"list only reserved pins: {sorted(pinmap.reserved)}"))

    pins: dict[str, int] = {}
    for role in ROLES:
        if role in absent:
            continue
        if role in overrides:
            pins[role] = overrides[role]
        elif role in pinmap.roles:
            pins[role] = pinmap.roles[role]
    for role in overrides:
        if role not in ROLES:
            problems.append(unknown_role(f"pins.{role}", role))

    used = set(pins.values())
    for role, gpio in pins.items():
        key = f"pins.{role}"
        where = "the pin map" if role not in overrides else "gpio.pins"
        if gpio not in pinmap.header:
            problems.append(
                Problem(
                    key,
                    f"GPIO{gpio} (from {where}) is not a GPIO on the {pinmap.board} header",
                    f"use a BCM GPIO number; free ones: {_list(pinmap.free_pins(used, released))}",
                )
            )
        elif gpio in pinmap.reserved and gpio not in released:
            problems.append(
                Problem(
                    key,
                    f"GPIO{gpio} is reserved: {pinmap.reserved[gpio]}",
                    f"pick a free pin ({_list(pinmap.free_pins(used, released))}) or add {gpio} to gpio.release if that function is unused",
                )
            )
    by_pin: dict[int, list[str]] = {}
    for role, gpio in pins.items():
        by_pin.setdefault(gpio, []).append(role)
    for gpio, roles in by_pin.items():
        if len(roles) > 1:
            for role in roles:
                others = ", ".join(f"gpio.pins.{r}" for r in roles if r != role)
                problems.append(
                    Problem(
                        f"pins.{role}",
                        f"GPIO{gpio} is used twice (also by {others})",
                        f"give each role its own pin; free ones: {_list(pinmap.free_pins(used, released))}",
                    )
                )
    return pins, problems


def _list(gpios: list[int]) -> str:
    return ", ".join(str(g) for g in gpios) or "none"
