"""Console commands: a registry other packages extend, and the built-in commands.

A command is a function ``(session, args) -> iterable of output lines``; it
gets everything it needs from ``session.ctx``, a :class:`ConsoleContext` of
plain callables, so the console never imports the pipeline, the gallery or
MQTT.  Other packages add commands (``enrol`` ...) with
``registry.add(Command(...))`` or the :meth:`CommandRegistry.command`
decorator.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, get_origin

from firmware_py.config import Config, ConfigError, get_value, parse_value, with_changes
from firmware_py.config.loader import is_secret
from firmware_py.config.schema import Problem, Section, section_fields
from firmware_py.errors import KaoclockError


class SessionLike(Protocol):
    ctx: ConsoleContext
    registry: CommandRegistry

    def emit(self, type: str, severity: str = "info", **data: Any) -> None: ...


Handler = Callable[[SessionLike, list[str]], Iterable[str] | None]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str  # "config get KEY | config set KEY VALUE"
    help: str  # one line
    handler: Handler


class CommandUsageError(KaoclockError):
    """A command was typed wrongly; the console prints the message and the usage."""


class CommandRegistry:
    """Commands by their first word."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, command: Command) -> None:
        if command.name in self._commands:
            raise ValueError(f"console command {command.name!r} is already registered")
        self._commands[command.name] = command

    def command(self, name: str, usage: str, help: str) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.add(Command(name, usage, help, fn))
            return fn

        return deco

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def names(self) -> list[str]:
        return sorted(self._commands)

    def suggest(self, name: str) -> str | None:
        close = difflib.get_close_matches(name, self.names(), n=1)
        return close[0] if close else None


@dataclass
class ConsoleContext:
    """What the console may see and do, as callables; ``None`` = not available on this reader.

    ``apply_config(new_config, changes)`` is called with an already validated
    config; it makes the change take effect and/or saves it, returns a short
    note for the technician, and raises :class:`ConfigError` /
    :class:`KaoclockError` to refuse (then nothing has changed).
    """

    version: str
    get_config: Callable[[], Config]
    apply_config: Callable[[Config, dict[str, Any]], str | None] | None = None
    status: Callable[[], Mapping[str, Any]] | None = None
    gallery_count: Callable[[], int] | None = None
    log_lines: Callable[[int], list[str]] | None = None
    relay_test: Callable[[float], None] | None = None
    led_test: Callable[[], Iterable[str]] | None = None
    buzzer_test: Callable[[], None] | None = None


def _need(value: Any, what: str) -> Any:
    if value is None:
        raise KaoclockError(f"{what} is not available on this console (the reader's daemon provides it)")
    return value


def _fmt(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _check_key(key: str) -> None:
    """Refuse a dotted key the schema does not have (a key inside a table such as gpio.pins.X is the schema's to judge)."""
    cls: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: tp for f, tp in section_fields(cls)}
        if part not in fields:
            close = difflib.get_close_matches(part, sorted(fields), n=1)
            hint = f"did you mean {'.'.join([*parts[:i], close[0]])!r}? " if close else ""
            raise ConfigError([Problem(key, "unknown key", f"{hint}list the keys with `kaoclock config example`")])
        tp = fields[part]
        if get_origin(tp) is dict:
            if i >= len(parts) - 2:
                return
            break
        if isinstance(tp, type) and issubclass(tp, Section):
            cls = tp
            continue
        if i == len(parts) - 1:
            return
        break
    raise ConfigError([Problem(key, "is not a setting", "name one key, e.g. camera.width")])


# ---------------------------------------------------------------- built-ins


def cmd_help(s: SessionLike, args: list[str]) -> Iterable[str]:
    if args:
        c = s.registry.get(args[0])
        if c is None:
            raise CommandUsageError(f"no command {args[0]!r}")
        return [f"{c.usage}", f"  {c.help}"]
    width = max(len(s.registry.get(n).usage) for n in s.registry.names())  # type: ignore[union-attr]
    out = [f"{s.registry.get(n).usage:<{width}}  {s.registry.get(n).help}" for n in s.registry.names()]  # type: ignore[union-attr]
    return [*out, "logout".ljust(width) + "  end the session"]


def cmd_status(s: SessionLike, args: list[str]) -> Iterable[str]:
    data = _need(s.ctx.status, "status")()
    return [f"{k}: {_fmt(v)}" for k, v in _flatten(data)]


