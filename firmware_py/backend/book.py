"""The monthly attendance book: per person and day, first IN, last OUT, worked time, breaks, time beyond
the schedule, and the anomalies HR works through (acknowledge, or correct with a reason).

Days are calendar days in each punch's site time zone (the ``tz`` the reader
signed).  Pairing, per person and day in time order: an IN opens an interval,
the next OUT closes it.  Worked time is the sum of the closed intervals (real
elapsed time, so a daylight-saving change inside a shift counts right);
breaks are the gaps between them.  A night shift is one shift of the day it
began: an IN still open at the end of its day is closed by the next day's
first punch when that is an OUT within ``NIGHT_SHIFT_MAX`` (IN 22:00, OUT
06:00 the next morning: eight hours on the first day, no anomaly).

Anomalies, each tied to one punch (its id is ``<kind>:<punch id>``):

* ``in_without_out``: an IN with no OUT after it that day (or a later IN more
  than ``DOUBLE_IN`` after it);
* ``out_without_in``: an OUT with nothing open;
* ``double_in``: a second IN within ``DOUBLE_IN`` of an open one (not counted);
* ``wrong_site``: a punch at a site the person is not assigned to in the HR master;
* ``clock_not_synced``: the reader signed the punch without a synchronised
  clock (``clock_synced`` false), so its time may be wrong.

A correction never touches the signed punch: it is a row in ``corrections``
beside it (void the punch, set its direction or local time, or add the
missing IN/OUT on its day), with the reason and who made it, applied
whenever the book is computed.

Schedules (``schedules import``): a CSV ``who,days,start,end,tz``; ``who``
is a person id or ``site:<site>`` (the group of everyone assigned to that
site; a person's own rows win over their sites').  Time beyond the schedule
is worked time outside the scheduled windows of that day.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmware_py.backend.csvfile import csv_rows
from firmware_py.backend.db import Database
from firmware_py.errors import ExitCode, KaoclockError

KINDS = ("in_without_out", "out_without_in", "double_in", "wrong_site", "clock_not_synced")
DOUBLE_IN = timedelta(minutes=10)
NIGHT_SHIFT_MAX = timedelta(
    hours=16
)  # (the load window in _load follows it) longer than any shift: an IN and an OUT further apart are two mistakes, not one shift
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ACTIONS = ("void", "direction", "time", "add_in", "add_out")
Action = Literal["void", "direction", "time", "add_in", "add_out"]
MONTH_RE = re.compile(r"\d{4}-\d{2}")
HHMM_RE = re.compile(r"(\d{1,2}):(\d{2})")


class BookError(KaoclockError):
    """A refused schedule import, acknowledgement or correction; nothing was changed."""

    exit_code = ExitCode.USAGE  # bad input, like a refused HR master change


# ------------------------------------------------------------------ data


@dataclass
class Punch:
    id: str
    site: str
    device: str
    person: str
    direction: str
    ts: datetime  # aware, UTC
    tz: str
    clock_synced: bool | None
    corrected: bool = False  # a correction changed or added it
    local: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.local = self.ts.astimezone(_zone(self.tz))


@dataclass(frozen=True)
class Anomaly:
    id: str
    kind: str
    person: str
    date: date
    site: str
    device: str
    punch_id: str
    at: datetime
    reason: str
    status: str  # open, acknowledged, corrected

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "person": self.person,
            "date": self.date.isoformat(),
            "site": self.site,
            "device": self.device,
            "punch_id": self.punch_id,
            "at": self.at.isoformat(timespec="seconds"),
            "reason": self.reason,
            "status": self.status,
        }


@dataclass(frozen=True)
class BookDay:
    person: str
    date: date
    sites: tuple[str, ...]
    first_in: datetime | None
    last_out: datetime | None
    worked: timedelta
    breaks: timedelta
    scheduled: timedelta | None  # None: no schedule for this person
    beyond: timedelta | None
    punches: int
    corrected: int
    anomalies: tuple[str, ...]  # kinds, open or not

    def as_dict(self) -> dict[str, Any]:
        def minutes(td: timedelta | None) -> int | None:
            return None if td is None else int(td.total_seconds() // 60)

        return {
            "person": self.person,
            "date": self.date.isoformat(),
            "sites": list(self.sites),
            "first_in": self.first_in.isoformat(timespec="seconds") if self.first_in else None,
            "last_out": self.last_out.isoformat(timespec="seconds") if self.last_out else None,
            "worked_minutes": minutes(self.worked),
            "break_minutes": minutes(self.breaks),
            "scheduled_minutes": minutes(self.scheduled),
            "beyond_schedule_minutes": minutes(self.beyond),
            "punches": self.punches,
            "corrected": self.corrected,
            "anomalies": list(self.anomalies),
        }


@dataclass(frozen=True)
class Shift:
    weekday: int
    start: int  # minutes after local midnight
    end: int
    tz: str


_ZONES: dict[str, ZoneInfo] = {}


def _zone(name: str) -> ZoneInfo:
    z = _ZONES.get(name)
    if z is None:
        z = _ZONES[name] = ZoneInfo(name)
    return z


def parse_month(text: str) -> tuple[date, date]:
    """First day of the month and of the next one, or :class:`ValueError`."""
    if not MONTH_RE.fullmatch(text):
        raise ValueError(f"month {text!r} must be YYYY-MM")
    first = date.fromisoformat(text + "-01")
    nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, nxt


def _ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


# ------------------------------------------------------------------ schedules


@dataclass(frozen=True)
class ScheduleRow:
    line: int
    who: str
    weekdays: tuple[int, ...]
    start: int
    end: int
    tz: str


def _days(text: str) -> tuple[int, ...] | None:
    out: list[int] = []
    for part in (p.strip().lower() for p in text.split(";") if p.strip()):
        if "-" in part:
            a, _, b = part.partition("-")
            if a not in WEEKDAYS or b not in WEEKDAYS or WEEKDAYS.index(a) > WEEKDAYS.index(b):
                return None
            out += range(WEEKDAYS.index(a), WEEKDAYS.index(b) + 1)
        elif part in WEEKDAYS:
            out.append(WEEKDAYS.index(part))
        else:
            return None
    return tuple(sorted(set(out))) or None


def _hhmm(text: str) -> int | None:
    m = HHMM_RE.fullmatch(text.strip())
    if not m or int(m[1]) > 24 or int(m[2]) > 59 or (int(m[1]) == 24 and int(m[2]) != 0):
        return None
    return int(m[1]) * 60 + int(m[2])


def parse_schedule_csv(data: bytes, people: Iterable[str], sites: Iterable[str], where: str = "schedule CSV") -> list[ScheduleRow]:
    """The rows of a schedule CSV, or :class:`BookError` naming every bad row."""
    known_people, known_sites = set(people), set(sites)
    problems: list[str] = []
    rows: list[ScheduleRow] = []
    for line, (who, days_t, start_t, end_t, tz) in csv_rows(data, ("who", "days", "start", "end", "tz"), where, problems, BookError):
        bad = []
        if who.startswith("site:"):
            if who[5:] not in known_sites:
                bad.append(f"unknown site {who[5:]!r}")
        elif who not in known_people:
            bad.append(f"unknown person {who!r} (import them with `kaoclock backend people import` first)")
        days = _days(days_t)
        if days is None:
            bad.append(f"days {days_t!r} must be weekdays like mon-fri or mon;wed;fri")
        start, end = _hhmm(start_t), _hhmm(end_t)
        if start is None:
            bad.append(f"start {start_t!r} is not a time HH:MM")
        if end is None:
            bad.append(f"end {end_t!r} is not a time HH:MM")
        if start is not None and end is not None and end <= start:
            bad.append(f"end {end_t} is not after start {start_t} (split a night shift into two rows at midnight)")
        try:
            _zone(tz)
        except (ZoneInfoNotFoundError, ValueError):
            bad.append(f"time zone {tz!r} is not an IANA zone (e.g. Asia/Tokyo)")
        if bad:
            problems.append(f"line {line}: " + "; ".join(bad))
            continue
        assert days is not None and start is not None and end is not None
        row = ScheduleRow(line, who, days, start, end, tz)
        for other in rows:
            common = set(other.weekdays) & set(days)
            if other.who == who and common and other.start < end and start < other.end:
                day = WEEKDAYS[min(common)]
                problems.append(f"line {line}: the shift {start_t}-{end_t} of {who} overlaps line {other.line} on {day}")
                break
        else:
            rows.append(row)
    if problems:
        shown = problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else [])
        raise BookError(f"{where}: {len(problems)} bad row(s); nothing was imported:\n  " + "\n  ".join(shown))
    return rows


def import_schedules(db: Database, data: bytes, where: str = "schedule CSV") -> dict[str, int]:
    """Replace every schedule by the file's, in one transaction (a bad file changes nothing)."""
    people = [r[0] for r in db.query("SELECT person_id FROM people")]
    sites = [r[0] for r in db.query("SELECT site FROM sites")]
    rows = parse_schedule_csv(data, people, sites, where)
    now = time.time()
    with db.tx() as cur:
        cur.execute("DELETE FROM schedules")
        cur.executemany(
            "INSERT INTO schedules(who, weekday, start_min, end_min, tz, imported) VALUES(?,?,?,?,?,?)",
            [(r.who, d, r.start, r.end, r.tz, now) for r in rows for d in r.weekdays],
        )
    return {"rows": len(rows), "people": len({r.who for r in rows if not r.who.startswith("site:")}),
            "groups": len({r.who for r in rows if r.who.startswith("site:")})}  # fmt: skip


