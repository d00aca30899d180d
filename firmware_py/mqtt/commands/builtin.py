"""The built-in commands: ``door.open``, ``config.reload``, ``status.request``, ``ping``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_py.config import Config, ConfigError, load, with_changes
from firmware_py.decision.ports import Door
from firmware_py.mqtt.commands.registry import CommandContext, CommandRefused, CommandRegistry


class RunningConfig:
    """The configuration the daemon runs with, replaced only by a validated one.

    ``path`` is the file it was loaded from (None for the embedded default);
    listeners registered with :meth:`on_change` get every new configuration.
    """

    def __init__(self, cfg: Config, path: Path | str | None = None) -> None:
        self._cfg = cfg
        self.path = Path(path) if path is not None else None
        self._listeners: list[Callable[[Config], None]] = []
        self._lock = threading.Lock()

    @property
    def current(self) -> Config:
        return self._cfg

    def on_change(self, fn: Callable[[Config], None]) -> None:
        self._listeners.append(fn)

    def apply(self, cfg: Config) -> None:
        with self._lock:
            self._cfg = cfg
        for fn in list(self._listeners):
            fn(cfg)


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    from firmware_py.config.schema import to_plain

    a, b = (to_plain(old), to_plain(new)) if not prefix else (old, new)
    keys: list[str] = []
    for k in sorted(set(a) | set(b)):
        dotted = f"{prefix}.{k}" if prefix else k
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _changed_keys(va, vb, dotted)
        elif va != vb:
            keys.append(dotted)
    return keys


def register_builtin(
    registry: CommandRegistry,
    *,
    door: Door | None = None,
    config: RunningConfig | None = None,
    status: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Register the four built-in commands on ``registry``.

    A command whose port is missing (no door, no running config) is still
    registered and refuses with reason ``unavailable``, so the backend learns
    why rather than getting ``unknown_command``.
    """

    def door_open(ctx: CommandContext) -> dict[str, Any]:
        if door is None:
            raise CommandRefused("unavailable", "this device has no door relay configured")
        why = ctx.args.get("reason", "")
        if not isinstance(why, str) or len(why) > 200:
            raise CommandRefused("bad_args", "args.reason must be a string of at most 200 characters")
        door.grant(f"remote command {ctx.id}" + (f": {why}" if why else ""))
        return {"opened": True}

    def config_reload(ctx: CommandContext) -> dict[str, Any]:
        if config is None:
            raise CommandRefused("unavailable", "this daemon does not support config reload")
        changes = ctx.args.get("changes")
        old = config.current
        try:
            if changes is None:
                if config.path is None:
                    raise CommandRefused("unavailable", "running on the embedded default config: there is no file to reload; send args.changes")
                new = load(config.path)
            else:
                if not isinstance(changes, dict) or not all(isinstance(k, str) for k in changes):
                    raise CommandRefused("bad_args", 'args.changes must be an object of dotted keys, e.g. {"camera.fps": 10}')
                new = with_changes(old, changes)
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
            raise CommandRefused(
                "config_invalid", "the new configuration was refused; the running one is unchanged", {"problems": problems}
            ) from None
        changed = _changed_keys(old, new)
        config.apply(new)
        return {"applied": True, "changed": changed, "source": "changes" if changes is not None else str(config.path)}

    def status_request(ctx: CommandContext) -> dict[str, Any]:
        if status is None:
            raise CommandRefused("unavailable", "no status provider is wired")
        return status()

    def ping(ctx: CommandContext) -> dict[str, Any]:
        echo = ctx.args.get("echo")
        if echo is not None and (not isinstance(echo, str) or len(echo) > 200):
            raise CommandRefused("bad_args", "args.echo must be a string of at most 200 characters")
        return {"pong": True, "echo": echo}

    registry.register("door.open", door_open, doc="Release the door lock for the configured pulse.", args=["reason"])
    registry.register(
        "config.reload",
        config_reload,
        doc="Re-read the config file (no args) or apply dotted-key changes in memory; validated, never half-applied.",
        args=["changes"],
    )
    registry.register("status.request", status_request, doc="Publish status and telemetry now; the result holds the snapshot.", args=[])
    registry.register("ping", ping, doc="Answer with pong (and the echo argument).", args=["echo"])
