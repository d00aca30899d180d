"""Structured logs: journald's native protocol on a real datagram socket, JSON lines, and the journald stream check."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import struct
from pathlib import Path

import pytest

from firmware_py.service.logs import JournalHandler, JsonFormatter, configure_logging, encode_entry, under_journald


def parse_native(data: bytes) -> dict[str, str]:
    """Decode journald's native protocol (the reader side, as journald does)."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields[k.decode()] = v.decode()
            i = nl + 1
        else:
            (n,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            fields[line.decode()] = data[nl + 9 : nl + 9 + n].decode()
            assert data[nl + 9 + n : nl + 10 + n] == b"\n"
            i = nl + 10 + n
    return fields


def test_journal_entries_carry_priority_identifier_code_location_and_extra_fields(tmp_path: Path) -> None:
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(tmp_path / "journal.sock"))
    journal.settimeout(2)
    handler = JournalHandler("kaoclock", address=str(tmp_path / "journal.sock"))
    log = logging.getLogger("kaoclock.test.journal")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("slot %s rolled back", "b", extra={"event": "update.rolled_back", "slot": "b"})
        f = parse_native(journal.recv(65536))
        assert f["MESSAGE"] == "slot b rolled back" and f["PRIORITY"] == "4" and f["SYSLOG_IDENTIFIER"] == "kaoclock"
        assert f["KAOCLOCK_EVENT"] == "update.rolled_back" and f["KAOCLOCK_SLOT"] == "b"
        assert f["CODE_FILE"].endswith("test_service_logs.py") and f["CODE_FUNC"].startswith("test_journal")
        try:
            raise ValueError("bad frame")
        except ValueError:
            log.exception("pipeline failed")
        f = parse_native(journal.recv(65536))
        assert f["PRIORITY"] == "3" and f["MESSAGE"].startswith("pipeline failed\nTraceback") and "ValueError: bad frame" in f["MESSAGE"]
    finally:
        log.removeHandler(handler)
        handler.close()
        journal.close()


def test_when_journald_is_gone_lines_fall_back_to_stderr_with_a_priority_prefix(tmp_path: Path) -> None:
    err = io.StringIO()
    handler = JournalHandler("kaoclock", address=str(tmp_path / "absent.sock"), fallback=err)
    record = logging.LogRecord("kaoclock.x", logging.ERROR, __file__, 1, "disk %s", ("full",), None)
    handler.emit(record)
    handler.close()
    assert err.getvalue() == "<3>kaoclock.x: disk full\n"


def test_encode_entry_uses_the_binary_safe_form_only_for_multiline_values() -> None:
    data = encode_entry({"A": "x", "B": "two\nlines"})
    assert data == b"A=x\nB\n" + struct.pack("<Q", 9) + b"two\nlines\n"
    assert parse_native(data) == {"A": "x", "B": "two\nlines"}


def test_json_lines_hold_the_message_and_extra_fields() -> None:
    record = logging.LogRecord("kaoclock.punch", logging.INFO, __file__, 1, "punch %s", ("p1",), None)
    record.person = "e-0042"
    doc = json.loads(JsonFormatter().format(record))
    assert doc["msg"] == "punch p1" and doc["level"] == "info" and doc["logger"] == "kaoclock.punch" and doc["person"] == "e-0042"
    assert doc["ts"].endswith("Z")


def test_journald_is_detected_from_journal_stream_naming_our_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "stream", "w") as fh:
        st = os.fstat(fh.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert under_journald(fh)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not under_journald(fh)  # stderr was redirected elsewhere: not the journal
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not under_journald()


def test_configure_logging_json_replaces_the_root_handlers() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        handler = configure_logging("debug", "json")
        assert root.handlers == [handler] and isinstance(handler.formatter, JsonFormatter) and root.level == logging.DEBUG
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