# ------------------------------------------------------------------ the book


@dataclass
class Month:
    first: date
    days: list[BookDay]
    anomalies: list[Anomaly]


def _load(db: Database, first: date, nxt: date, person: str | None, site: str | None, people: Sequence[str] | None = None) -> list[Punch]:
    # Every zone (UTC-12 .. UTC+14) has the month's local days within 14 h before and 12 h after its UTC bounds; a night
    # shift across the month's edges adds up to NIGHT_SHIFT_MAX: its IN 16 h before the 1st (30 h in UTC+14), its OUT
    # up to 16 h after the last day (28 h in UTC-12).
    hour = 3_600_000
    sql = "SELECT id, site, device, person, direction, ts_ms, tz, clock_synced FROM punches WHERE ts_ms >= ? AND ts_ms < ?"
    params: list[Any] = [_ms(first) - 30 * hour, _ms(nxt) + 28 * hour]
    if person:
        sql += " AND person = ?"
        params.append(person)
    if people is not None:
        sql += (" AND person IN (" + ",".join("?" * len(people)) + ")") if people else " AND 1 = 0"
        params += list(people)
    if site:  # the site's people: assigned to it or punched there this month; all their punches, so their days pair up
        sql += (
            " AND person IN (SELECT person FROM punches WHERE site = ? AND ts_ms >= ? AND ts_ms < ?"
            " UNION SELECT person_id FROM person_sites WHERE site = ?)"
        )
        params += [site, params[0], params[1], site]
    punches = {
        r[0]: Punch(r[0], r[1], r[2], r[3], r[4], datetime.fromtimestamp(r[5] / 1000, UTC), r[6], None if r[7] is None else bool(r[7]))
        for r in db.query(sql, params)
    }
    csql = "SELECT n, punch_id, action, person, site, direction, ts_ms, tz FROM corrections WHERE ts_ms IS NULL OR (ts_ms >= ? AND ts_ms < ?)"
    loaded = {p.person for p in punches.values()}
    for n, pid, action, who, csite, direction, ts_ms, tz in db.query(csql + " ORDER BY n", params[:2]):
        if who not in loaded:
            continue
        p = punches.get(pid)
        if action == "void":
            punches.pop(pid, None)
        elif action == "direction" and p:
            punches[pid] = replace(p, direction=direction, corrected=True)
        elif action == "time" and p:
            punches[pid] = replace(p, ts=datetime.fromtimestamp(ts_ms / 1000, UTC), clock_synced=True, corrected=True)
        elif action in ("add_in", "add_out"):
            punches[f"correction-{n}"] = Punch(
                f"correction-{n}", csite, "hr", who, direction, datetime.fromtimestamp(ts_ms / 1000, UTC), tz, True, corrected=True
            )
    return list(punches.values())


