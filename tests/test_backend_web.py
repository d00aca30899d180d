"""The backend's web page through Flask's test client on SQLite (the browser test covers PostgreSQL): bad input gets a
clear message and the right status with nothing changed; read-only unless started with corrections; the login, the
session cookie and the CSRF check; `backend users` with the password from standard input; paging the book."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from backend_support import seed_book

from firmware_py.backend import users, web
from firmware_py.backend.db import Database
from firmware_py.cli.main import main

PASSWORD = "correct horse battery"


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "book.sqlite"
    seed_book(Database.open(path), tmp_path).close()
    return path


def _csrf(html: bytes) -> str:
    m = re.search(rb'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1).decode()


def _counts(path: Path) -> tuple[int, int]:
    db = Database.open(path)
    try:
        return db.query("SELECT count(*) FROM corrections")[0][0], db.query("SELECT count(*) FROM anomaly_acks")[0][0]
    finally:
        db.close()


def test_bad_input_gets_a_clear_message_and_the_right_status(db_file: Path, tmp_path: Path) -> None:
    c = web.create_app(db_file, tmp_path / "home").test_client()
    for url, status, needle in [
        ("/book?month=2027-01", 404, "no punches in 2027-01"),
        ("/book?month=2026-13", 400, "month &#39;2026-13&#39; is not a month; write YYYY-MM"),
        ("/book?month=december", 400, "is not a month"),
        ("/book?month=2026-12&site=harbour", 404, "no site &#39;harbour&#39;"),
        ("/book?month=2026-12&page=2", 404, "page 2 is past the last page (1)"),
        ("/book?month=2026-12&page=x", 400, "is not a number"),
        ("/person/zed?month=2026-12", 404, "no person &#39;zed&#39;"),
        ("/person/carol?month=2026-11", 404, "no punches in 2026-11 for carol"),
        ("/anomalies?month=2026-12&kind=late", 400, "kind &#39;late&#39; is not one of in_without_out"),
        ("/reader/site-a/gate-7", 404, "no reader site-a/gate-7"),
        ("/reader/site-a/gate-1?hours=0", 400, "hours must be more than 0"),
        ("/person/%3Cscript%3E?month=2026-12", 404, "&lt;script&gt;"),  # escaped, never markup
    ]:
        r = c.get(url)
        assert r.status_code == status and needle.encode() in r.data, (url, r.status_code, r.data[-600:])
    assert b"<script>" not in c.get("/person/%3Cscript%3E?month=2026-12").data
    r = c.get("/book?month=2026-12&site=site-b")  # the site's people: carol, and bob who punched there
    assert r.status_code == 200 and b">bob</a>" in r.data and b">carol</a>" in r.data and b">alice</a>" not in r.data
    assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert c.get("/").headers["Location"].endswith("/book?month=2026-12")  # the newest month with punches
    r = c.get("/reader/site-a/gate-1")  # registered, never sent telemetry
    assert r.status_code == 200 and b"No telemetry from this reader yet" in r.data and b"never_seen" in r.data
    fleet = c.get("/fleet?site=site-b").data
    assert b'data-reader="site-b/gate-9"' in fleet and b'data-reader="site-a/' not in fleet


def test_read_only_by_default(db_file: Path, tmp_path: Path) -> None:
    users.add_user(Database.open(db_file), "hr1", PASSWORD)
    c = web.create_app(db_file, tmp_path / "home").test_client()
    page = c.get("/person/alice?month=2026-12")
    assert b"read-only" in page.data and b'name="reason"' not in page.data and b"Log in" not in page.data
    assert c.get("/login").status_code == 404
    with c.session_transaction() as s:
        s["csrf"], s["user"] = "t", "hr1"  # even a forged session of a real user cannot write
    r = c.post("/anomaly/ack", data={"csrf": "t", "anomaly": "wrong_site:x"})
    assert r.status_code == 403 and b"read-only" in r.data and _counts(db_file) == (0, 0)


def test_login_session_csrf_and_corrections(db_file: Path, tmp_path: Path) -> None:
    users.add_user(Database.open(db_file), "hr1", PASSWORD)
    app = web.create_app(db_file, tmp_path / "home", corrections=True)
    assert (tmp_path / "home" / "web-session.key").stat().st_mode & 0o777 == 0o600
    c = app.test_client()
    page = c.get("/anomalies?month=2026-12")
    ids = re.findall(rb'data-id="([^"]+)"', page.data)
    aid = next(i.decode() for i in ids if i.startswith(b"wrong_site:"))
    token = _csrf(c.get("/login").data)
    # not logged in: refused
    assert c.post("/anomaly/ack", data={"csrf": token, "anomaly": aid}).status_code == 401
    # a wrong password, then a missing CSRF token: refused
    r = c.post("/login", data={"csrf": token, "name": "hr1", "password": "wrong password!"})
    assert r.status_code == 401 and b"wrong user name or password" in r.data
    assert c.post("/login", data={"name": "hr1", "password": PASSWORD}).status_code == 400
    r = c.post("/login", data={"csrf": token, "name": "hr1", "password": PASSWORD, "next": "//evil.example/"})
    assert r.status_code == 302 and r.headers["Location"] == "/"  # never redirected off the server
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "kaoclock_session=" in cookie
    token = _csrf(c.get("/anomalies?month=2026-12").data)  # a new token after login
    # a stale token (from before the login) and a forged one are refused; nothing changed
    for bad in ("", "forged"):
        r = c.post("/anomaly/ack", data={"csrf": bad, "anomaly": aid})
        assert r.status_code == 400 and b"CSRF" in r.data
    # a correction without a reason, or with a bad time: refused with the book's own message
    missing = next(i.decode() for i in ids if i.startswith(b"in_without_out:"))
    r = c.post("/anomaly/correct", data={"csrf": token, "anomaly": missing, "action": "add_out", "value": "17:30", "reason": "  "})
    assert r.status_code == 400 and b"a correction needs a reason" in r.data
    r = c.post("/anomaly/correct", data={"csrf": token, "anomaly": missing, "action": "add_out", "value": "25:99", "reason": "x"})
    assert r.status_code == 400 and b"needs a local time HH:MM" in r.data
    r = c.post("/anomaly/correct", data={"csrf": token, "anomaly": missing, "action": "delete", "value": "", "reason": "x"})
    assert r.status_code == 400 and b"unknown correction" in r.data
    assert _counts(db_file) == (0, 0)
    r = c.post("/anomaly/ack", data={"csrf": token, "anomaly": aid, "note": "training day", "back": "/anomalies?month=2026-12"})
    assert r.status_code == 302 and r.headers["Location"] == "/anomalies?month=2026-12"
    assert b"acknowledged" in c.get("/anomalies?month=2026-12").data
    assert _counts(db_file) == (0, 1)
    db = Database.open(db_file)
    assert db.query("SELECT by_whom, note FROM anomaly_acks")[0] == ("hr1", "training day")
    # a removed user's session ends at the next request
    users.remove_user(db, "hr1")
    r = c.post("/anomaly/ack", data={"csrf": token, "anomaly": missing})
    assert r.status_code == 401 and _counts(db_file) == (0, 1)


def test_users_cli_reads_the_password_from_stdin(db_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", str(db_file)]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["backend", "users", "add", "hr1", *db]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["backend", "users", "add", "hr2", *db]) == 4
    assert "at least 10 characters" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("another long password\n"))
    assert main(["backend", "users", "add", "hr1", *db]) == 4
    assert "exists; use --replace" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["backend", "users", "add", "bad name", *db]) == 4
    assert main(["backend", "users", "list", "--json", *db]) == 0
    assert capsys.readouterr().out.strip().endswith('["hr1"]')
    stored = Database.open(db_file).query("SELECT password_hash FROM web_users")[0][0]
    assert stored.startswith("scrypt$32768$8$1$") and PASSWORD not in stored
    assert users.authenticate(Database.open(db_file), "hr1", PASSWORD) and not users.authenticate(Database.open(db_file), "hr1", "x" * 12)
    monkeypatch.setattr("sys.stdin", io.StringIO("another long password\n"))
    assert main(["backend", "users", "add", "hr1", "--replace", *db]) == 0
    assert users.authenticate(Database.open(db_file), "hr1", "another long password")
    assert main(["backend", "users", "remove", "hr9", *db]) == 4
    assert main(["backend", "users", "remove", "hr1", *db]) == 0


def test_the_book_is_paged_by_people(db_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "PAGE", 2)
    c = web.create_app(db_file, tmp_path / "home").test_client()
    one, two = c.get("/book?month=2026-12").data, c.get("/book?month=2026-12&page=2").data
    assert b">alice</a>" in one and b">bob</a>" in one and b">carol</a>" not in one and b"Page 1 of 2 (3 people)" in one
    assert b">carol</a>" in two and b">alice</a>" not in two
    anomalies = c.get("/anomalies?month=2026-12&kind=wrong_site").data
    assert anomalies.count(b'data-id="wrong_site:') == 2 and b"People alice to bob" in anomalies


def test_serve_refuses_bad_arguments_and_a_missing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing.sqlite"
    assert main(["backend", "serve", "--db", str(missing), "--port", "0"]) == 2
    assert "no punch database at" in capsys.readouterr().err and not missing.exists()  # not created empty
    assert main(["backend", "serve", "--db", str(missing), "--port", "70000"]) == 2
    assert "--port must be 0-65535" in capsys.readouterr().err
