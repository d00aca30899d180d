"""The monthly attendance book on SQLite and on a real PostgreSQL, from punches signed by real device keys and
stored by the consumer: time zones, worked time, breaks, time beyond a schedule, every anomaly kind, and HR
working through them (acknowledge; correct with a reason, beside the signed punch, which is never changed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from backend_support import SCHEDULE, Reader, seed_book, utc

from firmware_py.backend.book import BookError, compute, correct, import_schedules
from firmware_py.backend.consumer import PunchConsumer
from firmware_py.backend.db import Database
from firmware_py.backend.hr import HrMaster
from firmware_py.backend.registry import DbDeviceRegistry
from firmware_py.backend.store import PunchStore
from firmware_py.cli.main import main
from firmware_py.keys.jwk import public_jwk


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "book.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def seeded(tmp_path: Path, target: str) -> Database:
    return seed_book(Database.open(target), tmp_path)


def _signed(db: Database) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in db.query("SELECT id, jws FROM punches ORDER BY id")]


def test_book_times_schedule_and_every_anomaly_kind(seeded: Database) -> None:
    m = compute(seeded, "2026-12")
    days = {(d.person, d.date.isoformat()): d for d in m.days}
    assert sorted(days) == [("alice", "2026-12-01"), ("alice", "2026-12-02"), ("alice", "2026-12-03"),
                            ("bob", "2026-12-01"), ("bob", "2026-12-04"), ("carol", "2026-12-01")]  # fmt: skip
    a1 = days[("alice", "2026-12-01")]
    assert a1.first_in.isoformat() == "2026-12-01T08:30:00+09:00" and a1.last_out.isoformat() == "2026-12-01T19:00:00+09:00"
    assert a1.worked.total_seconds() == (210 + 360) * 60 and a1.breaks.total_seconds() == 60 * 60 and a1.punches == 5
    # scheduled 09-12 and 13-18: 8 h; 08:30-09:00 and 18:00-19:00 are beyond it
    assert a1.scheduled.total_seconds() == 8 * 3600 and a1.beyond.total_seconds() == 90 * 60
    # bob's group schedule is 09-17 Tokyo (00-08 UTC); his day at Lisbon 09-17 UTC lies wholly outside it
    b4 = days[("bob", "2026-12-04")]
    assert b4.worked.total_seconds() == 8 * 3600 and b4.beyond.total_seconds() == 8 * 3600 and b4.sites == ("site-b",)
    c1 = days[("carol", "2026-12-01")]
    assert c1.first_in.isoformat() == "2026-12-01T09:00:00+00:00" and c1.scheduled is None and c1.beyond is None
    found = sorted((a.kind, a.person, a.date.isoformat()) for a in m.anomalies)
    assert found == [
        ("clock_not_synced", "alice", "2026-12-03"),
        ("double_in", "alice", "2026-12-01"),
        ("in_without_out", "alice", "2026-12-02"),
        ("out_without_in", "bob", "2026-12-01"),
        ("wrong_site", "bob", "2026-12-04"),
        ("wrong_site", "bob", "2026-12-04"),
    ]
    assert all(a.status == "open" for a in m.anomalies)
    reasons = {a.kind: a.reason for a in m.anomalies}
    assert "bob is assigned to site-a" in reasons["wrong_site"] and "--add-out" in reasons["in_without_out"]
    assert "site-a/gate-2 had no synchronised clock" in reasons["clock_not_synced"]
    # one person, one site
    assert {d.person for d in compute(seeded, "2026-12", person="bob").days} == {"bob"}
    assert {(d.person, d.date.day) for d in compute(seeded, "2026-12", site="site-b").days} == {("bob", 1), ("bob", 4), ("carol", 1)}
    assert {d.person for d in compute(seeded, "2026-12", site="site-a").days} == {"alice", "bob"}
    assert compute(seeded, "2026-11").days[0].person == "bob"


def test_hr_works_through_the_anomalies_and_the_signed_punch_stays(seeded: Database, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", target]
    before = _signed(seeded)
    assert main(["backend", "anomalies", "list", "--month", "2026-12", "--json", *db]) == 0
    open_ = {(a["kind"], a["person"]): a for a in json.loads(capsys.readouterr().out)}
    missing_out = open_[("in_without_out", "alice")]["id"]
    # no reason: refused, nothing stored
    assert main(["backend", "anomalies", "correct", missing_out, "--add-out", "17:30", *db]) == 2
    assert "needs a reason" in capsys.readouterr().err
    assert main(["backend", "anomalies", "correct", missing_out, "--add-out", "08:00", "--reason", "x", *db]) == 2
    assert "not after the IN at 09:00" in capsys.readouterr().err
    assert main(["backend", "anomalies", "correct", "nonsense", "--void", "--reason", "x", *db]) == 2
    assert seeded.query("SELECT count(*) FROM corrections")[0][0] == 0
    assert main(["backend", "anomalies", "correct", missing_out, "--add-out", "17:30", "--reason", "forgot to punch out", "--by", "hr1", *db]) == 0
    capsys.readouterr()
    # the correction counts in the book; the anomaly is marked corrected and leaves the open list
    day2 = next(d for d in compute(seeded, "2026-12", person="alice").days if d.date.day == 2)
    assert day2.worked.total_seconds() == 8.5 * 3600 and day2.corrected == 1 and day2.last_out.isoformat() == "2026-12-02T17:30:00+09:00"
    wrong = open_[("wrong_site", "bob")]["id"]
    assert main(["backend", "anomalies", "ack", wrong, "--by", "hr1", "--note", "training day", *db]) == 0
    assert main(["backend", "anomalies", "ack", wrong, *db]) == 0
    assert "already acknowledged" in capsys.readouterr().out
    # the unsynced reader's 09:00 was really 08:45 (HR checked the camera log)
    unsynced = open_[("clock_not_synced", "alice")]["id"]
    assert main(["backend", "anomalies", "correct", unsynced, "--time", "08:45", "--reason", "camera log", "--by", "hr2", *db]) == 0
    day3 = next(d for d in compute(seeded, "2026-12", person="alice").days if d.date.day == 3)
    assert day3.first_in.isoformat() == "2026-12-03T08:45:00+09:00" and day3.worked.total_seconds() == (8 * 60 + 15) * 60
    assert main(["backend", "anomalies", "correct", missing_out, "--add-out", "18:00", "--reason", "again", *db]) == 2
    assert "is already corrected (add_out) by hr1: forgot to punch out" in capsys.readouterr().err
    statuses = {a.id: a.status for a in compute(seeded, "2026-12").anomalies}
    assert statuses[missing_out] == "corrected" and statuses[wrong] == "acknowledged" and statuses[unsynced] == "corrected"
    assert main(["backend", "anomalies", "list", "--month", "2026-12", "--json", *db]) == 0
    still_open = {a["id"] for a in json.loads(capsys.readouterr().out)}
    assert missing_out not in still_open and unsynced not in still_open and open_[("double_in", "alice")]["id"] in still_open
    # bob forgot his IN on 12-01; alice's double IN is voided
    out_only = open_[("out_without_in", "bob")]["id"]
    assert main(["backend", "anomalies", "correct", out_only, "--add-in", "09:00", "--reason", "badge forgotten", *db]) == 0
    double = open_[("double_in", "alice")]["id"]
    assert main(["backend", "anomalies", "correct", double, "--void", "--reason", "pressed twice", *db]) == 0
    b1 = next(d for d in compute(seeded, "2026-12", person="bob").days if d.date.day == 1)
    assert b1.worked.total_seconds() == 9 * 3600 and b1.beyond.total_seconds() == 3600 and b1.anomalies == ()
    a1 = next(d for d in compute(seeded, "2026-12", person="alice").days if d.date.day == 1)
    assert a1.punches == 4 and a1.anomalies == () and a1.worked.total_seconds() == 570 * 60
    assert _signed(seeded) == before  # every signed punch exactly as it was stored
    rows = seeded.query("SELECT reason, by_whom, action FROM corrections ORDER BY n")
    assert [tuple(r)[1:] for r in rows][:2] == [("hr1", "add_out"), ("hr2", "time")] and [r[0] for r in rows] == [
        "forgot to punch out",
        "camera log",
        "badge forgotten",
        "pressed twice",
    ]


def test_book_cli_csv_and_json(seeded: Database, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", target]
    assert main(["backend", "book", "--month", "2026-12", "--csv", *db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "person,date,sites,first_in,last_out,worked_minutes,break_minutes,scheduled_minutes,beyond_schedule_minutes,punches,corrected,anomalies"
    )
    assert lines[1] == "alice,2026-12-01,site-a,2026-12-01T08:30:00+09:00,2026-12-01T19:00:00+09:00,570,60,480,90,5,0,double_in"
    assert "carol,2026-12-01,site-b,2026-12-01T09:00:00+00:00,2026-12-01T17:00:00+00:00,480,0,,,2,0," in lines
    assert main(["backend", "book", "--month", "2026-12", "--person", "bob", "--json", *db]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [d["date"] for d in out["days"]] == ["2026-12-01", "2026-12-04"]
    assert sorted(a["kind"] for a in out["anomalies"]) == ["out_without_in", "wrong_site", "wrong_site"]
    assert main(["backend", "anomalies", "list", "--month", "2026-12", "--person", "bob", *db]) == 0
    text = capsys.readouterr().out.splitlines()
    assert len(text) == 3 and text[0].startswith("out_without_in:") and "\tbob\t2026-12-01\topen\tOUT at 18:00 at site-a/gate-1 has no IN" in text[0]
    assert main(["backend", "book", "--month", "2027-01", *db]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and "no punches in 2027-01" in captured.err
    assert main(["backend", "book", "--month", "2026-13", *db]) == 2
    assert main(["backend", "book", "--month", "december", *db]) == 2


def test_schedule_import_names_every_bad_row_and_changes_nothing(
    seeded: Database, tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = seeded.query("SELECT who, weekday, start_min, end_min, tz FROM schedules ORDER BY who, weekday, start_min")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "who,days,start,end,tz\n"
        "alice,mon-fri,08:00,12:00,Asia/Tokyo\n"
        "alice,fri,11:00,14:00,Asia/Tokyo\n"  # overlaps line 2 on Friday
        "zoe,mon,09:00,17:00,Asia/Tokyo\n"  # unknown person
        "bob,mon,09:00,17:00,Mars/Olympus\n"  # bad zone
        "site:harbour,mon,09:00,17:00,UTC\n"  # unknown site
        "carol,someday,25:00,17:00,UTC\n"  # bad days and time
        "carol,tue,18:00,09:00,UTC\n"  # night shift in one row
    )
    assert main(["backend", "schedules", "import", str(bad), "--db", target]) == 2
    err = capsys.readouterr().err
    assert "6 bad row(s); nothing was imported" in err
    for needle in (
        "line 3: the shift 11:00-14:00 of alice overlaps line 2 on fri",
        "line 4: unknown person 'zoe'",
        "line 5: time zone 'Mars/Olympus' is not an IANA zone",
        "line 6: unknown site 'harbour'",
        "line 7: days 'someday'",
        "start '25:00' is not a time",
        "line 8: end 09:00 is not after start 18:00",
    ):
        assert needle in err, needle
    after = seeded.query("SELECT who, weekday, start_min, end_min, tz FROM schedules ORDER BY who, weekday, start_min")
    assert [tuple(r) for r in after] == [tuple(r) for r in before] and len(before) == 15
    with pytest.raises(BookError, match="header"):
        import_schedules(seeded, b"person,days\n")
    good = tmp_path / "good.csv"
    good.write_text("who,days,start,end,tz\ncarol,mon;wed,09:00,17:00,Europe/Lisbon\n")
    assert main(["backend", "schedules", "import", str(good), "--db", target]) == 0
    assert json.loads(capsys.readouterr().out) == {"rows": 1, "people": 1, "groups": 0}
    assert seeded.query("SELECT count(*) FROM schedules")[0][0] == 2  # the file replaces every schedule


def test_night_shifts_across_midnight_are_one_shift(seeded: Database, tmp_path: Path) -> None:
    """IN 22:00, OUT 06:00 the next morning is one shift of the first day, also across the month's edges; an IN and an
    OUT further apart than any shift stay two anomalies; HR adds a missing night OUT as the next morning's."""
    night = Reader(tmp_path, site="site-b", device="gate-8", tz="Europe/Lisbon")  # UTC+0 in winter
    unsynced = Reader(tmp_path, site="site-b", device="gate-7", tz="Europe/Lisbon")
    unsynced.rec.clock_synced = lambda: False
    reg = DbDeviceRegistry(seeded)
    for r in (night, unsynced):
        reg.add(r.site, r.device, public_jwk(r.key))
    HrMaster(seeded).import_people(b"id,name,sites\ndave,Dave,site-b\n")
    # a night schedule is split at midnight: Mon-Fri 22-24 and the mornings after, Tue-Sat 00-06
    import_schedules(seeded, (SCHEDULE + "dave,mon-fri,22:00,24:00,Europe/Lisbon\ndave,tue-sat,00:00,06:00,Europe/Lisbon\n").encode())
    consumer = PunchConsumer(PunchStore(seeded), reg)
    for direction, ts in [
        ("in", "2026-11-30T22:00:00"),  # Mon night into Tue 12-01: November's shift
        ("out", "2026-12-01T06:00:00"),
        ("in", "2026-12-07T22:00:00"),  # Mon 12-07 night
        ("out", "2026-12-08T06:00:00"),
        ("in", "2026-12-08T14:00:00"),  # and a day shift on Tue 12-08 after it
        ("out", "2026-12-08T18:00:00"),
        ("in", "2026-12-09T09:00:00"),  # a forgotten OUT, then a forgotten IN: 32 h apart, not a shift
        ("out", "2026-12-10T17:00:00"),
        ("in", "2026-12-10T22:00:00"),  # no OUT the next morning: HR adds it
        ("in", "2026-12-31T22:00:00"),  # New Year's Eve night: December's, its OUT from a reader without a synced clock
        ("out", "2027-01-01T06:10:00"),
    ]:
        reader = unsynced if ts.startswith("2027") else night
        assert consumer.handle(reader.topic, reader.punch("dave", direction, utc(ts))).status == "stored"
    m = compute(seeded, "2026-12", person="dave")
    days = {d.date.day: d for d in m.days}
    assert sorted(days) == [7, 8, 9, 10, 31]  # 12-01's OUT is November's night shift
    d7 = days[7]
    assert d7.worked.total_seconds() == 8 * 3600 and d7.anomalies == () and d7.punches == 2
    assert d7.last_out is not None and d7.last_out.isoformat() == "2026-12-08T06:00:00+00:00"
    assert d7.scheduled is not None and d7.scheduled.total_seconds() == 2 * 3600 and d7.beyond is not None and d7.beyond.total_seconds() == 0
    d8 = days[8]
    assert d8.worked.total_seconds() == 4 * 3600 and d8.punches == 2 and d8.anomalies == () and d8.beyond is not None
    assert d8.beyond.total_seconds() == 4 * 3600  # 14-18 is outside the night schedule
    assert days[9].anomalies == ("in_without_out",) and days[10].anomalies == ("out_without_in", "in_without_out")
    assert days[31].worked.total_seconds() == (8 * 60 + 10) * 60 and days[31].anomalies == ("clock_not_synced",)
    assert {a.kind for a in m.anomalies} == {"in_without_out", "out_without_in", "clock_not_synced"}
    assert compute(seeded, "2027-01", person="dave").days == []  # the OUT of 01-01 closed December's shift
    nov = compute(seeded, "2026-11", person="dave").days
    assert [(d.date.day, d.worked.total_seconds(), d.anomalies) for d in nov] == [(30, 8 * 3600, ())]
    # HR adds the missing OUT of the 12-10 night: 06:00 is taken as the next morning's
    missing = next(a for a in m.anomalies if a.kind == "in_without_out" and a.date.day == 10)
    out = correct(seeded, missing.id, "add_out", reason="forgot to punch out after the night shift", by="hr1", at="06:00")
    assert out["direction"] == "out"
    d10 = next(d for d in compute(seeded, "2026-12", person="dave").days if d.date.day == 10)
    assert d10.worked.total_seconds() == 8 * 3600 and d10.anomalies == ("out_without_in",) and d10.corrected == 1
    assert d10.last_out is not None and d10.last_out.isoformat() == "2026-12-11T06:00:00+00:00"
    # the New Year OUT's time, corrected: found in December's book, set on its own day (01-01), not on 12-31
    unsynced_out = next(a for a in m.anomalies if a.kind == "clock_not_synced")
    assert unsynced_out.date.isoformat() == "2026-12-31" and unsynced_out.at.date().isoformat() == "2027-01-01"
    correct(seeded, unsynced_out.id, "time", reason="camera log", by="hr1", at="06:00")
    d31 = next(d for d in compute(seeded, "2026-12", person="dave").days if d.date.day == 31)
    assert d31.worked.total_seconds() == 8 * 3600 and d31.anomalies == () and d31.corrected == 1
