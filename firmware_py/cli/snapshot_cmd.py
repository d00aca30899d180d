"""`kaoclock snapshot --annotate out.png`: one frame, analysed and drawn, for mounting the reader."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("snapshot", help="save what the camera sees with face boxes, landmarks, match, liveness and the minimum-face guide")
    p.add_argument("--annotate", required=True, metavar="OUT", help="where to save the annotated picture (.png or .jpg)")
    p.add_argument("--config", help="config file (default: $KAOCLOCK_CONFIG, else the embedded default)")
    p.add_argument("--source", help="an image, video or image folder instead of the configured camera")
    p.add_argument("--json", action="store_true", help="print what was found as JSON")
    p.set_defaults(func=cmd_snapshot)


def cmd_snapshot(args: argparse.Namespace) -> int:
    from firmware_py.config import load
    from firmware_py.provision.snapshot import _label, take_snapshot

    cfg = load(args.config)
    rep = take_snapshot(cfg, Path(args.annotate), args.source)
    if args.json:
        print(json.dumps(rep.as_dict(), indent=2))
        return 0
    print(f"{rep.source}: {rep.width}x{rep.height}, {len(rep.faces)} face(s); saved {rep.out}")
    for f in rep.faces:
        size = f"{f.face_px:.0f}px" if f.face_px is not None else "?"
        print(f"  face {size} (gate needs {rep.min_face_px_gate:.0f}px, enrolment {rep.min_face_px_enrol:.0f}px): {_label(f)[0]}")
    if not rep.faces:
        print("  no face found: stand where staff will stand, check the light and the camera angle")
    return 0
