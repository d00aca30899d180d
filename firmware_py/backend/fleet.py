"""The fleet: each reader's retained status, telemetry and events in the backend database, and the view over them.

The consumer subscribes, besides the punches, to every reader's

* ``status`` (retained) on a plain subscription: brokers do not send
  retained messages on shared subscriptions, and storing it is an idempotent
  upsert, so every consumer may store it;
* ``telemetry`` and ``events`` on the consumers' shared subscription (one
  consumer stores each message).

Offline since: a status whose state changed starts a new ``since``.  The
broker's Last Will (``offline/connection_lost``) carries the time the lost
connection was *made*, so its ``since`` is when the backend received it.  Any
other status older than the stored one is ignored (out of order).

:func:`fleet` lists every registered or seen reader with its open alerts.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from firmware_py.backend.db import Database, StoreUnavailable
from firmware_py.timefmt import parse_utc_ms
from firmware_py.topics import PREFIX, fleet_filter, parse_topic

if TYPE_CHECKING:
    from firmware_py.mqtt.link import MqttLink

log = logging.getLogger(__name__)

ALARM_EVENTS = {
    "door.forced_open": "door_forced_open",
    "door.held_open": "door_held_open",
    "decision.spoof_attempt": "spoof_attempts",
    "update.rolled_back": "update_rolled_back",
}


def _ms(text: Any) -> int:
    return int(parse_utc_ms(str(text)).timestamp() * 1000)


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class FleetRecorder:
    """Stores status, telemetry and events messages; :meth:`attach` subscribes it on a consumer's link."""

    def __init__(self, db: Database, prefix: str = PREFIX) -> None:
        self.db = db
        self.prefix = prefix
        self.stored = {"status": 0, "telemetry": 0, "events": 0, "ignored": 0}

    def attach(self, link: MqttLink, *, group: str, shared: bool = True, site: str = "+") -> None:
        link.subscribe(fleet_filter("status", self.prefix, site), self._on_message, qos=1)
        for channel in ("telemetry", "events"):
            flt = fleet_filter(channel, self.prefix, site)
            link.subscribe(f"$share/{group}/{flt}" if shared else flt, self._on_message, qos=1)

    def _on_message(self, topic: str, payload: bytes, _props: Any = None) -> bool:
        try:
            self.handle(topic, payload)
        except StoreUnavailable as exc:
            log.error("fleet message on %s not stored (%s); it stays unacknowledged", topic, exc)
            return False
        return True

    def handle(self, topic: str, payload: bytes, received: float | None = None) -> str | None:
        """Store one message; returns its channel, or None when it is ignored (not a reader topic, not JSON, wrong device, stale)."""
        parsed = parse_topic(topic, self.prefix)
        now = time.time() if received is None else received
        try:
            if parsed is None or parsed[2] not in ("status", "telemetry", "events"):
                raise ValueError("not a reader's status, telemetry or events topic")
            site, device, channel = parsed
            msg = json.loads(payload)
            if not isinstance(msg, dict) or msg.get("site") != site or msg.get("device") != device:
                raise ValueError("the message's site/device do not match its topic")
            ts_ms = _ms(msg["ts"])
        except (ValueError, KeyError, TypeError) as exc:  # a bad message must not loop: logged and dropped
            log.warning("fleet message on %s ignored: %s", topic, exc)
            self.stored["ignored"] += 1
            return None
        with self.db.tx() as cur:
            if channel == "status":
                state, reason = str(msg.get("state")), str(msg.get("reason"))
                row = cur.execute("SELECT state, ts_ms, since_ms FROM reader_status WHERE site=? AND device=?", (site, device)).fetchone()
                if row is not None and ts_ms < row[1] and reason != "connection_lost":  # a Will's ts is older than the birth it follows
                    self.stored["ignored"] += 1
                    return None
                since = ts_ms
                if row is not None and row[0] == state:
                    since = int(row[2])  # the same state again (a re-delivered retained copy, a status.request)
                elif reason == "connection_lost":
                    since = int(now * 1000)
                cur.execute(
                    "INSERT INTO reader_status(site, device, state, reason, ts_ms, since_ms, firmware, body, received) VALUES(?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (site, device) DO UPDATE SET state=excluded.state, reason=excluded.reason, ts_ms=excluded.ts_ms,"
                    " since_ms=excluded.since_ms, firmware=excluded.firmware, body=excluded.body, received=excluded.received",
                    (site, device, state, reason, ts_ms, since, msg.get("firmware"), json.dumps(msg), now),
                )
            elif channel == "telemetry":
                cur.execute(
                    "INSERT INTO reader_telemetry(site, device, ts_ms, body, received) VALUES(?,?,?,?,?)", (site, device, ts_ms, json.dumps(msg), now)
                )
            else:
                cur.execute(
                    "INSERT INTO reader_events(site, device, ts_ms, type, severity, data, received) VALUES(?,?,?,?,?,?,?)",
                    (site, device, ts_ms, str(msg.get("type")), str(msg.get("severity")), json.dumps(msg.get("data") or {}), now),
                )
        self.stored[channel] += 1
        return channel


