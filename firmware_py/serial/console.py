"""The technician console: a line-based shell on a serial line, behind a passphrase.

Any terminal program works (screen, minicom, picocom, PuTTY; 115200 8N1 by
default): the console echoes what is typed, understands backspace, Ctrl-C
and Ctrl-U, ends lines at CR, LF or CRLF, and answers with CRLF lines.
hw/README.md describes the protocol.

:class:`ConsoleSession` is the shell itself, independent of the transport
(bytes in through :meth:`ConsoleSession.feed`, bytes out through a write
function); :class:`SerialConsole` runs one on a pyserial port.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_py.config import Config
from firmware_py.events import EventBus
from firmware_py.serial.commands import CommandRegistry, ConsoleContext, builtin_registry, run_command
from firmware_py.serial.lines import Binary, Edit, Line, LineAssembler, TooLong
from firmware_py.serial.passphrase import LoginLimiter, PassphraseError, PassphraseStore
from firmware_py.serial.port import open_port
from firmware_py.serial.port_reader import SerialService

log = logging.getLogger(__name__)

LOGIN_PROMPT = "passphrase: "
SHELL_PROMPT = "kaoclock> "
# Refusals of bad input are reported on the bus at most this often (line noise must not flood it).
BAD_INPUT_EVENT_EVERY_S = 10.0


class ConsoleSession:
    """One technician session: login, then commands, until logout or idle timeout."""

    def __init__(
        self,
        ctx: ConsoleContext,
        write: Callable[[bytes], None],
        *,
        passphrases: PassphraseStore,
        limiter: LoginLimiter,
        registry: CommandRegistry | None = None,
        bus: EventBus | None = None,
        max_line_bytes: int = 256,
        echo: bool = True,
        idle_timeout_s: float = 300.0,
        device: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.registry = registry or builtin_registry()
        self._write = write
        self._passphrases = passphrases
        self._limiter = limiter
        self._bus = bus
        self._lines = LineAssembler(max_line_bytes, editing=True)
        self._echo = echo
        self._idle_timeout_s = idle_timeout_s
        self._device = device
        self._clock = clock
        self.logged_in = False
        self._last_input = clock()
        self._last_bad_event = float("-inf")

    # ------------------------------------------------------------ output

    def emit(self, type: str, severity: str = "info", **data: Any) -> None:
        if self._bus is not None:
            self._bus.emit_new(type, severity, device=self._device, **data)  # type: ignore[arg-type]

    def _out(self, text: str = "", *, newline: bool = True) -> None:
        self._write((text + ("\r\n" if newline else "")).encode("utf-8", "replace"))

    def prompt(self) -> None:
        self._out(SHELL_PROMPT if self.logged_in else LOGIN_PROMPT, newline=False)

    def greet(self) -> None:
        """What a technician sees when the port opens (and after pressing Enter)."""
        self._out()
        self._out(f"kaoclock {self.ctx.version} technician console. Enter the passphrase.")
        self.prompt()

    # ------------------------------------------------------------ input

    def feed(self, data: bytes) -> None:
        """Bytes from the line; ``b""`` is an idle tick (checks the session timeout)."""
        now = self._clock()
        if not data:
            if self.logged_in and now - self._last_input > self._idle_timeout_s:
                self.logged_in = False
                self._out()
                self._out(f"session closed after {self._idle_timeout_s:g} s without input")
                self.emit("console.idle_logout")
                self.prompt()
            return
        self._last_input = now
        for b in data:
            items = self._lines.feed(bytes([b]))
            if not items:
                if self._echo and self.logged_in and (b >= 0x20 and b != 0x7F) and 0 < self._lines.pending() <= self._lines.max_bytes:
                    self._write(bytes([b]))
                continue
            for item in items:
                self._handle(item)

    def _handle(self, item: Any) -> None:
        if isinstance(item, Edit):
            if item.cancelled:
                self._out("^C")
                self.prompt()
            elif self._echo and self.logged_in:
                self._write(b"\b \b" * item.erase)
            return
        self._out()  # end the echoed line
        if isinstance(item, TooLong):
            self._out(f"error: line too long ({item.length} bytes; the limit is {self._lines.max_bytes}); ignored")
            self._bad_input("too_long", length=item.length)
        elif isinstance(item, Binary):
            self._out("error: binary input refused: send text lines (is the baud rate right?)")
            self._bad_input("binary", sample=item.sample.hex())
        elif isinstance(item, Line):
            text = item.text.strip()
            if text:
                try:
                    self._shell(text) if self.logged_in else self._login(text)
                except Exception:
                    log.exception("console: command failed")
                    self._out("error: internal error (written to the log)")
        self.prompt()

    def _bad_input(self, kind: str, **data: Any) -> None:
        now = self._clock()
        if now - self._last_bad_event >= BAD_INPUT_EVENT_EVERY_S:
            self._last_bad_event = now
            self.emit("console.bad_input", "warning", kind=kind, **data)

    # ------------------------------------------------------------ login

    def _login(self, passphrase: str) -> None:
        verdict = self._limiter.check()
        if not verdict.allowed:
            if verdict.locked:
                self._out(f"console locked after too many wrong passphrases; try again in {verdict.wait_s:.0f} s")
            else:
                self._out(f"too soon: wait {verdict.wait_s:.1f} s before the next try")
            return
        try:
            ok = self._passphrases.verify(passphrase)
        except PassphraseError as exc:
            self._out(f"console unavailable: {exc}")
            return
        if ok:
            self._limiter.succeeded()
            self.logged_in = True
            self._out("logged in. Type 'help' for the commands, 'logout' to leave.")
            self.emit("console.login")
            return
        v = self._limiter.failed()
        self.emit("console.login_failed", "warning", failures=self._limiter.failures)
        if v.locked:
            self._out(f"wrong passphrase; console locked for {v.wait_s:.0f} s")
            self.emit("console.locked_out", "alarm", failures=self._limiter.failures, seconds=v.wait_s)
        else:
            self._out(f"wrong passphrase; next try in {v.wait_s:.1f} s")

    # ------------------------------------------------------------ shell

    def _shell(self, text: str) -> None:
        try:
            args = shlex.split(text)
        except ValueError as exc:
            self._out(f'error: {exc} (quote values with "...")')
            return
        if args[0] in ("logout", "exit", "quit"):
            self.logged_in = False
            self._out("logged out")
            self.emit("console.logout")
            return
        for line in run_command(self, args):
            self._out(line)


class SerialConsole:
    """The console on a serial port; an edge adapter with ``start()`` / ``stop()``."""

    def __init__(
        self, service_opener: Callable[[], Any], session_factory: Callable[[Callable[[bytes], None]], ConsoleSession], bus: EventBus | None = None
    ) -> None:
        self.service = SerialService("console", service_opener, self._on_bytes, bus)
        self.session = session_factory(self.service.write)
        self.service.on_open = self.session.greet

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        bus: EventBus | None,
        ctx: ConsoleContext,
        *,
        registry: CommandRegistry | None = None,
        data_dir: Path | None = None,
    ) -> SerialConsole:
        c = cfg.console
        data_dir = data_dir or cfg.device.data_dir
        limiter = LoginLimiter(data_dir, first_delay_s=c.login_delay_s, max_failures=c.max_failures, lockout_s=c.lockout_s)

        def session(write: Callable[[bytes], None]) -> ConsoleSession:
            return ConsoleSession(
                ctx,
                write,
                passphrases=PassphraseStore(data_dir),
                limiter=limiter,
                registry=registry,
                bus=bus,
                max_line_bytes=c.max_line_bytes,
                echo=c.echo,
                idle_timeout_s=c.idle_timeout_s,
                device=c.device,
            )

        return cls(lambda: open_port(c.device, c.baudrate, c.framing, key="console.device"), session, bus)

    @property
    def registry(self) -> CommandRegistry:
        return self.session.registry

    def _on_bytes(self, data: bytes) -> None:
        self.session.feed(data)

    def start(self) -> None:
        self.service.start()

    def stop(self) -> None:
        self.service.stop()


def daemon_console(
    cfg: Config,
    bus: EventBus,
    *,
    get_config: Callable[[], Config],
    apply_config: Callable[[Config, dict[str, Any]], str | None] | None = None,
    status: Callable[[], dict[str, Any]] | None = None,
    gallery_count: Callable[[], int] | None = None,
    edge: Any = None,
    registry: CommandRegistry | None = None,
) -> SerialConsole | None:
    """The console the daemon runs, or ``None`` when ``console.device`` is empty.

    ``status`` is merged with the gate's (``edge``: a :class:`~firmware_py.compose.gate_edge.GateEdge`),
    whose relay / LED / buzzer tests the console uses; the recent log is the
    process's ring buffer (installed here if it is not yet).
    """
    if not cfg.console.device:
        return None
    from firmware_py import __version__
    from firmware_py.serial.ring_log import install

    ring = install()
    hooks = edge.console_hooks() if edge is not None else {}
    edge_status = hooks.pop("status", None)

    def merged_status() -> dict[str, Any]:
        out: dict[str, Any] = {"firmware": __version__, "device": {"id": get_config().device.id, "site": get_config().device.site}}
        if status is not None:
            out.update(status())
        if edge_status is not None:
            out.update(edge_status())
        return out

    ctx = ConsoleContext(
        version=__version__,
        get_config=get_config,
        apply_config=apply_config,
        status=merged_status,
        gallery_count=gallery_count,
        log_lines=ring.lines,
        **hooks,
    )
    return SerialConsole.from_config(cfg, bus, ctx, registry=registry)