def cmd_log(s: SessionLike, args: list[str]) -> Iterable[str]:
    n = 20
    if args:
        if not args[0].isdigit() or not 1 <= int(args[0]) <= 500:
            raise CommandUsageError("the line count must be a number from 1 to 500")
        n = int(args[0])
    lines = _need(s.ctx.log_lines, "the recent log")(n)
    return lines or ["(no log lines yet)"]


def cmd_version(s: SessionLike, args: list[str]) -> Iterable[str]:
    return [f"kaoclock {s.ctx.version}"]


def cmd_gallery(s: SessionLike, args: list[str]) -> Iterable[str]:
    if args != ["count"]:
        raise CommandUsageError("say: gallery count")
    return [f"{_need(s.ctx.gallery_count, 'the gallery')()} people enrolled"]


def cmd_test(s: SessionLike, args: list[str]) -> Iterable[str]:
    what = args[0] if args else ""
    if what == "relay":
        seconds = 1.0
        if len(args) > 1:
            try:
                seconds = float(args[1])
            except ValueError:
                raise CommandUsageError(f"{args[1]!r} is not a number of seconds") from None
            if not 0.1 <= seconds <= 30:
                raise CommandUsageError("the relay test lasts 0.1 to 30 seconds")
        _need(s.ctx.relay_test, "the relay test")(seconds)
        s.emit("console.relay_test", "warning", seconds=seconds)
        return [f"relay released for {seconds:g} s (you should hear it click twice and the lock open)"]
    if what == "leds":
        return _need(s.ctx.led_test, "the LED test")()
    if what == "buzzer":
        _need(s.ctx.buzzer_test, "the buzzer test")()
        return ["buzzer sounded"]
    raise CommandUsageError("say: test relay [SECONDS] | test leds | test buzzer")


def cmd_config(s: SessionLike, args: list[str]) -> Iterable[str]:
    if len(args) == 2 and args[0] == "get":
        key = args[1]
        value = get_value(s.ctx.get_config(), key)
        return [f"{key} = {'<secret>' if is_secret(key) else _fmt(value)}"]
    if len(args) >= 3 and args[0] == "set":
        key, text = args[1], " ".join(args[2:])
        current = s.ctx.get_config()
        _check_key(key)  # an unknown key is refused by name before anything else
        new = with_changes(current, {key: parse_value(text, key)})  # ConfigError: printed, nothing applied
        apply = _need(s.ctx.apply_config, "changing the configuration")
        value = get_value(new, key)
        note = apply(new, {key: value})
        shown = "<secret>" if is_secret(key) else _fmt(value)
        s.emit("console.config_changed", "warning", key=key, value=shown)
        return [f"ok: {key} = {shown}"] + ([note] if note else [])
    raise CommandUsageError("say: config get KEY | config set KEY VALUE")


def builtin_registry() -> CommandRegistry:
    """A registry holding the built-in commands."""
    r = CommandRegistry()
    r.add(Command("help", "help [COMMAND]", "list the commands, or explain one", cmd_help))
    r.add(Command("status", "status", "device, door, gate, feedback and storage state", cmd_status))
    r.add(Command("log", "log [N]", "the last N log lines (default 20)", cmd_log))
    r.add(Command("test", "test relay [S] | test leds | test buzzer", "release the lock for S seconds / show every LED pattern / beep", cmd_test))
    r.add(
        Command("config", "config get KEY | config set KEY VALUE", "read or change a setting (validated; refused values change nothing)", cmd_config)
    )
    r.add(Command("gallery", "gallery count", "how many people this reader knows", cmd_gallery))
    r.add(Command("version", "version", "firmware version", cmd_version))
    return r


def run_command(session: SessionLike, line_args: list[str]) -> Iterator[str]:
    """Run one command line; errors become output lines, never exceptions."""
    name, args = line_args[0], line_args[1:]
    cmd = session.registry.get(name)
    if cmd is None:
        hint = session.registry.suggest(name)
        yield f"error: unknown command {name!r}" + (f"; did you mean {hint!r}?" if hint else "") + " (type help)"
        return
    try:
        out = cmd.handler(session, args)
        if isinstance(out, str):
            out = [out]
        yield from out or ()
    except ConfigError as exc:
        yield "refused: " + str(exc).splitlines()[0]
        for p in exc.problems:
            yield f"  {p.key}: {p.message}"
            yield f"    fix: {p.fix}"
    except CommandUsageError as exc:
        yield f"error: {exc}"
        yield f"usage: {cmd.usage}"
    except KaoclockError as exc:
        yield f"error: {exc}"