def fleet(
    db: Database, *, now: float | None = None, offline_after_s: float = 600.0, window_s: float = 86400.0, site: str | None = None
) -> list[dict[str, Any]]:
    """Every reader (registered or seen) with its state, versions, gallery, outbox, last punch, CPU temperature and open alerts."""
    now = time.time() if now is None else now
    now_ms = int(now * 1000)
    readers: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(s: str, d: str) -> dict[str, Any]:
        blank = dict.fromkeys(("since", "reason", "firmware", "models", "gallery", "outbox", "last_punch", "last_punch_stored",
                               "cpu_temp_c", "clock_synced", "telemetry_ts"))  # fmt: skip
        return readers.setdefault((s, d), {"site": s, "device": d, "state": "never_seen", **blank, "alerts": []})

    for s, d in db.query("SELECT site, device FROM devices"):
        entry(s, d)
    for s, d, state, reason, since, firmware in db.query("SELECT site, device, state, reason, since_ms, firmware FROM reader_status"):
        e = entry(s, d)
        e.update(state=state, reason=reason, since=_iso(since), firmware=firmware, _since_ms=int(since))
    latest = (
        "SELECT t.site, t.device, t.body FROM reader_telemetry t"
        " JOIN (SELECT site, device, max(n) AS n FROM reader_telemetry GROUP BY site, device) m ON t.n = m.n"
    )
    for s, d, body in db.query(latest):
        t, e = json.loads(body), entry(s, d)
        outbox = t.get("outbox") or None
        e.update(
            firmware=e["firmware"] or t.get("firmware"),
            models=t.get("models"),
            gallery=t.get("gallery"),
            outbox={k: outbox.get(k) for k in ("depth", "oldest_age_s", "high_water", "high_water_active")} if outbox else None,
            cpu_temp_c=(t.get("cpu") or {}).get("temp_c"),
            clock_synced=(t.get("clock") or {}).get("synced"),
            telemetry_ts=t.get("ts"),
            last_punch=(t.get("last_punch") or {}).get("ts"),
        )
    for s, d, ts_ms in db.query("SELECT site, device, ts_ms FROM reader_last_punch"):  # kept on insert (store.py): no scan of the punches
        entry(s, d)["last_punch_stored"] = _iso(int(ts_ms))
    events: dict[tuple[str, str], list[tuple[str, int, dict[str, Any]]]] = {}
    for s, d, typ, ts_ms, data in db.query(
        "SELECT site, device, type, ts_ms, data FROM reader_events WHERE ts_ms >= ? ORDER BY ts_ms, n", (now_ms - int(window_s * 1000),)
    ):
        events.setdefault((s, d), []).append((typ, int(ts_ms), json.loads(data)))
    for key, e in readers.items():
        alerts = e["alerts"]
        if e["state"] == "never_seen":
            alerts.append({"alert": "never_seen", "detail": "registered, but no status from it yet"})
        elif e["state"] == "offline" and now_ms - e["_since_ms"] >= offline_after_s * 1000:
            minutes = int((now_ms - e["_since_ms"]) / 60000)
            alerts.append({"alert": "offline", "detail": f"offline for {minutes} min ({e['reason']})"})
        ob = e["outbox"]
        if ob and (ob.get("high_water_active") or (ob.get("depth") or 0) >= (ob.get("high_water") or 1 << 62)):
            alerts.append({"alert": "outbox_high_water", "detail": f"{ob['depth']} punches waiting, oldest {ob.get('oldest_age_s')} s"})
        if e["clock_synced"] is False:
            alerts.append({"alert": "clock_not_synced", "detail": "the reader's clock is not synchronised: its punches carry clock_synced false"})
        tamper: str | None = None
        counts: dict[str, tuple[int, int]] = {}
        for typ, ts_ms, _data in events.get(key, []):
            if typ in ("tamper", "tamper.cleared"):
                tamper = typ
                tamper_ts = ts_ms
            elif typ in ALARM_EVENTS:
                n, _ = counts.get(typ, (0, 0))
                counts[typ] = (n + 1, ts_ms)
        if tamper == "tamper":
            alerts.append({"alert": "tamper", "detail": f"the housing was opened at {_iso(tamper_ts)} and not closed since"})
        for typ, (n, last) in counts.items():
            alerts.append({"alert": ALARM_EVENTS[typ], "detail": f"{n} x {typ}, last at {_iso(last)}", "count": n})
        e.pop("_since_ms", None)
    out = [e for (s, _d), e in sorted(readers.items()) if site is None or s == site]
    return out


def prune(db: Database, keep_days: float, *, now: float | None = None) -> dict[str, int]:
    """Delete telemetry and events received more than ``keep_days`` ago; returns the rows deleted per table.

    By the backend's receive time, not the reader's clock (a reader whose
    clock is wrong must not lose its rows at once). Each reader's newest
    telemetry is kept whatever its age: the fleet view shows a long-offline
    reader's versions, gallery and outbox from it. Punches are never pruned.
    """
    if not keep_days > 0:
        raise ValueError("keep_days must be positive")
    cutoff = (time.time() if now is None else now) - keep_days * 86400
    with db.tx() as cur:
        events = cur.execute("DELETE FROM reader_events WHERE received < ?", (cutoff,)).rowcount
        telemetry = cur.execute(
            "DELETE FROM reader_telemetry WHERE received < ? AND n NOT IN (SELECT max(n) FROM reader_telemetry GROUP BY site, device)",
            (cutoff,),
        ).rowcount
    return {"telemetry": telemetry, "events": events}
