"""`kaoclock enroll`: enrol a person from photos (all photos pass the gates, or nothing is stored)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from firmware_py.config import load


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "enroll",
        help="enrol a person from photos, with quality gates",
        description="Enrol a person from one or more photos. Every photo must show one clear face (size, sharpness, pose, "
        "exposure); if any photo is refused nothing is stored and each refusal names the photo and the reason.",
    )
    p.add_argument("--config", help="TOML config file (default: the embedded defaults)")
    p.add_argument("--person", required=True, help="person id (letters, digits, '.', '_', '-'), e.g. the staff number")
    p.add_argument("--name", required=True, help="display name")
    p.add_argument("--site", action="append", help="site(s) whose readers recognise this person (repeatable; default: device.site)")
    p.add_argument("--replace", action="store_true", help="replace the person's existing templates instead of adding to them")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("photos", nargs="+", type=Path, metavar="PHOTO", help="photo file(s) of the person")
    p.set_defaults(func=cmd_enroll)


def cmd_enroll(args: argparse.Namespace) -> int:
    from firmware_py.gallery.enrol import EnrolmentRefused, enrol_photos
    from firmware_py.gallery.store import open_from_config
    from firmware_py.pipeline.build import build_analyzer, choose_threshold
    from firmware_py.vision.embedding import load_embedder

    cfg = load(args.config)
    embedder = load_embedder(cfg)
    analyzer = build_analyzer(cfg, enrolment=True)
    with open_from_config(cfg) as store:
        threshold = choose_threshold(cfg, store, embedder.version).value
        try:
            report = enrol_photos(
                store,
                analyzer,
                embedder,
                args.person,
                args.name,
                args.site or [cfg.device.site],
                args.photos,
                replace=args.replace,
                mirror=cfg.recognition.mirror_average,
                threshold=threshold,
            )
        except EnrolmentRefused as exc:
            if args.json:
                print(json.dumps(exc.report.as_dict(), indent=2))
            raise
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for w in report.warnings:
            print(f"warning: {w}")
        sites = ", ".join(args.site or [cfg.device.site])
        print(f"enrolled {report.person_id} ({report.name}) for {sites}: {len(report.photos)} template(s); gallery version {report.gallery_version}")
    return 0
