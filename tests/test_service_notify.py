"""sd_notify on a real AF_UNIX datagram socket bound by the test as $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_py.config import with_changes
from firmware_py.config.model import Config
from firmware_py.service.notify import Notifier, watchdog_timeout
from firmware_py.service.runtime import ServiceRuntime


class SystemdStandIn:
    """The receiving end systemd keeps: a bound datagram socket."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def receive(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def drain(self) -> list[dict[str, str]]:
        out = []
        self.sock.settimeout(0.0)
        try:
            while True:
                out.append(dict(line.split("=", 1) for line in self.sock.recv(4096).decode().split("\n")))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(2.0)
        return out


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SystemdStandIn]:
    path = str(tmp_path / "notify.sock")
    stand_in = SystemdStandIn(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield stand_in
    stand_in.sock.close()


def test_ready_status_watchdog_and_stopping_arrive_as_datagrams(systemd: SystemdStandIn) -> None:
    n = Notifier.from_env()
    assert n.enabled
    assert n.ready("loading done")
    msg = systemd.receive()
    assert msg["READY"] == "1" and msg["STATUS"] == "loading done" and msg["MAINPID"] == str(os.getpid())
    assert n.status("2 faces\nin view")
    assert systemd.receive() == {"STATUS": "2 faces in view"}  # one line: a newline would start a new assignment
    assert n.watchdog()
    assert systemd.receive() == {"WATCHDOG": "1"}
    assert n.extend_timeout(1.5)
    assert systemd.receive() == {"EXTEND_TIMEOUT_USEC": "1500000"}
    assert n.stopping("bye")
    assert systemd.receive() == {"STOPPING": "1", "STATUS": "bye"}


def test_abstract_namespace_sockets_are_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"kaoclock-test-{os.getpid()}"
    stand_in = SystemdStandIn(b"\0" + name.encode())
    try:
        assert Notifier(f"@{name}").ready()
        assert stand_in.receive()["READY"] == "1"
    finally:
        stand_in.sock.close()


def test_without_systemd_nothing_is_sent_and_nothing_breaks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier.from_env()
    assert not n.enabled and not n.ready() and not n.watchdog()
    gone = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert gone.enabled and not gone.watchdog()  # a vanished socket is reported once, never raised
    assert not Notifier("vsock:2:1234").enabled


def test_watchdog_timeout_follows_the_environment_systemd_sets() -> None:
    assert watchdog_timeout({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_timeout({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_timeout({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # meant for another process
    assert watchdog_timeout({}) is None and watchdog_timeout({"WATCHDOG_USEC": "junk"}) is None


def test_the_runtime_built_from_config_notifies_ready_and_stopping(systemd: SystemdStandIn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    cfg = with_changes(Config(), {"device.data_dir": str(tmp_path / "data"), "service.frame_stall_seconds": 5.0})
    svc = ServiceRuntime.from_config(cfg)
    assert svc.watchdog.timeout == pytest.approx(0.2) and svc.watchdog.interval == pytest.approx(0.1)
    svc.start()
    svc.ready()
    svc.frame_processed()
    seen = [systemd.receive() for _ in range(3)]
    assert any(m.get("READY") == "1" for m in seen) and any(m.get("WATCHDOG") == "1" for m in seen)
    assert (tmp_path / "data" / "run" / "heartbeat.json").is_file()
    svc.stop()
    assert any(m.get("STOPPING") == "1" for m in systemd.drain())
    assert not (tmp_path / "data" / "run" / "heartbeat.json").exists()