def _shifts(db: Database) -> dict[str, list[Shift]]:
    out: dict[str, list[Shift]] = {}
    for who, wd, s, e, tz in db.query("SELECT who, weekday, start_min, end_min, tz FROM schedules"):
        out.setdefault(who, []).append(Shift(int(wd), int(s), int(e), tz))
    return out


def _windows(shifts: list[Shift], day: date) -> list[tuple[datetime, datetime]]:
    out = []
    for s in shifts:
        if s.weekday == day.weekday():
            z = _zone(s.tz)
            base = datetime(day.year, day.month, day.day, tzinfo=z)
            out.append(((base + timedelta(minutes=s.start)).astimezone(UTC), (base + timedelta(minutes=s.end)).astimezone(UTC)))
    return out


def compute(db: Database, month: str, person: str | None = None, site: str | None = None, people: Sequence[str] | None = None) -> Month:
    """The book of ``month`` (YYYY-MM), optionally of one person, of one site's people (assigned to it or punched
    there that month; every punch of theirs, so a day split between two sites still pairs up), or of ``people``
    (a page of the web view)."""
    first, nxt = parse_month(month)
    punches = _load(db, first, nxt, person, site, people)
    assigned: dict[str, set[str]] = {}
    for pid, s in db.query("SELECT person_id, site FROM person_sites"):
        assigned.setdefault(pid, set()).add(s)
    shifts = _shifts(db)
    acked = {r[0] for r in db.query("SELECT anomaly FROM anomaly_acks")}
    corrected = {r[0] for r in db.query("SELECT anomaly FROM corrections")}
    by_day: dict[tuple[str, date], list[Punch]] = {}
    before = first - timedelta(days=1)
    for p in punches:
        d = p.local.date()
        if before <= d <= nxt:  # the day before and after the month only for night shifts crossing its edges
            by_day.setdefault((p.person, d), []).append(p)
    for key in by_day:
        by_day[key].sort(key=lambda p: (p.ts, p.id))
    days: list[BookDay] = []
    anomalies: list[Anomaly] = []
    window_cache: dict[tuple[str | None, date], list[tuple[datetime, datetime]]] = {}

    def windows_of(who: str, day: date) -> list[tuple[datetime, datetime]]:
        w = window_cache.get((who, day))
        if w is None:  # a group's windows are the same for all its people
            w = window_cache[(who, day)] = _windows(shifts[who], day)
        return w

    for person_id, day in sorted(by_day):
        items = by_day[(person_id, day)]
        if day == nxt:
            continue
        if day == before:  # the last day of the month before: a night shift from it takes its OUT off the 1st
            _carry_night_out(items, by_day.get((person_id, first)))
            continue
        if not items:  # its only punch was the OUT of the night before
            continue
        night_out = _carry_night_out(items, by_day.get((person_id, day + timedelta(days=1))))
        if night_out is not None:
            items = [*items, night_out]
        sites_of = assigned.get(person_id, set())
        found: list[tuple[str, Punch, str]] = []
        for p in items:
            if not p.id.startswith("correction-"):  # HR-added punches are HR's word
                if p.site not in sites_of:
                    where = f"assigned to {';'.join(sorted(sites_of))}" if sites_of else "not in the HR master"
                    found.append(
                        ("wrong_site", p, f"punched at {p.site}, but {person_id} is {where}; add the site in the HR master or acknowledge the visit")
                    )
                if p.clock_synced is False:
                    found.append(("clock_not_synced", p, f"reader {p.site}/{p.device} had no synchronised clock, so {_t(p)} may be wrong;"
                                  " check its time source (NTP) and correct the time (--time HH:MM) or acknowledge"))  # fmt: skip
        open_in: Punch | None = None
        intervals: list[tuple[datetime, datetime]] = []
        for p in items:
            if p.direction == "in":
                if open_in is None:
                    open_in = p
                elif p.ts - open_in.ts <= DOUBLE_IN:
                    mins = int((p.ts - open_in.ts).total_seconds() // 60)
                    found.append(("double_in", p, f"second IN at {_t(p)}, {mins} min after the IN at {_t(open_in)}; not counted."
                                  " If it was an OUT, correct --direction out; else acknowledge"))  # fmt: skip
                else:
                    found.append(("in_without_out", open_in, _no_out(open_in, p)))
                    open_in = p
            elif open_in is not None:
                intervals.append((open_in.ts, p.ts))
                open_in = None
            else:
                found.append(("out_without_in", p, f"OUT at {_t(p)} at {p.site}/{p.device} has no IN before it that day"
                              " (a missed IN, or a night shift from the day before); add it (--add-in HH:MM) or void this OUT"))  # fmt: skip
        if open_in is not None:
            found.append(("in_without_out", open_in, _no_out(open_in, None)))
        worked = sum((b - a for a, b in intervals), timedelta())
        breaks = sum((intervals[i + 1][0] - intervals[i][1] for i in range(len(intervals) - 1)), timedelta())
        who = person_id if person_id in shifts else next((f"site:{s}" for s in sorted(sites_of) if f"site:{s}" in shifts), None)
        scheduled = beyond = None
        if who is not None:
            windows = windows_of(who, day)
            scheduled = sum((b - a for a, b in windows), timedelta())
            # a night shift's interval runs into the next day's scheduled windows (a night schedule is split at midnight)
            both = windows + windows_of(who, day + timedelta(days=1)) if night_out is not None else windows
            inside = sum((max(timedelta(), min(b, wb) - max(a, wa)) for a, b in intervals for wa, wb in both), timedelta())
            beyond = worked - inside
        ins = [p.local for p in items if p.direction == "in"]
        outs = [p.local for p in items if p.direction == "out"]
        for kind, p, reason in found:
            aid = f"{kind}:{p.id}"
            status = "corrected" if aid in corrected else "acknowledged" if aid in acked else "open"
            anomalies.append(Anomaly(aid, kind, person_id, day, p.site, p.device, p.id, p.local, reason, status))
        days.append(
            BookDay(
                person_id, day, tuple(sorted({p.site for p in items})), min(ins) if ins else None, max(outs) if outs else None,
                worked, breaks, scheduled, beyond, len(items), sum(p.corrected for p in items), tuple(k for k, _, _ in found),
            )
        )  # fmt: skip
    # A corrected anomaly is gone from the pairing above; HR's list keeps it, marked corrected, with what was done.
    seen = {a.id for a in anomalies}
    in_book = {d.person for d in days}
    done_sql = (
        "SELECT c.anomaly, c.punch_id, c.person, c.site, c.ts_ms, c.tz, c.action, c.reason, c.by_whom, p.device"
        " FROM corrections c LEFT JOIN punches p ON p.id = c.punch_id ORDER BY c.n DESC"
    )
    for aid, pid, who, csite, ts_ms, tz, action, reason, by, device in db.query(done_sql):
        local = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(_zone(tz))
        if aid in seen or who not in in_book or not first <= local.date() < nxt:
            continue
        seen.add(aid)
        note = f"corrected ({action}) by {by}: {reason}"
        anomalies.append(Anomaly(aid, aid.partition(":")[0], who, local.date(), csite, device or "", pid, local, note, "corrected"))
    anomalies.sort(key=lambda a: (a.person, a.date, a.at, a.kind))
    return Month(first, days, anomalies)


def _ends_open(items: list[Punch]) -> Punch | None:
    """The IN still open after a day's punches (the pairing below, without the anomalies)."""
    open_in: Punch | None = None
    for p in items:
        if p.direction == "in":
            if open_in is None or p.ts - open_in.ts > DOUBLE_IN:
                open_in = p
        else:
            open_in = None
    return open_in


def _carry_night_out(items: list[Punch], next_day: list[Punch] | None) -> Punch | None:
    """The next day's first punch when it is the OUT of a night shift begun on this day (removed from that day)."""
    if not next_day or next_day[0].direction != "out":
        return None
    open_in = _ends_open(items)
    if open_in is None or next_day[0].ts - open_in.ts > NIGHT_SHIFT_MAX:
        return None
    return next_day.pop(0)


def _t(p: Punch) -> str:
    return p.local.strftime("%H:%M")


def _no_out(p: Punch, later_in: Punch | None) -> str:
    after = f" before the next IN at {_t(later_in)}" if later_in else " that day"
    return f"IN at {_t(p)} at {p.site}/{p.device} has no OUT{after}; add the missing OUT (--add-out HH:MM) or acknowledge"


HEADER = ["person", "date", "sites", "first_in", "last_out", "worked_minutes", "break_minutes", "scheduled_minutes",
          "beyond_schedule_minutes", "punches", "corrected", "anomalies"]  # fmt: skip


def to_csv(m: Month) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for d in m.days:
        r = d.as_dict()
        w.writerow([r["person"], r["date"], ";".join(r["sites"]), r["first_in"] or "", r["last_out"] or "", r["worked_minutes"], r["break_minutes"],
                    "" if r["scheduled_minutes"] is None else r["scheduled_minutes"],
                    "" if r["beyond_schedule_minutes"] is None else r["beyond_schedule_minutes"],
                    r["punches"], r["corrected"], ";".join(r["anomalies"])])  # fmt: skip
    return buf.getvalue()


def to_json(m: Month) -> dict[str, Any]:
    return {"month": m.first.strftime("%Y-%m"), "days": [d.as_dict() for d in m.days], "anomalies": [a.as_dict() for a in m.anomalies]}


# ------------------------------------------------------------------ working through the anomalies


def find_anomaly(db: Database, anomaly_id: str) -> Anomaly:
    """The anomaly as the book computes it now, or :class:`BookError`."""
    kind, _, pid = anomaly_id.partition(":")
    if kind not in KINDS or not pid:
        raise BookError(f"{anomaly_id!r} is not an anomaly id (<kind>:<punch id>, kinds {', '.join(KINDS)}); see `anomalies list`")
    rows = db.query("SELECT person, ts_ms, tz FROM punches WHERE id = ?", (pid,))
    if not rows:
        raise BookError(f"no stored punch {pid!r}; see `anomalies list`")
    who, ts_ms, tz = rows[0]
    local = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(_zone(tz))
    month_before = (local.date().replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    for month in (local.strftime("%Y-%m"), month_before):  # a night shift's OUT on the 1st belongs to the month before
        for a in compute(db, month, person=who).anomalies:
            if a.id == anomaly_id:
                return a
    raise BookError(f"the book has no anomaly {anomaly_id} (the punch is there, but this is not an anomaly of it now)")


def acknowledge(db: Database, anomaly_id: str, by: str, note: str = "") -> bool:
    """Mark an anomaly seen; False when it was already acknowledged."""
    find_anomaly(db, anomaly_id)
    with db.tx() as cur:
        return (
            cur.execute(
                "INSERT INTO anomaly_acks(anomaly, by_whom, note, ts) VALUES(?,?,?,?) ON CONFLICT (anomaly) DO NOTHING",
                (anomaly_id, by, note, time.time()),
            ).rowcount
            == 1
        )


def correct(
    db: Database, anomaly_id: str, action: Action, *, reason: str, by: str, direction: str | None = None, at: str | None = None
) -> dict[str, Any]:
    """Store a correction beside the anomaly's punch (which is never changed); refused without a reason."""
    if not reason or not reason.strip():
        raise BookError("a correction needs a reason (--reason '...'); nothing was changed")
    if action not in ACTIONS:
        raise BookError(f"unknown correction {action!r}; one of {', '.join(ACTIONS)}")
    a = find_anomaly(db, anomaly_id)
    if a.status == "corrected":
        raise BookError(f"{anomaly_id} is already {a.reason}; nothing was changed")
    if a.punch_id.startswith("correction-"):
        raise BookError(f"{anomaly_id} concerns a punch added by a correction; acknowledge it instead")
    who, site, tz, ts_ms, old_dir = db.query("SELECT person, site, tz, ts_ms, direction FROM punches WHERE id = ?", (a.punch_id,))[0]
    new_dir, new_ms = None, None
    if action == "direction":
        if direction not in ("in", "out") or direction == old_dir:
            raise BookError(f"--direction must be in or out and differ from the punch's ({old_dir}); nothing was changed")
        new_dir = direction
    elif action in ("time", "add_in", "add_out"):
        minutes = _hhmm(at or "")
        day = a.at.date()  # the punch's own day (a night shift's OUT is listed under the day before)
        if minutes is None:
            raise BookError(f"this correction needs a local time HH:MM on {day} ({tz}); got {at!r}; nothing was changed")
        base = datetime(day.year, day.month, day.day, tzinfo=_zone(tz))
        new_ms = int((base + timedelta(minutes=minutes)).timestamp() * 1000)
        if action == "add_out" and new_ms <= ts_ms and timedelta(days=1, minutes=minutes - a.at.hour * 60 - a.at.minute) <= NIGHT_SHIFT_MAX:
            # an OUT before the IN's time is the next morning's, when that makes a night shift (IN 22:00, OUT 06:00)
            new_ms = int((base + timedelta(days=1, minutes=minutes)).timestamp() * 1000)
        if action == "add_out" and new_ms <= ts_ms:
            raise BookError(f"the added OUT at {at} is not after the IN at {a.at.strftime('%H:%M')}; nothing was changed")
        if action == "add_in" and new_ms >= ts_ms:
            raise BookError(f"the added IN at {at} is not before the OUT at {a.at.strftime('%H:%M')}; nothing was changed")
        if action != "time":
            new_dir = action[4:]
    with db.tx() as cur:
        cur.execute(
            "INSERT INTO corrections(anomaly, punch_id, action, person, site, direction, ts_ms, tz, reason, by_whom, ts)"
            " VALUES(?,?,?,?,?,?,?,?,?,?,?)",
            (anomaly_id, a.punch_id, action, who, site, new_dir, new_ms if new_ms is not None else ts_ms, tz, reason.strip(), by, time.time()),
        )
    return {"anomaly": anomaly_id, "punch_id": a.punch_id, "action": action, "direction": new_dir, "reason": reason.strip(), "by": by}


def corrections(db: Database, punch_id: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT n, anomaly, punch_id, action, direction, ts_ms, reason, by_whom, ts FROM corrections"
    rows = db.query(sql + (" WHERE punch_id = ?" if punch_id else "") + " ORDER BY n", (punch_id,) if punch_id else ())
    keys = ("n", "anomaly", "punch_id", "action", "direction", "ts_ms", "reason", "by", "ts")
    return [dict(zip(keys, r, strict=True)) for r in rows]
