"""The telemetry snapshot (contract: mqtt/schemas/telemetry.schema.json).

Provider hooks, each a zero-argument callable returning a dict (set at
construction or later with :meth:`TelemetryCollector.set_provider`):

``pipeline``  ``{"fps": float, "stages": {name: {"p50_ms", "p95_ms", "n"}}, "last_face_ts": epoch s | None}``
              (:class:`~firmware_py.telemetry.latency.StageTimes` implements it)
``gallery``   ``{"version": str, "size": int, ...}`` (people enrolled; more keys allowed)
``camera``    ``{"state": str, ...}`` (e.g. "running", "lost", "recovering")
``models``    ``{name: version}`` (default: the runtime models of models/manifest.toml)
``link``      the MQTT link's state (the device link sets it)

A missing or failing provider leaves its section ``null`` and says why under
``unavailable``: telemetry reports what it does not know instead of guessing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_py import __version__
from firmware_py.events import EventBus
from firmware_py.outbox.store import Outbox
from firmware_py.telemetry import system
from firmware_py.telemetry.clock import ClockSync
from firmware_py.timefmt import utc_ms

if TYPE_CHECKING:
    from firmware_py.config import Config

log = logging.getLogger(__name__)

Provider = Callable[[], dict[str, Any]]
PROVIDERS = ("pipeline", "gallery", "camera", "models", "link")
TELEMETRY_VERSION = 1


def manifest_model_versions() -> dict[str, str]:
    """Versions of the runtime models pinned in models/manifest.toml."""
    from firmware_py.models.manifest import load_manifest

    return {m.name: m.version for m in load_manifest().select(["runtime"])}


class TelemetryCollector:
    """Builds telemetry snapshots; raises the ``camera.no_face`` alarm when nobody was seen for too long."""

    def __init__(
        self,
        *,
        site: str,
        device: str,
        data_dir: Path,
        outbox: Outbox | None = None,
        clock: ClockSync | None = None,
        bus: EventBus | None = None,
        no_face_alarm_s: float = 0.0,
        providers: dict[str, Provider] | None = None,
    ) -> None:
        self.site = site
        self.device = device
        self.data_dir = data_dir
        self.outbox = outbox
        self.clock = clock or ClockSync()
        self.bus = bus
        self.no_face_alarm_s = no_face_alarm_s
        self._providers: dict[str, Provider] = {"models": manifest_model_versions}
        for name, fn in (providers or {}).items():
            self.set_provider(name, fn)
        self._no_face_alarmed = False

    @classmethod
    def from_config(cls, cfg: Config, bus: EventBus | None = None, *, outbox: Outbox | None = None, **providers: Provider) -> TelemetryCollector:
        return cls(
            site=cfg.device.site,
            device=cfg.device.id,
            data_dir=cfg.device.data_dir,
            outbox=outbox,
            bus=bus,
            no_face_alarm_s=cfg.telemetry.no_face_alarm_s,
            providers=providers,
        )

    def set_provider(self, name: str, fn: Provider | None) -> None:
        """Install (or with None remove) the provider hook ``name`` (one of :data:`PROVIDERS`)."""
        if name not in PROVIDERS:
            raise ValueError(f"unknown telemetry provider {name!r}; known: {', '.join(PROVIDERS)}")
        if fn is None:
            self._providers.pop(name, None)
        else:
            self._providers[name] = fn

    def _call(self, name: str, unavailable: dict[str, str]) -> dict[str, Any] | None:
        fn = self._providers.get(name)
        if fn is None:
            unavailable[name] = "no provider wired"
            return None
        try:
            out = fn()
        except FileNotFoundError as exc:  # not there yet (a fresh reader): say what, not how it failed
            unavailable[name] = str(exc)[:300]
            return None
        except Exception as exc:
            log.warning("telemetry provider %s failed: %s", name, exc)
            unavailable[name] = f"provider failed: {type(exc).__name__}: {exc}"[:300]
            return None
        if not isinstance(out, dict):
            unavailable[name] = f"provider returned {type(out).__name__}, not an object"
            return None
        return out

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        unavailable: dict[str, str] = {}
        pipeline = self._call("pipeline", unavailable)
        if pipeline is not None:
            pipeline = dict(pipeline)
            last_face = pipeline.get("last_face_ts")
            pipeline["last_face_ts"] = utc_ms(last_face) if isinstance(last_face, (int, float)) else None
            self._check_no_face(last_face if isinstance(last_face, (int, float)) else None, now)
        outbox = None
        last_punch = None
        if self.outbox is not None:
            st = self.outbox.stats()
            outbox = {
                "depth": st.depth,
                "capacity": st.capacity,
                "high_water": st.high_water,
                "high_water_active": st.high_water_active,
                "oldest_age_s": round(now - st.oldest_created, 1) if st.oldest_created is not None else None,
            }
            last_punch = st.last_punch
        else:
            unavailable["outbox"] = "no outbox wired"
        cpu = system.load()
        cpu["temp_c"] = system.cpu_temp_c()
        return {
            "v": TELEMETRY_VERSION,
            "site": self.site,
            "device": self.device,
            "ts": utc_ms(now),
            "firmware": __version__,
            "uptime": system.uptime(),
            "pipeline": pipeline,
            "cpu": cpu,
            "memory": system.meminfo(),
            "disk": system.disk(self.data_dir),
            "outbox": outbox,
            "last_punch": last_punch,
            "gallery": self._call("gallery", unavailable),
            "models": self._call("models", unavailable),
            "clock": self.clock.snapshot(),
            "camera": self._call("camera", unavailable),
            "link": self._call("link", unavailable),
            "unavailable": unavailable,
        }

    def _check_no_face(self, last_face: float | None, now: float) -> None:
        if self.no_face_alarm_s <= 0 or last_face is None:
            return
        idle = now - last_face
        if idle >= self.no_face_alarm_s and not self._no_face_alarmed:
            self._no_face_alarmed = True
            if self.bus is not None:
                self.bus.emit_new("camera.no_face", "warning", since=utc_ms(last_face), idle_s=round(idle, 1))
        elif idle < self.no_face_alarm_s:
            self._no_face_alarmed = False
