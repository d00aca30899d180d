"""The backend's web page (`kaoclock backend serve`): the month's book, a person's month, the anomalies, the fleet
with its alerts and one reader's telemetry as small plots, all rendered on the server (no script, no CDN).

Flask (Jinja2 templates with HTML escaping on, signed session cookies) under
waitress.  Read-only unless started with ``corrections=True``: then HR users
made with `backend users add` log in and acknowledge or correct anomalies
through the same :mod:`book` functions the CLI uses.  Every form carries the
session's CSRF token; the session cookie is signed, HttpOnly and SameSite=Strict.

The book page lists ``PAGE`` people at a time (optionally of one site) and
computes only their month, so it does not grow with the staff: the whole
month of 5,000 people takes seconds to compute, a page of them a fraction.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from markupsafe import Markup, escape
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from firmware_py.backend import book, users
from firmware_py.backend.db import Database, StoreUnavailable
from firmware_py.backend.fleet import fleet as fleet_view

PAGE = 100  # people per page of the book
SERIES: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
    ("CPU temperature", "°C", lambda t: (t.get("cpu") or {}).get("temp_c")),
    ("CPU load (1 min)", "", lambda t: ((t.get("cpu") or {}).get("load") or [None])[0]),
    ("frames per second", "fps", lambda t: (t.get("pipeline") or {}).get("fps")),
    ("outbox depth", "punches", lambda t: (t.get("outbox") or {}).get("depth")),
    ("memory available", "MB", lambda t: (t.get("memory") or {}).get("available_mb")),
    ("disk free", "MB", lambda t: (t.get("disk") or {}).get("free_mb")),
]


class Pages:
    """The database per worker thread (one connection each; :class:`Database` serialises its own)."""

    def __init__(self, target: str | Path) -> None:
        self.target = target
        Database.open(target).close()  # migrate once, here, before any request
        self._local = threading.local()

    def db(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = Database(self.target, migrate=False)
        return db


def secret_key(home: Path) -> bytes:
    """The key that signs session cookies, made once in the backend home (0600); a new key logs everyone out."""
    path = home / "web-session.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        home.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            with open(path, "xb", opener=lambda p, f: os.open(p, f, 0o600)) as fh:
                fh.write(key)
        except FileExistsError:
            return path.read_bytes()
        return key


def month_bounds_ms(month: str) -> tuple[int, int]:
    """UTC bounds holding every local day of ``month`` in any zone (UTC-12 .. UTC+14)."""
    first, nxt = book.parse_month(month)
    start = int(datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp() * 1000)
    end = int(datetime(nxt.year, nxt.month, nxt.day, tzinfo=UTC).timestamp() * 1000)
    return start - 14 * 3_600_000, end + 12 * 3_600_000


def month_people(db: Database, month: str, site: str | None) -> list[str]:
    """Everyone with a punch in the month (of one site: assigned to it or punched there), sorted."""
    lo, hi = month_bounds_ms(month)
    if site:
        # the site's punches (index on site first) and its assigned people who punched anywhere that month (index on person first)
        sql = (
            "SELECT person FROM punches WHERE site = ? AND ts_ms >= ? AND ts_ms < ? UNION SELECT person_id FROM person_sites s"
            " WHERE site = ? AND EXISTS (SELECT 1 FROM punches q WHERE q.person = s.person_id AND q.ts_ms >= ? AND q.ts_ms < ?)"
        )
        rows = db.query(sql, (site, lo, hi, site, lo, hi))
    else:
        rows = db.query("SELECT DISTINCT person FROM punches WHERE ts_ms >= ? AND ts_ms < ?", (lo, hi))
    return sorted(r[0] for r in rows)


def _hours(td: timedelta | None) -> str:
    return "" if td is None else f"{td.total_seconds() / 3600:.1f}"


def _hhmm(dt: datetime | None, day: date | None = None) -> str:
    if dt is None:
        return ""
    return dt.strftime("%H:%M") + (f" (+{(dt.date() - day).days}d)" if day is not None and dt.date() != day else "")


def plot_svg(title: str, unit: str, points: list[tuple[int, float]], width: int = 560, height: int = 110) -> Markup:
    """A small line plot as inline SVG: the series over time with its min, max and last value."""
    head = f"{escape(title)}" + (f" ({escape(unit)})" if unit else "")
    if not points:
        return Markup(
            f'<figure class="plot"><figcaption>{head}: no values</figcaption><svg role="img" aria-label="{head}" width="{width}"'
            f' height="{height}"><text x="{width // 2}" y="{height // 2}" text-anchor="middle">the reader sent none</text></svg></figure>'
        )
    t0, t1 = points[0][0], points[-1][0]
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span_t, span_v = max(t1 - t0, 1), (hi - lo) or 1.0
    left, top, w, h = 48, 8, width - 56, height - 30
    xy = " ".join(f"{left + (t - t0) / span_t * w:.1f},{top + h - (v - lo) / span_v * h:.1f}" for t, v in points)

    def stamp(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%m-%d %H:%M")

    last = points[-1][1]
    return Markup(
        f'<figure class="plot"><figcaption>{head}: last {last:.4g}, min {lo:.4g}, max {hi:.4g}</figcaption>'
        f'<svg role="img" aria-label="{head}" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#bbb"/>'
        f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{hi:.4g}</text>'
        f'<text x="{left - 4}" y="{top + h}" text-anchor="end">{lo:.4g}</text>'
        f'<text x="{left}" y="{height - 4}">{stamp(t0)} UTC</text>'
        f'<text x="{left + w}" y="{height - 4}" text-anchor="end">{stamp(t1)} UTC</text>'
        f'<polyline fill="none" stroke="#2060b0" stroke-width="1.5" points="{xy}"/></svg></figure>'
    )


def telemetry_plots(db: Database, site: str, device: str, hours: float) -> tuple[list[Markup], int]:
    """The plots of the reader's last ``hours`` of telemetry (up to its newest message), and how many messages."""
    newest = db.query("SELECT max(ts_ms) FROM reader_telemetry WHERE site = ? AND device = ?", (site, device))[0][0]
    if newest is None:
        return [], 0
    rows = db.query(
        "SELECT ts_ms, body FROM reader_telemetry WHERE site = ? AND device = ? AND ts_ms >= ? ORDER BY ts_ms",
        (site, device, int(newest) - int(hours * 3_600_000)),
    )
    step = max(1, len(rows) // 600)  # at most ~600 points a plot
    bodies = [(int(ts), json.loads(body)) for ts, body in rows[::step]]
    plots = []
    for title, unit, get in SERIES:
        pts = []
        for ts, body in bodies:
            v = get(body)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                pts.append((ts, float(v)))
        plots.append(plot_svg(title, unit, pts))
    return plots, len(rows)


def _local_path(target: str | None) -> str | None:
    """A path on this server, or None: a form's redirect target never leads to another site."""
    return target if target and target.startswith("/") and not target.startswith("//") and "\\" not in target else None


def create_app(target: str | Path, home: Path, *, corrections: bool = False, secure_cookie: bool = False) -> Flask:
    pages = Pages(target)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key(home),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=secure_cookie,
        SESSION_COOKIE_NAME="kaoclock_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=10),
    )
    app.jinja_env.globals.update(hours=_hours, hhmm=_hhmm, corrections=corrections)

    def csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return str(session["csrf"])

    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.before_request
    def _before() -> None:
        g.db = pages.db()
        g.user = session.get("user")
        if g.user and not corrections:
            g.user = None
        if g.user and g.user not in users.list_users(g.db):  # a removed user loses the session at once
            session.pop("user", None)
            g.user = None
        if request.method == "POST":
            sent = request.form.get("csrf", "")
            if not sent or not hmac.compare_digest(sent, str(session.get("csrf", ""))):
                abort(400, "the form's security token is missing or stale (CSRF check); reload the page and send it again")

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(StoreUnavailable)
    def _unavailable(exc: StoreUnavailable) -> tuple[str, int]:
        # (Database.query itself reconnects once after a lost connection; this is a server still down)
        return render_template("error.html", code=503, message=f"the database is unavailable ({exc}); try again in a moment"), 503

    @app.errorhandler(HTTPException)
    def _error(exc: HTTPException) -> tuple[str, int]:
        return render_template("error.html", code=exc.code, message=exc.description), exc.code or 500

    def month_arg() -> str:
        month = request.args.get("month") or ""
        if not month:
            newest = g.db.query("SELECT max(ts_ms) FROM punches")[0][0]
            when = datetime.fromtimestamp(newest / 1000, UTC) if newest is not None else datetime.now(UTC)
            return when.strftime("%Y-%m")
        try:
            book.parse_month(month)
        except ValueError:
            abort(400, f"month {month!r} is not a month; write YYYY-MM, e.g. 2026-12")
        return month

    def page_of(people: list[str]) -> tuple[list[str], int, int]:
        try:
            page = max(1, int(request.args.get("page", "1")))
        except ValueError:
            abort(400, f"page {request.args.get('page')!r} is not a number")
        pages_n = max(1, -(-len(people) // PAGE))
        if page > pages_n:
            abort(404, f"page {page} is past the last page ({pages_n})")
        return people[(page - 1) * PAGE : page * PAGE], page, pages_n

    def no_data(month: str, site: str | None, person: str | None = None) -> None:
        who = f" for {person}" if person else f" at {site}" if site else ""
        abort(404, f"no punches in {month}{who}: nothing to show. Pick another month (the newest with punches is the default).")

    def sites() -> list[str]:
        return [r[0] for r in g.db.query("SELECT site FROM sites ORDER BY site")]

    def check_site(site: str | None) -> None:
        if site and site not in sites() and not g.db.query("SELECT 1 FROM punches WHERE site = ? LIMIT 1", (site,)):
            abort(404, f"no site {site!r}; pick one of the list")

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("book_page", month=month_arg()))

    @app.get("/book")
    def book_page() -> str:
        month, site = month_arg(), request.args.get("site") or None
        check_site(site)
        people = month_people(g.db, month, site)
        if not people:
            no_data(month, site)
        shown, page, pages_n = page_of(people)
        m = book.compute(g.db, month, people=shown)
        first, nxt = book.parse_month(month)
        days = [first + timedelta(days=i) for i in range((nxt - first).days)]
        grid: dict[str, dict[date, book.BookDay]] = {p: {} for p in shown}
        for d in m.days:
            grid[d.person][d.date] = d
        open_by: dict[tuple[str, date], list[str]] = {}
        for a in m.anomalies:
            if a.status == "open":
                open_by.setdefault((a.person, a.date), []).append(a.kind)
        weekend = {d for d in days if d.weekday() >= 5}
        rows = []  # the cells are made here, not in the template: 100 people x 31 days is most of the page's time
        for p in shown:
            mine, cells, n_open = grid[p], [], 0
            for day in days:
                bd, kinds = mine.get(day), open_by.get((p, day))
                n_open += len(kinds) if kinds else 0
                cls = "anomaly" if kinds else "we" if day in weekend else ""
                cells.append((_hours(bd.worked) if bd else "", cls, ", ".join(kinds) if kinds else ""))
            worked = sum((d.worked for d in mine.values()), timedelta())
            scheduled = [d.beyond for d in mine.values() if d.beyond is not None]
            beyond = sum(scheduled, timedelta()) if scheduled else None  # blank without a schedule
            rows.append((p, cells, len(mine), _hours(worked), _hours(beyond), n_open))
        return render_template(
            "book.html", month=month, site=site, sites=sites(), days=days, weekend=weekend, rows=rows,
            page=page, pages_n=pages_n, total_people=len(people),
        )  # fmt: skip

    @app.get("/person/<person>")
    def person_page(person: str) -> str:
        month = month_arg()
        known = g.db.query("SELECT name FROM people WHERE person_id = ?", (person,))
        if not known and not g.db.query("SELECT 1 FROM punches WHERE person = ? LIMIT 1", (person,)):
            abort(404, f"no person {person!r} in the HR master or the punches")
        m = book.compute(g.db, month, person=person)
        if not m.days:
            no_data(month, None, person)
        return render_template(
            "person.html", month=month, person=person, name=known[0][0] if known else "", m=m, actions=book.ACTIONS,
            open_days={a.date for a in m.anomalies if a.status == "open"},
        )  # fmt: skip

    @app.get("/anomalies")
    def anomalies_page() -> str:
        month, site = month_arg(), request.args.get("site") or None
        check_site(site)
        kind = request.args.get("kind") or None
        if kind and kind not in book.KINDS:
            abort(400, f"kind {kind!r} is not one of {', '.join(book.KINDS)}")
        show_all = request.args.get("all") == "1"
        people = month_people(g.db, month, site)
        if not people:
            no_data(month, site)
        shown, page, pages_n = page_of(people)
        m = book.compute(g.db, month, people=shown)
        items = [a for a in m.anomalies if (show_all or a.status == "open") and (kind is None or a.kind == kind)]
        return render_template(
            "anomalies.html", month=month, site=site, sites=sites(), items=items, kind=kind, kinds=book.KINDS, show_all=show_all,
            page=page, pages_n=pages_n, total_people=len(people), first_person=shown[0], last_person=shown[-1], actions=book.ACTIONS,
        )  # fmt: skip

    @app.get("/fleet")
    def fleet_page() -> str:
        site = request.args.get("site") or None
        check_site(site)
        readers = fleet_view(g.db, site=site)
        return render_template("fleet.html", readers=readers, site=site, sites=sites(), now=datetime.now(UTC).isoformat(timespec="seconds"))

    @app.get("/reader/<site>/<device>")
    def reader_page(site: str, device: str) -> str:
        try:
            hours = float(request.args.get("hours", "24"))
        except ValueError:
            abort(400, f"hours {request.args.get('hours')!r} is not a number")
        if not 0 < hours <= 24 * 31:
            abort(400, "hours must be more than 0 and at most 744 (31 days)")
        reader = next((r for r in fleet_view(g.db, site=site) if r["device"] == device), None)
        if reader is None:
            abort(404, f"no reader {site}/{device}; see the fleet page")
        plots, n = telemetry_plots(g.db, site, device, hours)
        return render_template("reader.html", r=reader, plots=plots, n=n, hours=hours)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if not corrections:
            abort(404, "this server is read-only (started without --corrections): there is nothing to log in for")
        if request.method == "POST":
            name, password = request.form.get("name", ""), request.form.get("password", "")
            if users.authenticate(g.db, name, password):
                session.clear()  # a new session id and CSRF token after login
                session["user"] = name
                session.permanent = True
                flash(f"logged in as {name}")
                return redirect(_local_path(request.form.get("next")) or url_for("index"))
            time.sleep(0.5)
            return render_template("login.html", error="wrong user name or password", next=request.form.get("next", "")), 401
        return render_template("login.html", error=None, next=request.args.get("next", ""))

    @app.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect(url_for("index"))

    def need_user() -> str:
        if not corrections:
            abort(403, "this server is read-only (started without --corrections)")
        if not g.user:
            abort(401, "log in as an HR user to acknowledge or correct")
        return str(g.user)

    def back() -> Response:
        return redirect(_local_path(request.form.get("back")) or url_for("index"))

    @app.post("/anomaly/ack")
    def ack() -> Response:
        who = need_user()
        aid = request.form.get("anomaly", "")
        try:
            new = book.acknowledge(g.db, aid, who, request.form.get("note", "").strip())
        except book.BookError as exc:
            abort(400, str(exc))
        flash(f"{aid}: " + ("acknowledged" if new else "was already acknowledged"))
        return back()

    @app.post("/anomaly/correct")
    def correct() -> Response:
        who = need_user()
        aid, action = request.form.get("anomaly", ""), request.form.get("action", "")
        value = request.form.get("value", "").strip()
        if action not in book.ACTIONS:
            abort(400, f"unknown correction {action!r}; one of {', '.join(book.ACTIONS)}")
        try:
            book.correct(
                g.db, aid, action, reason=request.form.get("reason", ""), by=who,  # type: ignore[arg-type]
                direction=value if action == "direction" else None, at=value if action in ("time", "add_in", "add_out") else None,
            )  # fmt: skip
        except book.BookError as exc:
            abort(400, str(exc))
        flash(f"{aid}: corrected ({action}); the signed punch is kept as it was")
        return back()

    return app


def serve(app: Flask, host: str, port: int, on_ready: Callable[[str], None], threads: int = 4) -> None:
    """Serve until interrupted; ``on_ready`` gets the URL once the socket listens (port 0: a free one)."""
    from waitress import create_server

    class _Stop(Exception):
        pass

    def stop(*_: object) -> None:
        raise _Stop

    server = create_server(app, host=host, port=port, threads=threads, ident="kaoclock")
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C and systemd's stop both end it cleanly (exit 0)
        signal.signal(sig, stop)
    on_ready(f"http://{host}:{server.effective_port}/")  # type: ignore[union-attr]
    try:
        server.run()
    except _Stop:
        pass
    finally:
        server.close()
