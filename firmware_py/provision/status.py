"""`kaoclock status`: the reader's telemetry (R14) read locally, without the daemon's help.

The snapshot is the one the daemon publishes over MQTT
(:class:`~firmware_py.telemetry.collector.TelemetryCollector`), with providers
that read the reader's files instead of the running objects: the gallery
store, the outbox, the manifest's model versions.  Two sections the MQTT
telemetry does not carry are added: ``daemon`` (its heartbeat file, present
only while it runs) and ``update`` (the A/B slots).  Nothing is created: a
missing gallery or outbox is reported under ``unavailable``, not made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware_py.config import Config


def configured_embedder_version() -> str:
    """The version of the embedder this release runs (its templates are the only ones matched)."""
    from firmware_py.models.manifest import load_manifest
    from firmware_py.vision.embedder import EMBEDDER_MODEL

    return load_manifest().entry(EMBEDDER_MODEL).version


def gallery_summary(cfg: Config) -> dict[str, Any]:
    """Version, size and template versions of the gallery on disk (opened read-only in spirit: never created)."""
    from firmware_py.gallery.store import GalleryStore, default_paths

    db, key = default_paths(cfg)
    if not db.exists():
        raise FileNotFoundError(f"no gallery at {db} (enrol someone: `kaoclock enroll`, or sync it from the backend)")
    with GalleryStore.open(db, key, create=False) as store:
        persons = store.list_persons()
        versions = store.template_versions()
        out: dict[str, Any] = {
            "version": str(store.version),
            "size": len(persons),
            "templates": sum(versions.values()),
            "content_hash": store.content_hash,
            "template_versions": versions,
            "site_size": sum(1 for p in persons if cfg.device.site in p.sites),
        }
    try:
        current = configured_embedder_version()
    except Exception as exc:  # a tree without the embedder still reports its gallery
        out["embedder_version"] = None
        out["needs_resync"] = f"unknown: {exc}"
        return out
    out["embedder_version"] = current
    stale = sum(n for v, n in versions.items() if v != current)
    # Templates of another embedder are never matched; the backend must re-sync or staff re-enrol.
    out["needs_resync"] = stale > 0
    out["stale_templates"] = stale
    return out


def daemon_state(cfg: Config) -> dict[str, Any] | None:
    from firmware_py.service.heartbeat import heartbeat_path, read_live

    return read_live(heartbeat_path(cfg.device.data_dir))


def update_state(cfg: Config, config_path: Path | None) -> dict[str, Any]:
    from firmware_py.update.updater import Settings, Updater

    doc = Updater(Settings.from_config(cfg, config_path)).status()
    doc.pop("history", None)
    return doc


def local_status(cfg: Config, config_path: Path | None = None) -> dict[str, Any]:
    """The telemetry snapshot plus ``daemon`` and ``update``, each section explaining itself when unknown."""
    from firmware_py.outbox.store import Outbox
    from firmware_py.telemetry.collector import TelemetryCollector

    outbox_path = cfg.outbox.path or (cfg.device.data_dir / "outbox.sqlite")
    outbox = Outbox.from_config(cfg) if outbox_path.exists() else None
    daemon = daemon_state(cfg)
    providers: dict[str, Any] = {"gallery": lambda: gallery_summary(cfg)}
    if daemon is not None:
        providers["camera"] = lambda: {
            "state": "stalled" if daemon.get("stalled") else "running",
            "frames": daemon.get("frames"),
            "last_frame_age_s": daemon.get("last_frame_age"),
        }
    try:
        snap = TelemetryCollector.from_config(cfg, outbox=outbox, **providers).snapshot()
    finally:
        if outbox is not None:
            outbox.close()
    un = snap["unavailable"]
    if outbox is None:
        un["outbox"] = f"no outbox at {outbox_path} yet (the daemon creates it at its first start)"
    if daemon is None:
        un["camera"] = "the daemon is not running (no live heartbeat); `kaoclock health` opens the camera itself"
    un["pipeline"] = "stage timings live in the running daemon; they arrive with its MQTT telemetry"
    un["link"] = "the MQTT link lives in the running daemon; its state arrives with its MQTT telemetry"
    snap["daemon"] = daemon
    try:
        snap["update"] = update_state(cfg, config_path)
    except Exception as exc:
        snap["update"] = None
        un["update"] = f"{type(exc).__name__}: {exc}"[:300]
    return snap


def _mb(v: Any) -> str:
    return f"{v:.0f} MB" if isinstance(v, (int, float)) else "?"


def render(s: dict[str, Any]) -> str:
    """The status for a person at a terminal."""
    lines = [f"reader {s['site']}/{s['device']}  firmware {s['firmware']}  at {s['ts']}"]
    d = s.get("daemon")
    if d:
        state = "STALLED" if d.get("stalled") else "running"
        lines.append(
            f"daemon   {state}: pid {d.get('pid')}, {d.get('frames')} frames, last frame {d.get('last_frame_age')} s ago ({d.get('status')})"
        )
    else:
        lines.append("daemon   not running")
    g = s.get("gallery")
    if g:
        stale = f"; {g['stale_templates']} templates of another embedder: RE-SYNC or re-enrol" if g.get("needs_resync") is True else ""
        people = f"{g['size']} people ({g['site_size']} at this site)"
        lines.append(f"gallery  v{g['version']} {people}, {g['templates']} templates, hash {g['content_hash'][:12]}{stale}")
    ob = s.get("outbox")
    if ob:
        age = f", oldest {ob['oldest_age_s']} s" if ob.get("oldest_age_s") is not None else ""
        lines.append(f"outbox   {ob['depth']}/{ob['capacity']} queued{age}" + ("  HIGH WATER" if ob.get("high_water_active") else ""))
    if s.get("last_punch"):
        lines.append(f"punch    last {s['last_punch']}")
    models = s.get("models") or {}
    lines.append("models   " + ", ".join(f"{k} {v}" for k, v in sorted(models.items())))
    c = s.get("clock") or {}
    lines.append(f"clock    synced={c.get('synced')}" + (f" (max error {c.get('max_error_ms')} ms)" if c.get("max_error_ms") is not None else ""))
    disk = s.get("disk") or {}
    mem = s.get("memory") or {}
    lines.append(f"disk     {_mb(disk.get('free_mb'))} free of {_mb(disk.get('total_mb'))}")
    lines.append(f"memory   {_mb(mem.get('available_mb'))} available of {_mb(mem.get('total_mb'))}")
    up = s.get("uptime") or {}
    lines.append(f"uptime   system {up.get('system_s')} s, process {up.get('process_s')} s")
    u = s.get("update")
    if u:
        pend = f"; update in progress to {u['pending'].get('version')}" if u.get("pending") else ""
        if u.get("current") is None:
            lines.append(f"slots    no release installed in the A/B slots (a development checkout; readers get one from device/install.sh){pend}")
        else:
            lines.append(f"slots    current {u.get('current')}, committed {u.get('committed')}{pend}")
    for k, why in sorted((s.get("unavailable") or {}).items()):
        lines.append(f"  ({k}: {why})")
    return "\n".join(lines)
