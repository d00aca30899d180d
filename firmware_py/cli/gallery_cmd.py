"""`kaoclock gallery list|remove|calibrate`."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from firmware_py.config import load
from firmware_py.errors import KaoclockError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gallery", help="list, remove and calibrate the enrolled people")
    gsub = p.add_subparsers(dest="gallery_command", metavar="ACTION")
    gsub.required = True

    ls = gsub.add_parser("list", help="enrolled people, their sites and templates, and the gallery version and hash")
    ls.add_argument("--config", help="TOML config file")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_list)

    rm = gsub.add_parser("remove", help="remove a person and purge their templates")
    rm.add_argument("--config", help="TOML config file")
    rm.add_argument("person", help="person id")
    rm.add_argument("--json", action="store_true", help="print JSON")
    rm.set_defaults(func=cmd_remove)

    cal = gsub.add_parser(
        "calibrate",
        help="estimate this site's threshold from the enrolled people's impostor distances",
        description="Estimate the distance threshold that keeps the false-positive identification rate at --target-fpir for "
        "this gallery, from the distances between different enrolled people's templates; the reader uses it "
        "(recognition.threshold_source = 'gallery').",
    )
    cal.add_argument("--config", help="TOML config file")
    cal.add_argument("--target-fpir", type=float, help="false-positive identification rate to aim at (default: gallery.target_fpir)")
    cal.add_argument("--allow-looser", action="store_true", help="accept a threshold above recognition.threshold (default: only tighten)")
    cal.add_argument("--clear", action="store_true", help="forget the stored calibration (the reader goes back to recognition.threshold)")
    cal.add_argument("--json", action="store_true", help="print JSON")
    cal.set_defaults(func=cmd_calibrate)


def cmd_list(args: argparse.Namespace) -> int:
    from firmware_py.gallery.store import open_from_config

    cfg = load(args.config)
    with open_from_config(cfg, create=False) as store:
        persons = store.list_persons()
        cal = store.calibration()
        out: dict[str, Any] = {
            "version": store.version,
            "content_hash": store.content_hash,
            "persons": [
                {
                    "person": p.person_id,
                    "name": p.name,
                    "sites": list(p.sites),
                    "templates": p.templates,
                    "embedder_versions": list(p.embedder_versions),
                }
                for p in persons
            ],
            "calibration": cal.as_dict() if cal else None,
        }
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    print(f"gallery version {out['version']}, {len(persons)} person(s), content sha256 {out['content_hash'][:16]}...")
    for p in persons:
        print(f"  {p.person_id:<16} {p.name:<24} sites {','.join(p.sites):<20} {p.templates} template(s) [{', '.join(p.embedder_versions)}]")
    if cal:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(cal.ts))
        print(f"calibrated threshold {cal.threshold} for FPIR {cal.target_fpir:g} ({cal.persons} people, {when})")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from firmware_py.gallery.store import open_from_config

    cfg = load(args.config)
    with open_from_config(cfg, create=False) as store:
        if not store.remove_person(args.person):
            raise KaoclockError(f"no person {args.person!r} in the gallery; see `kaoclock gallery list`")
        if args.json:
            print(json.dumps({"removed": args.person, "gallery_version": store.version}))
        else:
            print(f"removed {args.person} and purged their templates; gallery version {store.version}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from firmware_py.gallery.calibration import calibrate
    from firmware_py.gallery.store import open_from_config
    from firmware_py.vision.embedding import load_embedder

    cfg = load(args.config)
    with open_from_config(cfg, create=False) as store:
        if args.clear:
            store.set_calibration(None)
            print(
                "calibration cleared; the reader estimates a threshold from the gallery at start "
                f"(never looser than recognition.threshold = {cfg.recognition.threshold}), or uses recognition.threshold"
            )
            return 0
        version = load_embedder(cfg).version
        gallery = store.load_matrix(cfg.device.site, version)
        target = args.target_fpir if args.target_fpir is not None else cfg.gallery.target_fpir
        cal = calibrate(gallery, target, ceiling=None if args.allow_looser else cfg.recognition.threshold)
        store.set_calibration(cal)
    if args.json:
        print(json.dumps(cal.as_dict(), indent=2))
    else:
        print(f"site threshold {cal.threshold} for FPIR {cal.target_fpir:g} over {cal.persons} people")
        print(f"  from {cal.impostor_pairs} impostor pairs; {cal.method}")
        if cfg.recognition.threshold_source != "gallery":
            print("note: recognition.threshold_source is 'config': the reader ignores this until it is set to 'gallery'")
    return 0
