"""`kaoclock release keygen|build|verify`: the vendor's side of signed updates."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from firmware_py.paths import TREE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("release", help="make the release key, build and sign release bundles, verify them (vendor)")
    rsub = p.add_subparsers(dest="release_command", metavar="ACTION")
    rsub.required = True

    k = rsub.add_parser("keygen", help="create an Ed25519 release key pair (release.key 0600, release.pub)")
    k.add_argument("--out", type=Path, default=Path("."), help="directory for release.key and release.pub (default .)")
    k.add_argument("--json", action="store_true", help="print JSON")
    k.set_defaults(func=cmd_keygen)

    b = rsub.add_parser("build", help="build a signed bundle from a source tree")
    b.add_argument("--key", type=Path, required=True, help="release private key (PEM); passphrase from $KAOCLOCK_RELEASE_KEY_PASSPHRASE")
    b.add_argument("--tree", type=Path, default=TREE, help=f"source tree (default: this one, {TREE})")
    b.add_argument("--wheels", type=Path, help="folder of .whl files to ship (needed when the Python dependencies change)")
    b.add_argument(
        "--platform",
        choices=("aarch64", "x86_64"),
        help="download the runtime dependencies' wheels for this reader (Debian 12 / Raspberry Pi OS Bookworm: glibc 2.36, "
        "Python 3.11) with pip and ship them (into --wheels DIR if given, else a temporary folder)",
    )
    b.add_argument(
        "--board-check",
        type=Path,
        help="the board check's summary (default ~/.cache/kaoclock/aarch64/last-check.json): an aarch64 release is refused "
        "unless device/check-aarch64.sh passed every step on this clean commit",
    )
    b.add_argument("--no-board-check", action="store_true", help="build an aarch64 bundle without a passing board check (test bundles)")
    b.add_argument("--min-from", dest="min_from", help="oldest running version this release may be installed over")
    b.add_argument("-o", "--output", type=Path, help="bundle file (default: dist/kaoclock-VERSION.bundle in the tree)")
    b.add_argument("--json", action="store_true", help="accepted for symmetry: the report is always JSON")
    b.set_defaults(func=cmd_build)

    v = rsub.add_parser("verify", help="check a bundle's signature and every file hash, without installing it")
    v.add_argument("bundle", type=Path)
    v.add_argument("--pubkey", type=Path, required=True, help="release public key file (PEM)")
    v.add_argument("--json", action="store_true", help="print JSON")
    v.set_defaults(func=cmd_verify)


def cmd_keygen(args: argparse.Namespace) -> int:
    from firmware_py.update.signing import generate_keypair

    kid = generate_keypair(args.out / "release.key", args.out / "release.pub")
    if args.json:
        print(json.dumps({"kid": kid, "private": str(args.out / "release.key"), "public": str(args.out / "release.pub")}, indent=2))
        return 0
    print(f"release key {kid}: private {args.out / 'release.key'} (mode 0600, keep it offline)")
    print(f"public key {args.out / 'release.pub'}: install it on every reader as /etc/kaoclock/release.pub")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from firmware_py.update.bundle import build_bundle, tree_version
    from firmware_py.update.signing import load_private_key

    key = load_private_key(args.key)
    out = args.output or (args.tree / "dist" / f"kaoclock-{tree_version(args.tree)}.bundle")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.platform is None:
        m = build_bundle(args.tree, out, key, wheels_dir=args.wheels, min_from_version=args.min_from)
        doc = {"bundle": str(out), "version": m.version, "files": len(m.files), "bytes": out.stat().st_size, "unpacked_bytes": m.total_size}
        doc.update(key_id=m.key_id, source=m.source, wheels=m.has_wheels)
        print(json.dumps(doc, indent=2))
        return 0
    import tempfile

    from firmware_py.update.bundle import git_source
    from firmware_py.update.requirements import read_requirements
    from firmware_py.update.wheels import default_board_check, download, platform_named, require_board_check

    plat = platform_named(args.platform)
    if not args.no_board_check:
        require_board_check(plat, git_source(args.tree), args.board_check or default_board_check(plat))
    with tempfile.TemporaryDirectory(prefix="kaoclock-wheels-") as tmp:
        wdir = args.wheels or Path(tmp)
        print(f"release: downloading the {plat.name} wheels (Python {plat.python[0]}.{plat.python[1]}) into {wdir}", file=sys.stderr, flush=True)
        wheels = download(read_requirements(args.tree / "pyproject.toml"), plat, wdir)
        m = build_bundle(args.tree, out, key, wheels_dir=wdir, min_from_version=args.min_from)
    doc = {"bundle": str(out), "version": m.version, "files": len(m.files), "bytes": out.stat().st_size, "unpacked_bytes": m.total_size}
    doc.update(key_id=m.key_id, source=m.source, wheels=m.has_wheels, platform=plat.name, wheel_files=[w.name for w in wheels])
    print(json.dumps(doc, indent=2))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from firmware_py.update.bundle import verify_bundle
    from firmware_py.update.signing import TrustedKeys

    vb = verify_bundle(args.bundle, TrustedKeys.load(args.pubkey))
    doc = {"bundle": str(vb.path), "ok": True, "version": vb.manifest.version, "created": vb.manifest.created, "signed_by": vb.signer}
    doc.update(files=len(vb.manifest.files), sha256=vb.sha256, requirements=list(vb.manifest.requirements), wheels=vb.manifest.has_wheels)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{vb.path}: release {vb.manifest.version}, signed by {vb.signer}, {len(vb.manifest.files)} files verified")
    return 0
