"""Times as the MQTT contract writes them: RFC 3339 UTC with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_ms(ts: float) -> str:
    """RFC 3339 UTC time with milliseconds: ``2026-03-01T08:59:58.123Z``."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_utc_ms(text: str) -> datetime:
    """Inverse of :func:`utc_ms` (accepts any RFC 3339 time with an offset or Z)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return dt.astimezone(UTC)
