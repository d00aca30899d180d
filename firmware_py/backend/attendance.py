"""The attendance book: per person and day, first in, last out, worked time, missing punches.

Time zones: punches are signed in UTC and carry their site's IANA zone
(``tz``).  A punch belongs to the calendar day of its local time in that zone,
so a reader in Tokyo and one in Lisbon each produce local working days.
``tz_override`` (``--tz``) puts every punch on the calendar of one zone
instead.  Times in the book are printed in the zone that placed them on
the day (ISO 8601 with offset), and the worked time is measured in real
elapsed time, so a daylight-saving change inside a shift is counted right.

Pairing: punches of the day are taken in time order; an "in" opens an
interval and the next "out" closes it; worked time is the sum of the closed
intervals.  A second "in" while one is open is ignored (a double punch: the
earlier one counts) and an "out" with nothing open is counted as
``missing_in``.  An interval still open at the end of the day sets
``missing_out``; shifts are not carried over midnight (a night shift shows as
``missing_out`` on its first day and ``missing_in`` on the next).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from firmware_py.backend.store import PunchStore, StoredPunch


@dataclass(frozen=True)
class DayRow:
    date: date
    person: str
    first_in: datetime | None
    last_out: datetime | None
    worked: timedelta
    punches: int
    missing_out: bool
    missing_in: int
    devices: tuple[str, ...]


def _local(p: StoredPunch, override: ZoneInfo | None) -> datetime:
    return p.ts.astimezone(override or ZoneInfo(p.tz))


def book(store: PunchStore, day: date, tz_override: str | None = None) -> list[DayRow]:
    """The attendance rows of ``day``, one per person, sorted by person."""
    override = ZoneInfo(tz_override) if tz_override else None
    # Every zone's local day lies within one UTC day either side of the UTC date.
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=1)
    end = start + timedelta(days=3)
    by_person: dict[str, list[tuple[datetime, StoredPunch]]] = {}
    for p in store.punches_between(int(start.timestamp() * 1000), int(end.timestamp() * 1000)):
        local = _local(p, override)
        if local.date() == day:
            by_person.setdefault(p.person, []).append((local, p))
    rows = []
    for person in sorted(by_person):
        items = sorted(by_person[person], key=lambda lp: (lp[1].ts, lp[1].seq))
        open_in: datetime | None = None
        worked = timedelta()
        missing_in = 0
        for local, p in items:
            if p.direction == "in":
                if open_in is None:
                    open_in = local
            elif open_in is not None:
                worked += local - open_in  # aware datetimes: real elapsed time
                open_in = None
            else:
                missing_in += 1
        ins = [local for local, p in items if p.direction == "in"]
        outs = [local for local, p in items if p.direction == "out"]
        rows.append(
            DayRow(
                date=day,
                person=person,
                first_in=min(ins) if ins else None,
                last_out=max(outs) if outs else None,
                worked=worked,
                punches=len(items),
                missing_out=open_in is not None,
                missing_in=missing_in,
                devices=tuple(sorted({f"{p.site}/{p.device}" for _, p in items})),
            )
        )
    return rows


HEADER = ["date", "person", "first_in", "last_out", "worked_minutes", "worked", "punches", "missing_out", "missing_in", "devices"]


def _hhmm(td: timedelta) -> str:
    minutes = int(td.total_seconds() // 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def as_records(rows: list[DayRow]) -> list[list[str]]:
    return [
        [
            r.date.isoformat(),
            r.person,
            r.first_in.isoformat(timespec="seconds") if r.first_in else "",
            r.last_out.isoformat(timespec="seconds") if r.last_out else "",
            str(int(r.worked.total_seconds() // 60)),
            _hhmm(r.worked),
            str(r.punches),
            "yes" if r.missing_out else "no",
            str(r.missing_in),
            " ".join(r.devices),
        ]
        for r in rows
    ]


def to_csv(rows: list[DayRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    w.writerows(as_records(rows))
    return buf.getvalue()


def to_table(rows: list[DayRow]) -> str:
    records = [HEADER, *as_records(rows)]
    widths = [max(len(rec[i]) for rec in records) for i in range(len(HEADER))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(rec, widths, strict=True)).rstrip() for rec in records) + "\n"
