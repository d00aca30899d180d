"""`kaoclock health`: can this release run on this reader, right now?

Checks, in order (each reports ok / fail / skip with a detail):

``config``
    the configuration file is accepted by *this* release's schema;
``models``
    every runtime model in this release's manifest is present, has its pinned
    sha256, loads in LiteRT and runs once on a blank input;
``data_dir``
    the state directory is writable (a file is written, fsynced, removed);
``camera``
    frames are flowing: from the running daemon's heartbeat when it runs (it
    holds the camera), else by reading a few frames from the configured camera;
``broker_or_outbox`` (and any other registered hook)
    registered by :mod:`firmware_py.compose.health`: the outbox and the gallery
    open, and with MQTT on, the configured broker takes a status message
    published with the device's credentials (PUBACK).

A failure marked ``permanent`` (a refused config, a wrong or unloadable model)
cannot be cured by waiting, so the updater rolls back at once instead of
retrying until its deadline.
"""

from __future__ import annotations

import functools
import importlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from firmware_py import __version__
from firmware_py.config import Config, ConfigError, load, validate
from firmware_py.paths import TREE

Status = Literal["ok", "fail", "skip"]


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    permanent: bool = False
    seconds: float = 0.0


CheckFn = Callable[[Config], Check]
_HOOKS: dict[str, CheckFn] = {}
# Modules imported for the checks they register() (the punch path's check lives with the wiring, above this package).
HOOK_MODULES: tuple[str, ...] = ("firmware_py.compose.health",)


def register(name: str, fn: CheckFn) -> None:
    """Add a check (for instance ``broker_or_outbox``) that `kaoclock health` runs after its own."""
    _HOOKS[name] = fn


def _timed(name: str, fn: Callable[[], Check]) -> Check:
    t0 = time.monotonic()
    try:
        check = fn()
    except Exception as exc:
        check = Check(name, "fail", f"{type(exc).__name__}: {exc}")
    check.seconds = round(time.monotonic() - t0, 3)
    return check


def check_config(path: Path | None) -> tuple[Check, Config | None]:
    try:
        cfg = load(path) if path is not None else validate({})
    except ConfigError as exc:
        return Check("config", "fail", str(exc).replace("\n", " "), permanent=True), None
    return Check("config", "ok", f"{path or 'built-in defaults'} accepted by release {__version__}"), cfg


def check_models(cfg: Config) -> Check:
    from firmware_py.models.litert import load_interpreter
    from firmware_py.models.manifest import ModelError, load_manifest

    manifest = load_manifest()
    runtime = manifest.select(["runtime"])
    if not runtime:
        return Check("models", "fail", "the model manifest lists no runtime model", permanent=True)
    done = []
    for entry in runtime:
        result = manifest.check_file(entry.name, cfg.models.dir)
        if not result.ok:
            return Check("models", "fail", f"{entry.name}: {result.problem}", permanent=True)
        if result.path.suffix != ".tflite":
            # Plain-coefficient models (liveness) are loaded by their own package's reader.
            try:
                if entry.name.startswith("liveness"):
                    from firmware_py.liveness.fusion import TextureModel

                    TextureModel.load(result.path)
            except Exception as exc:
                return Check("models", "fail", f"{entry.name}: cannot load {result.path}: {exc}", permanent=True)
            done.append(entry.name)
            continue
        try:
            interp = load_interpreter(result.path, cfg.models.threads)
            for d in interp.get_input_details():
                interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
            interp.invoke()
        except ModelError as exc:
            return Check("models", "fail", f"{entry.name}: {exc}", permanent=True)
        except (ValueError, RuntimeError) as exc:
            return Check("models", "fail", f"{entry.name}: cannot run {result.path}: {exc}", permanent=True)
        done.append(entry.name)
    return Check("models", "ok", f"{len(done)} runtime model(s) verified and loaded: {', '.join(done)}")


def check_data_dir(cfg: Config) -> Check:
    d = cfg.device.data_dir
    d.mkdir(parents=True, exist_ok=True)
    probe = d / f".health-{os.getpid()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"ok")
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
    return Check("data_dir", "ok", f"{d} is writable")


def check_camera(cfg: Config, frames: int, timeout: float) -> Check:
    from firmware_py.service.frames import NoCameraToCheck, read_frames
    from firmware_py.service.heartbeat import heartbeat_path, read_live

    beat = read_live(heartbeat_path(cfg.device.data_dir))
    if beat is not None:
        age = float(beat.get("last_frame_age", 1e9)) + max(0.0, time.time() - float(beat.get("updated", 0)))
        if beat.get("stalled") or age > cfg.service.frame_stall_seconds:
            return Check("camera", "fail", f"the running daemon (pid {beat.get('pid')}) has processed no frame for {age:.1f} s")
        return Check("camera", "ok", f"the running daemon (pid {beat.get('pid')}) is processing frames ({beat.get('frames')} so far)")
    try:
        probe = read_frames(cfg.camera, frames, timeout)
    except NoCameraToCheck as exc:
        return Check("camera", "skip", str(exc))
    except Exception as exc:
        return Check("camera", "fail", f"{cfg.camera.backend} camera: {exc}")
    return Check("camera", "ok", f"{probe.frames} frame(s) {probe.width}x{probe.height} read from {probe.source} in {probe.seconds:.2f} s")


def run_health(config_path: Path | None = None, *, frames: int = 3, frame_timeout: float = 10.0) -> dict[str, Any]:
    """Run every check; the report is JSON-ready, ``ok`` is True when none failed."""
    t0 = time.monotonic()
    cfg_check, cfg = check_config(config_path)
    checks = [cfg_check]
    if cfg is None:
        checks += [Check(n, "skip", "not checked: the config was refused") for n in ("models", "data_dir", "camera")]
    else:
        checks.append(_timed("models", lambda: check_models(cfg)))
        checks.append(_timed("data_dir", lambda: check_data_dir(cfg)))
        checks.append(_timed("camera", lambda: check_camera(cfg, frames, frame_timeout)))
        for module in HOOK_MODULES:
            try:
                importlib.import_module(module)
            except Exception as exc:
                checks.append(Check(module, "fail", f"cannot import {module}: {exc}", permanent=True))
        for name, fn in _HOOKS.items():
            checks.append(_timed(name, functools.partial(fn, cfg)))
        if "broker_or_outbox" not in _HOOKS:
            checks.append(Check("broker_or_outbox", "skip", "no punch outbox in this release yet (the punch package registers this check)"))
    ok = not any(c.status == "fail" for c in checks)
    return {
        "ok": ok,
        "version": __version__,
        "tree": str(TREE),
        "config": str(config_path) if config_path else None,
        "seconds": round(time.monotonic() - t0, 3),
        "checks": [asdict(c) for c in checks],
    }
