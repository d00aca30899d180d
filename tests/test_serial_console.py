"""The technician console over a real pty with pyserial, driven the way a technician types.

The test plays the terminal on the pty's master side; the console opens the
slave with ``serial.Serial``.  Login delays use an injected clock so the
rate limiting is checked without sleeping through it.
"""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

import pytest
import serial
from gpiozero.pins.mock import MockFactory

from firmware_py.config import load
from firmware_py.events import Event, EventBus
from firmware_py.serial.commands import Command, ConsoleContext
from firmware_py.serial.console import ConsoleSession, SerialConsole
from firmware_py.serial.lines import Binary, Edit, Line, LineAssembler, TooLong
from firmware_py.serial.passphrase import LoginLimiter, PassphraseStore
from firmware_py.serial.ring_log import RingBufferHandler
from firmware_py.serial.standalone import StandaloneContext

PASS = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class Terminal:
    """The technician's side of the cable."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.seen = b""

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def read_until(self, marker: bytes, timeout: float = 10.0) -> str:
        end = time.monotonic() + timeout
        buf = b""
        while marker not in buf:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {marker!r} from the console; got {buf!r}")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                buf += os.read(self.fd, 4096)
        self.seen += buf
        return buf.decode("utf-8", "replace")

    def cmd(self, line: str, prompt: bytes = b"kaoclock> ") -> str:
        self.send(line.encode() + b"\r")
        return self.read_until(prompt)


@pytest.fixture
def console(tmp_path: Path):
    cfg_path = tmp_path / "kaoclock.toml"
    cfg_path.write_text(f'[device]\nid = "gate-7"\ndata_dir = "{tmp_path}"\n\n[door]\npulse_s = 2.0\n')
    PassphraseStore(tmp_path).set(PASS)
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    ring = RingBufferHandler(50)
    factory = MockFactory(revision="c03114")
    sc = StandaloneContext(cfg_path, bus, ring, pin_factory=factory)
    ctx = sc.context()
    clock = Clock()
    master, slave = os.openpty()
    path = os.ttyname(slave)

    def session(write):
        limiter = LoginLimiter(tmp_path, first_delay_s=2.0, max_failures=3, lockout_s=60.0, clock=clock)
        return ConsoleSession(
            ctx, write, passphrases=PassphraseStore(tmp_path), limiter=limiter, bus=bus, idle_timeout_s=300, max_line_bytes=256, clock=clock
        )

    con = SerialConsole(lambda: serial.Serial(path, 115200, timeout=0.05), session, bus)
    con.start()
    term = Terminal(master)
    yield term, con, clock, events, cfg_path, factory, ring
    con.stop()
    os.close(master)
    os.close(slave)


def test_a_technician_session(console) -> None:
    term, _con, clock, events, cfg_path, factory, ring = console
    types = lambda: [e.type for e in events]  # noqa: E731
    assert "technician console" in term.read_until(b"passphrase: ")

    # Wrong passphrase: refused, and the next try is spaced out.
    assert "wrong passphrase; next try in 2.0 s" in term.cmd("letmein-please", b"passphrase: ")
    assert "too soon: wait" in term.cmd(PASS, b"passphrase: ")  # even the right one is not checked yet
    clock.t += 2.1
    assert "next try in 4.0 s" in term.cmd("hunter2-hunter2", b"passphrase: ")
    clock.t += 4.1
    out = term.cmd("password123", b"passphrase: ")
    assert "console locked for 60 s" in out
    assert types().count("console.login_failed") == 3 and "console.locked_out" in types()
    assert "console locked" in term.cmd(PASS, b"passphrase: ")
    assert PASS.encode() not in term.seen  # the passphrase is never echoed
    clock.t += 61
    assert "logged in" in term.cmd(PASS)
    assert "console.login" in types()

    # Status and a read.
    status = term.cmd("status")
    assert "device.id: gate-7" in status and "door.pulse_s: 2.0" in status
    assert "camera.width = 640" in term.cmd("config get camera.width")

    # A refused change prints the config error and changes nothing.
    before = cfg_path.read_text()
    out = term.cmd("config set camera.width 10")
    assert "refused" in out and "camera.width: 10 is below the minimum 64" in out and "fix: set a value >= 64" in out
    assert cfg_path.read_text() == before
    assert "camera.width = 640" in term.cmd("config get camera.width")
    assert "gpio.pins.relay: GPIO14 is reserved" in term.cmd("config set gpio.pins.relay 14")
    assert "unknown key" in term.cmd("config set camera.widht 800")

    # An accepted change is saved (validated) and reads back.
    out = term.cmd("config set camera.width 800")
    assert "ok: camera.width = 800" in out
    assert load(cfg_path).camera.width == 800 and load(cfg_path).device.id == "gate-7"
    assert (cfg_path.parent / "kaoclock.toml.bak").read_text() == before
    assert "camera.width = 800" in term.cmd("config get camera.width")
    assert any(e.type == "console.config_changed" and e.data["key"] == "camera.width" for e in events)

    # Relay test: the relay pin (GPIO17) goes high for the requested time.
    out = term.cmd("test relay 0.5")
    assert "relay released for 0.5 s" in out
    relay = factory.pin("GPIO17")
    highs = [relay.states[i].timestamp for i in range(1, len(relay.states)) if relay.states[i - 1].state]
    assert len(highs) == 1 and 0.48 <= highs[0] <= 0.5 + 0.3
    assert "console.relay_test" in types()

    # Bad input is refused and the console carries on.
    assert "line too long (300 bytes" in term.cmd("x" * 300)
    assert "binary input refused" in term.cmd("\x00\x01\xfe garbage")
    assert "unknown command 'stauts'; did you mean 'status'?" in term.cmd("stauts")
    assert "usage: config get KEY" in term.cmd("config frobnicate")
    assert "kaoclock 0." in term.cmd("version")
    assert "not available on this console" in term.cmd("gallery count")
    ring.emit(__import__("logging").makeLogRecord({"msg": "camera reconnected", "levelno": 20, "levelname": "INFO", "name": "x"}))
    assert "camera reconnected" in term.cmd("log 5")

    # Typing with backspace and an arrow key, as a terminal sends them.
    assert "kaoclock 0." in term.cmd("versiox\x7fn\x1b[A")

    # Idle: the session closes by itself.
    clock.t += 301
    assert "session closed after 300 s without input" in term.read_until(b"passphrase: ")
    assert "console.idle_logout" in types()
    assert "logged in" in term.cmd(PASS)
    assert "logged out" in term.cmd("logout", b"passphrase: ")


def test_lockout_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    a = LoginLimiter(tmp_path, first_delay_s=1.0, max_failures=2, lockout_s=100.0, clock=clock)
    a.failed()
    clock.t += 1.5
    assert a.failed().locked
    b = LoginLimiter(tmp_path, first_delay_s=1.0, max_failures=2, lockout_s=100.0, clock=clock)  # the daemon restarted
    v = b.check()
    assert not v.allowed and v.locked and 99 <= v.wait_s <= 100
    clock.t += 101
    assert b.check().allowed


def test_passphrase_store(tmp_path: Path) -> None:
    store = PassphraseStore(tmp_path)
    assert not store.is_set()
    with pytest.raises(Exception, match="at least 10"):
        store.set("short")
    store.set(PASS)
    assert store.verify(PASS) and not store.verify(PASS + "x")
    text = store.path.read_text()
    assert PASS not in text and '"kdf": "scrypt"' in text
    assert store.path.stat().st_mode & 0o777 == 0o600
    store.path.write_text("{not json")
    with pytest.raises(Exception, match="damaged"):
        store.verify(PASS)


def test_console_without_passphrase_says_how_to_set_one(tmp_path: Path) -> None:
    out: list[bytes] = []
    ctx = ConsoleContext(version="0.1.0", get_config=lambda: load(None))
    s = ConsoleSession(ctx, out.append, passphrases=PassphraseStore(tmp_path), limiter=LoginLimiter(tmp_path))
    s.feed(b"anything-at-all\r")
    assert b"kaoclock console set-passphrase" in b"".join(out)
    assert not s.logged_in


def test_commands_are_a_registry_other_rooms_extend(tmp_path: Path) -> None:
    PassphraseStore(tmp_path).set(PASS)
    out: list[bytes] = []
    ctx = ConsoleContext(version="0.1.0", get_config=lambda: load(None), gallery_count=lambda: 42)
    s = ConsoleSession(ctx, out.append, passphrases=PassphraseStore(tmp_path), limiter=LoginLimiter(tmp_path))
    s.registry.add(Command("enrol", "enrol PERSON", "start live enrolment", lambda sess, args: [f"enrolling {args[0]}"]))
    with pytest.raises(ValueError):
        s.registry.add(Command("enrol", "x", "x", lambda sess, args: []))
    s.feed(PASS.encode() + b"\r")
    s.feed(b"help\r")
    s.feed(b"enrol p-042\r")
    s.feed(b"gallery count\r")
    text = b"".join(out).decode()
    assert "enrol PERSON" in text and "enrolling p-042" in text and "42 people enrolled" in text


def test_line_assembler_framing() -> None:
    la = LineAssembler(8)
    assert la.feed(b"ab\r\ncd\nef\r") == [Line("ab"), Line("cd"), Line("ef")]
    assert la.feed(b"\n") == []  # the LF of a CRLF split across reads
    assert la.feed(b"0123456789abc\rok\r") == [TooLong(13), Line("ok")]
    assert la.feed(b"\xff\xfe\r")[0] == Binary(b"\xff\xfe")
    assert la.feed(b"a\x07b\r") == [Binary(b"a\x07b")]
    ed = LineAssembler(16, editing=True)
    assert ed.feed("héx\x7f\x7fy\r".encode()) == [Edit(erase=1), Edit(erase=1), Line("hy")]
    assert ed.feed(b"junk\x03") == [Edit(cancelled=True)]
    assert ed.feed(b"\x1b[Dok\r") == [Line("ok")]


def test_kaoclock_console_command_on_a_pty(tmp_path: Path) -> None:
    """`kaoclock console --device PTY --config FILE` as a technician starts it, until SIGTERM."""
    import signal
    import subprocess
    import sys

    cfg_path = tmp_path / "kaoclock.toml"
    cfg_path.write_text(f'[device]\nid = "gate-9"\ndata_dir = "{tmp_path}"\n')
    PassphraseStore(tmp_path).set(PASS)
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_py", "console", "--device", os.ttyname(slave), "--config", str(cfg_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            term = Terminal(master)
            term.read_until(b"passphrase: ", timeout=30)
            assert "logged in" in term.cmd(PASS)
            assert "device.id: gate-9" in term.cmd("status")
            assert "ok: door.pulse_s = 5.0" in term.cmd("config set door.pulse_s 5")
            assert load(cfg_path).door.pulse_s == 5.0
            # A string with newlines cannot smuggle a table into the file: it is escaped, and the file reads back as set.
            assert "ok" in term.cmd("config set camera.source '\"clip.mp4\\n[mqtt]\\nenabled = true\"'")
            reread = load(cfg_path)
            assert reread.camera.source == "clip.mp4\n[mqtt]\nenabled = true" and reread.mqtt.enabled is False
            assert "console.config_changed" in term.cmd("log 50")  # events reach the recent log
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert f"kaoclock console on {os.ttyname(slave)} at 115200 8N1" in err
    finally:
        os.close(master)
        os.close(slave)


def test_daemon_console_with_the_gate(tmp_path: Path) -> None:
    """What the daemon wires: the gate's status and relay test behind the console, on a pty."""
    from firmware_py.compose.gate_edge import GateEdge
    from firmware_py.config import Config, with_changes
    from firmware_py.serial.console import daemon_console

    class NullRecorder:
        def record(self, decision, direction):  # never called here
            raise AssertionError

    master, slave = os.openpty()
    cfg = with_changes(Config(), {"device.data_dir": str(tmp_path), "console.device": os.ttyname(slave), "direction.mode": "fixed-in"})
    assert daemon_console(with_changes(cfg, {"console.device": ""}), EventBus(), get_config=lambda: cfg) is None
    PassphraseStore(tmp_path).set(PASS)
    bus = EventBus()
    edge = GateEdge.from_config(cfg, bus, NullRecorder(), pin_factory=MockFactory(revision="c03114"))
    edge.start()
    con = daemon_console(cfg, bus, get_config=lambda: cfg, status=lambda: {"pipeline": {"fps": 14.8}}, gallery_count=lambda: 31, edge=edge)
    assert con is not None
    con.start()
    try:
        term = Terminal(master)
        term.read_until(b"passphrase: ")
        term.cmd(PASS)
        status = term.cmd("status")
        assert "pipeline.fps: 14.8" in status and "door.lock: fail-secure" in status and "gate.direction: fixed-in" in status
        assert "31 people enrolled" in term.cmd("gallery count")
        assert "refused" in term.cmd("config set door.pulse_s 99")
        assert "not available" in term.cmd("config set door.pulse_s 4")  # this daemon gave no apply hook
        relay = edge.devices.relay.pin
        relay.clear_states()
        term.cmd("test relay 0.3")
        assert relay.states[1].state is True
    finally:
        con.stop()
        edge.stop()
        os.close(master)
        os.close(slave)
