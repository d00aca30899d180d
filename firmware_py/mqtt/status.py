"""The retained status message: birth on connect, Last Will "offline", goodbye on shutdown."""

from __future__ import annotations

import json
import time
from typing import Any

from firmware_py import __version__
from firmware_py.timefmt import utc_ms

STATUS_VERSION = 1
_BOOT = time.time()


def status_payload(
    site: str, device: str, state: str, reason: str, *, protocol: str | None = None, ts: float | None = None, **extra: Any
) -> dict[str, Any]:
    """One status message.

    ``state`` is "online" or "offline"; ``reason`` says why: "connected"
    (birth), "requested" (a status.request command), "shutdown" (clean stop),
    "connection_lost" (the Last Will, which the broker sends when the device
    vanishes; its ``ts`` is the time the connection was made).
    """
    return {
        "v": STATUS_VERSION,
        "site": site,
        "device": device,
        "state": state,
        "reason": reason,
        "ts": utc_ms(time.time() if ts is None else ts),
        "firmware": __version__,
        "protocol": protocol,
        "boot_ts": utc_ms(_BOOT),
        **extra,
    }


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str).encode("utf-8")
