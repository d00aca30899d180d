"""The punch claims: what one accepted walk-up becomes (contract: mqtt/schemas/punch-claims.schema.json)."""

from __future__ import annotations

import math
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmware_py.decision.outcome import Decision, Direction
from firmware_py.timefmt import parse_utc_ms, utc_ms

CLAIMS_VERSION = 1


def _num(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"punch: {name} is not a finite number ({value})")
    return round(value, 6)


def build_claims(
    decision: Decision,
    direction: Direction,
    *,
    punch_id: str,
    site: str,
    device: str,
    seq: int,
    clock_synced: bool | None,
    liveness_policy: str,
    timezone: str,
) -> dict[str, Any]:
    """The claims of one punch; raises ValueError for a decision that cannot be a punch.

    Carries scores and versions, never image data: nothing in a
    :class:`Decision` that is not listed here leaves the device.
    """
    if not decision.accepted or decision.reason != "match":
        raise ValueError(f"punch: only an accepted match becomes a punch (got accepted={decision.accepted}, reason={decision.reason!r})")
    if not isinstance(decision.person_id, str) or not decision.person_id:
        raise ValueError("punch: the accepted decision names no person")
    if direction not in ("in", "out"):
        raise ValueError(f"punch: direction must be 'in' or 'out', got {direction!r}")
    if decision.method not in ("face", "card", "face+card"):
        raise ValueError(f"punch: method must be face, card or face+card, got {decision.method!r}")
    lv = decision.liveness
    return {
        "v": CLAIMS_VERSION,
        "id": punch_id,
        "site": site,
        "device": device,
        "seq": seq,
        "ts": utc_ms(decision.ts),
        "tz": timezone,  # the site's IANA zone: the attendance day of this punch is its local date there
        "person": decision.person_id,
        "direction": direction,
        "method": decision.method,  # face, card (fallback) or face+card (two-factor)
        "match": {
            "distance": _num(decision.distance, "distance"),
            "threshold": _num(decision.threshold, "threshold"),
            "margin": _num(decision.margin, "margin"),
            "frames": int(decision.frames),
        },
        "liveness": {
            "policy": lv.policy if lv else liveness_policy,
            "passed": bool(lv.passed) if lv else None,
            "score": _num(lv.score, "liveness score") if lv else None,
            "threshold": _num(lv.threshold, "liveness threshold") if lv else None,
        },
        "models": {str(k): str(v) for k, v in decision.model_versions.items()},
        "clock_synced": clock_synced,
    }


_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def claims_problem(c: Any) -> str | None:
    """What is wrong with punch claims, or None (the checks of mqtt/schemas/punch-claims.schema.json that matter)."""
    if not isinstance(c, dict):
        return "claims are not an object"
    if c.get("v") != CLAIMS_VERSION:
        return f"unsupported claims version v={c.get('v')!r} (this consumer reads v={CLAIMS_VERSION})"
    if not isinstance(c.get("id"), str) or not _ID_RE.fullmatch(c["id"]):
        return "'id' is not a lowercase UUIDv7"
    for key in ("site", "device"):
        if not isinstance(c.get(key), str) or not _NAME_RE.fullmatch(c[key]):
            return f"{key!r} is not a site/device name"
    seq = c.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return "'seq' is not a positive integer"
    if not isinstance(c.get("person"), str) or not c["person"] or len(c["person"]) > 128:
        return "'person' is not a non-empty string (at most 128 characters)"
    if c.get("direction") not in ("in", "out"):
        return "'direction' is not 'in' or 'out'"
    if c.get("method") not in ("face", "card", "face+card"):
        return "'method' is not 'face', 'card' or 'face+card'"
    try:
        if not isinstance(c.get("ts"), str):
            raise ValueError
        parse_utc_ms(c["ts"])
    except ValueError:
        return "'ts' is not an RFC 3339 time with offset"
    try:
        tz = c.get("tz")
        ZoneInfo(tz if isinstance(tz, str) else "")
    except (ValueError, KeyError, ZoneInfoNotFoundError):
        return "'tz' is not a known IANA time zone"
    if "clock_synced" in c and c["clock_synced"] not in (True, False, None):
        return "'clock_synced' is not true, false or null"
    for key in ("match", "liveness", "models"):
        if not isinstance(c.get(key), dict):
            return f"{key!r} is not an object"
    return None
