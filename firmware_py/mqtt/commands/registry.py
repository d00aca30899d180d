"""The command registry: names to handlers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")


class CommandRefused(Exception):
    """Raised by a handler to refuse a command; ``reason`` is a short code, the message is for people."""

    def __init__(self, reason: str, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.result = result


@dataclass(frozen=True)
class CommandContext:
    """What a handler knows about the command it runs."""

    id: str
    name: str
    args: dict[str, Any]
    claims: dict[str, Any]
    key_id: str  # the backend key that signed it
    received: float


Handler = Callable[[CommandContext], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Registered:
    name: str
    handler: Handler
    doc: str = ""
    allowed_args: frozenset[str] | None = None  # None: the handler checks its own args
    meta: dict[str, Any] = field(default_factory=dict)


class CommandRegistry:
    """Handlers by command name (``door.open``, ``config.reload``, ``gallery.add`` ...)."""

    def __init__(self) -> None:
        self._handlers: dict[str, Registered] = {}

    def register(self, name: str, handler: Handler, *, doc: str = "", args: Iterable[str] | None = None, replace: bool = False) -> None:
        """Add ``handler`` for ``name``.

        ``args`` lists the argument names the command accepts; any other key
        is refused (reason ``bad_args``) before the handler runs.  A name can
        be registered once unless ``replace`` is given.
        """
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"command name {name!r} must be dotted lowercase words (e.g. 'door.open')")
        if name in self._handlers and not replace:
            raise ValueError(f"command {name!r} is already registered")
        self._handlers[name] = Registered(name, handler, doc, frozenset(args) if args is not None else None)

    def get(self, name: str) -> Registered | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)
