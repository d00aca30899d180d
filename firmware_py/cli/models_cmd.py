"""`kaoclock models fetch|verify|build`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from firmware_py import progress
from firmware_py.config import load
from firmware_py.errors import UsageError
from firmware_py.models.fetch import fetch
from firmware_py.models.manifest import load_manifest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="fetch, verify and build the model files")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    f = msub.add_parser("fetch", help="download the pinned model artefacts, check their sha256, extract the models")
    f.add_argument("--config", help="config file whose [models] dir receives the files")
    f.add_argument("--dir", type=Path, help="models directory (overrides the config)")
    f.add_argument("--role", action="append", choices=["runtime", "build", "reference"], help="only models of this role (repeatable; default all)")
    f.add_argument("--json", action="store_true", help="print what was done as JSON")
    f.set_defaults(func=cmd_fetch)

    v = msub.add_parser(
        "verify",
        help="check the sha256 of the models the reader runs (--all: also the converter's inputs and the int8 embedder's parity)",
        description="By default, what the reader runs: the sha256 of every runtime model (fetched or committed), and with --data "
        "the MiniFASNet liveness nets against the numpy forward pass of their .pth files on dev crops (max |dp_real| <= 0.02, "
        "else exit 3); exit 0 after a plain `device/bootstrap.sh`.  --all adds the converter's inputs and references (the dlib "
        ".dat files, fetched by `bootstrap.sh --dev`) and measures the int8 embedder against the numpy reference forward pass "
        "of dlib's model on aligned chips of real faces (the photos inside matplotlib and scikit-image; with --data also "
        "held-out LFW faces).  Needs numpy and LiteRT, never TensorFlow.",
    )
    v.add_argument("--all", action="store_true", help="also the converter's inputs (every role) and the int8 embedder's parity with dlib's .dat")
    v.add_argument("--config", help="config file")
    v.add_argument("--dir", type=Path, help="models directory (overrides the config)")
    v.add_argument("--role", action="append", choices=["runtime", "build", "reference"], help="only this role (default runtime; --all: every role)")
    v.add_argument("--json", action="store_true", help="print JSON")
    v.add_argument("--data", type=Path, help="the shared face data set (holding lfw-dev/) to add held-out LFW faces to the parity check")
    v.add_argument("--lfw-faces", type=int, default=1200, metavar="N", help="LFW images to use with --data, taken pair by pair (0 = all)")
    v.add_argument("--liveness-faces", type=int, default=600, metavar="N", help="dev stills for the liveness nets' parity with --data (default 600)")
    v.add_argument("--no-parity", action="store_true", help="only check the sha256 of the files")
    v.add_argument(
        "--target",
        choices=("all", "embedder", "liveness"),
        help="whose parity to measure (default: liveness with --data; with --all also the embedder; embedder needs the .dat)",
    )
    v.set_defaults(func=cmd_verify)

    b = msub.add_parser(
        "build",
        help="convert dlib's face model to the project's TFLite float32 and int8 embedder (needs the `models` extra)",
        description="Parse dlib_face_recognition_resnet_model_v1.dat, convert it to TFLite float32 and full-integer int8 calibrated on "
        "dlib-aligned LFW faces, write models/embedder/dlib_resnet_v1_int8.tflite and its build record models/dlib_resnet_v1_int8.toml, "
        "and measure parity on held-out faces.  --check rebuilds and compares the sha256 with the committed file instead.",
    )
    b.add_argument("--config", help="config file")
    b.add_argument("--dir", type=Path, help="models directory (overrides the config)")
    b.add_argument(
        "--data", type=Path, required=True, help="the shared face data set holding lfw-dev/ and models-src/minifasnet/ (e.g. ../shared/data)"
    )
    b.add_argument(
        "--target",
        choices=("embedder", "liveness"),
        default="embedder",
        help="embedder: dlib's face model -> int8 (default); liveness: the two MiniFASNet nets -> float16 (models/liveness/)",
    )
    b.add_argument("--calibration", type=int, default=300, metavar="N", help="calibration faces (default 300)")
    b.add_argument("--variants", type=int, default=2, metavar="K", help="augmented variants per calibration face (default 2)")
    b.add_argument("--seed", type=int, help="augmentation seed (default: the recorded one)")
    b.add_argument("--no-float32", action="store_true", help="skip the float32 model")
    b.add_argument("--check", action="store_true", help="rebuild in memory and compare the sha256 with the committed int8 file; write nothing")
    b.add_argument("--lfw-faces", type=int, default=1200, metavar="N", help="held-out LFW images for the parity figures (default 1200)")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.set_defaults(func=cmd_build)


def models_dir(args: argparse.Namespace) -> Path:
    return args.dir if args.dir else load(args.config).models.dir


def cmd_fetch(args: argparse.Namespace) -> int:
    report = fetch(load_manifest(), models_dir(args), args.role, say=_say_stderr if progress.enabled() else None)
    if args.json:
        print(json.dumps({"models": report}, indent=2))
        return 0
    for r in report:
        print(f"{r['action']:>8}  {r['name']}  {r['path']}")
    return 0


def _say_stderr(msg: str) -> None:
    print(f"models: {msg}", file=sys.stderr, flush=True)


def _check_data(data: Path | None) -> None:
    if data is not None and not data.is_dir():
        raise UsageError(f"--data {data}: not a directory (point it at the shared face data set, e.g. ../shared/data)")


def cmd_verify(args: argparse.Namespace) -> int:
    from firmware_py.convert.build import NAME as EMBEDDER
    from firmware_py.convert.build import SHAPE_PREDICTOR, SOURCE

    _check_data(args.data)
    manifest = load_manifest()
    mdir = models_dir(args)
    # The reader runs only the runtime models; the converter's inputs (dlib's .dat files) come with --dev and count with --all.
    roles = args.role or (None if args.all else ["runtime"])
    target = args.target or ("all" if args.all else "liveness")
    results = [manifest.check_file(m.name, mdir) for m in manifest.select(roles)]
    out: dict[str, Any] = {
        "scope": "all" if args.all else "runtime",
        "models": [{"name": r.name, "sha256": r.found, "ok": r.ok, **({"problem": r.problem} if r.problem else {})} for r in results],
    }
    status = 0 if all(r.ok for r in results) else 3
    if not args.no_parity and target == "liveness" and EMBEDDER in manifest.models:
        dat = manifest.models[SOURCE].file if SOURCE in manifest.models else SOURCE
        out["embedder_parity"] = {"skipped": f"needs the converter's input {dat} (`device/bootstrap.sh --dev`); measured with --all"}
    if not args.no_parity and target in ("all", "embedder") and EMBEDDER in manifest.models:
        checks = {n: manifest.check_file(n, mdir) for n in (EMBEDDER, SOURCE, SHAPE_PREDICTOR)}
        bad = [c.problem for n, c in checks.items() if not c.ok and n != SHAPE_PREDICTOR]
        if bad:
            out["embedder_parity"] = {"problem": "; ".join(str(b) for b in bad)}
            status = 3
        else:
            from firmware_py.convert.dlib_resnet import ReferenceEmbedder
            from firmware_py.convert.parity import embedder_parity
            from firmware_py.vision.embedder import load_embedder

            sp = checks[SHAPE_PREDICTOR].path if checks[SHAPE_PREDICTOR].ok else None
            emb = load_embedder(mdir, threads=1)
            parity = embedder_parity(emb, ReferenceEmbedder(checks[SOURCE].path), sp, args.data, args.lfw_faces)
            out["embedder_parity"] = {"embedder": EMBEDDER, "version": emb.version, **parity}
    if not args.no_parity and target in ("all", "liveness") and args.data is not None and "minifasnet_v2" in manifest.models:
        from firmware_py.eval.minifasnet_parity import learned_parity

        bad = [c.problem for c in (manifest.check_file(n, mdir) for n in ("minifasnet_v2", "minifasnet_v1se", "blazeface_short_range")) if not c.ok]
        if bad:
            out["liveness_parity"] = {"problem": "; ".join(str(b) for b in bad)}
            status = 3
        else:
            print("verify: liveness nets against the numpy reference on dev crops", file=sys.stderr, flush=True)
            lp = learned_parity(mdir, args.data, args.liveness_faces)
            out["liveness_parity"] = lp
            if lp["ensemble_p_real"]["max_abs_diff"] > 0.02 or any(
                lp[f"{n}_p_real"]["max_abs_diff"] > 0.02 for n in ("minifasnet_v2", "minifasnet_v1se")
            ):
                status = 3
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        shown: dict[str, Any] | None = out.get("liveness_parity")
        if shown and "problem" in shown:
            print(f"liveness parity: not measured: {shown['problem']}")
        elif shown:
            print(
                f"liveness parity over {shown['n']} dev faces: |dp_real| max/mean "
                + ", ".join(
                    f"{n} {shown[f'{n}_p_real']['max_abs_diff']}/{shown[f'{n}_p_real']['mean_abs_diff']}"
                    for n in ("minifasnet_v2", "minifasnet_v1se", "ensemble")
                )
            )
        for r in results:
            print(f"{'ok' if r.ok else 'FAIL':>4}  {r.name}" + (f"  {r.problem}" if r.problem else ""))
        p = out.get("embedder_parity")
        if p and "skipped" in p:
            print(f"parity: not measured: {p['skipped']}")
        elif p and "problem" in p:
            print(f"parity: not measured: {p['problem']}")
        elif p:
            print(
                f"parity of {p['embedder']} vs the numpy reference over {p['n']} faces: cosine min {p['cosine_min']}, mean {p['cosine_mean']}; "
                f"euclid mean {p['euclid_mean']}, max {p['euclid_max']}; {p['ms_per_chip']} ms per chip"
                + (f"; {p['decisions_flipped']} of {p['pairs']} decisions flipped at 0.6" if "pairs" in p else "")
            )
            print(f"  faces: {p['source']}")
    return status


def cmd_build(args: argparse.Namespace) -> int:
    from firmware_py.convert.build import DEFAULT_SEED, BuildOptions, build

    _check_data(args.data)
    if args.target == "liveness":
        return _build_liveness(args)
    if args.calibration < 8:
        raise UsageError("--calibration must be at least 8 faces")
    if args.variants < 0:
        raise UsageError("--variants must be 0 or more")
    command = "kaoclock models build " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if sys.argv[1:3] == ["models", "build"] else ""
    opts = BuildOptions(
        data=args.data,
        models_dir=models_dir(args),
        calibration=args.calibration,
        variants=args.variants,
        seed=DEFAULT_SEED if args.seed is None else args.seed,
        float32=not args.no_float32,
        check=args.check,
        parity_min_lfw=args.lfw_faces,
        command=command or f"kaoclock models build --data {args.data}",
    )

    def say(msg: str) -> None:
        print(f"build: {msg}", file=sys.stderr, flush=True)

    report = build(load_manifest(), opts, say)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k in ("sha256", "version", "size_bytes", "file", "record", "check", "timings"):
            if k in report:
                print(f"{k}: {report[k]}")
        if "parity" in report:
            p = report["parity"]
            print(f"parity: n={p['n']} cosine min {p['cosine_min']} mean {p['cosine_mean']} euclid mean {p['euclid_mean']} max {p['euclid_max']}")
    if args.check:
        return 0 if report["check"]["reproduced"] else 1
    return 0


def _build_liveness(args: argparse.Namespace) -> int:
    from firmware_py.convert import minifasnet_build

    command = "kaoclock models build " + " ".join(shlex.quote(a) for a in sys.argv[3:]) if sys.argv[1:3] == ["models", "build"] else ""

    def say(msg: str) -> None:
        print(f"build: {msg}", file=sys.stderr, flush=True)

    report = minifasnet_build.build(load_manifest(), args.data, args.check, command or "kaoclock models build --target liveness --data DATA", say)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, info in report["models"].items():
            print(
                f"{name}: sha256 {info['sha256']} {info['size_bytes']} bytes"
                + (f" reproduced={info['check']['reproduced']}" if "check" in info else "")
            )
    if args.check:
        return 0 if all(i["check"]["reproduced"] for i in report["models"].values()) else 1
    return 0
