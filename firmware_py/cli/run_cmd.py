"""`kaoclock run`: the reader's main job (without --config: the embedded demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from firmware_py.config import load, with_changes
from firmware_py.models.manifest import ModelError, load_manifest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the reader (without --config: the embedded demo)",
        description="Run the reader until stopped (SIGTERM / SIGINT). Without --config: the embedded demo, which enrols a person "
        "from a photo shipped in a PyPI package, replays a walk-up and prints each decision with its reason, then finishes. "
        "Exit status 9: a provisioned reader's device key is missing, unreadable or not the provisioned one "
        "(it is never replaced at run time; restore it or re-provision).",
    )
    p.add_argument("--config", help="TOML config file (default: the embedded demo)")
    p.add_argument("--source", type=Path, help="replay this video file or image folder instead of the configured camera / the demo walk-up")
    p.add_argument("--jsonl", help="also write each decision as a JSON line to this file ('-' = stdout)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--fetch-demo-assets", action="store_true", help="only download and verify the demo's photos, then exit (bootstrap does this)")
    p.set_defaults(func=cmd_run)


def check_models(cfg) -> None:  # type: ignore[no-untyped-def]
    manifest = load_manifest()
    bad = [r for r in (manifest.check_file(m.name, cfg.models.dir) for m in manifest.select(["runtime"])) if not r.ok]
    if bad:
        raise ModelError("refusing to start:\n" + "\n".join(f"  - {r.problem}" for r in bad))


def cmd_run(args: argparse.Namespace) -> int:
    if args.fetch_demo_assets:
        from firmware_py.demo_assets import ensure_demo_assets

        for name, path in ensure_demo_assets(load(args.config).models.dir).items():
            print(f" present  demo:{name}  {path}")
        return 0
    if args.config is None:
        from firmware_py.demo import run_demo

        check_models(load(None))
        result = run_demo(source=args.source, jsonl=args.jsonl)
        return 0 if result.frames else 1
    cfg = load(args.config)
    from firmware_py.compose.punch_path import check_device_key
    from firmware_py.keys.store import device_key_path

    check_device_key(cfg.punch.key_file or device_key_path(cfg.device.data_dir), cfg.device.data_dir)  # before anything starts
    if args.source is not None:
        cfg = with_changes(cfg, {"camera.backend": "replay", "camera.source": str(args.source)})
    if cfg.models.verify_on_start:
        check_models(cfg)
    from firmware_py.decision.sinks import JsonLinesSink
    from firmware_py.reader import build_reader
    from firmware_py.service.logs import configure_logging

    # Under systemd this goes to journald with structured fields; on a terminal, plain text.
    configure_logging(cfg.logging.level, cfg.logging.format)

    extra = [JsonLinesSink(None if args.jsonl == "-" else args.jsonl)] if args.jsonl else []
    reader = build_reader(cfg, config_path=args.config, extra_sinks=extra)
    gallery = reader.daemon.pipeline.gallery
    print(
        f"kaoclock: {cfg.device.id} at {cfg.device.site}: {gallery.persons} person(s), {len(gallery)} template(s); "
        f"threshold {reader.threshold.value:.3f} ({reader.threshold.source}); liveness {cfg.liveness.policy}; "
        f"pins {cfg.gpio.pin_factory}; mqtt {'on' if cfg.mqtt.enabled else 'off (punches stay queued)'}",
        flush=True,
    )
    reader.daemon.install_signal_handlers()
    reader.run(max_frames=args.max_frames)
    return 0
