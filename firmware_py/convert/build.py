"""`kaoclock models build`: the project's own int8 face embedder, from public inputs.

Inputs: dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (CC0, fetched and
sha256-checked), dlib's 5-point shape predictor (to align calibration chips
the way dlib does), LFW ``lfw-dev`` (``--data``), TensorFlow (extra
``models``), fixed seeds.  Outputs:

* ``models/embedder/dlib_resnet_v1_int8.tflite`` (committed; the runtime embedder);
* ``models/dlib_resnet_v1_int8.toml``: its build record, a ``[models.*]``
  table that :func:`~firmware_py.models.manifest.load_manifest` merges;
* ``<models dir>/dlib_resnet_v1_float32.tflite`` (22 MB, not committed).

``--check`` rebuilds into memory and compares the sha256 with the committed
file instead of writing anything.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.convert.dlib_resnet import forward, load_face_resnet
from firmware_py.convert.facechips import DlibAligner, dlib_available, load_rgb, package_photo_chips
from firmware_py.convert.lfw import calibration_pool, lfw_root, list_digest
from firmware_py.errors import UsageError
from firmware_py.models.manifest import Manifest, ModelError, sha256_file
from firmware_py.paths import MODELS_TREE

NAME = "dlib_resnet_v1_int8"
TREE_FILE = "embedder/dlib_resnet_v1_int8.tflite"
RECORD = f"{NAME}.toml"
FLOAT32_FILE = "dlib_resnet_v1_float32.tflite"
SOURCE = "dlib_resnet_v1"
SHAPE_PREDICTOR = "dlib_shape_predictor_5"

DEFAULT_CALIBRATION = 300
DEFAULT_VARIANTS = 2
DEFAULT_SEED = 20170212  # the date dlib's face model was published; any fixed value does


@dataclass(frozen=True)
class BuildOptions:
    data: Path
    models_dir: Path
    calibration: int = DEFAULT_CALIBRATION
    variants: int = DEFAULT_VARIANTS
    seed: int = DEFAULT_SEED
    float32: bool = True
    check: bool = False
    parity_min_lfw: int = 1200
    command: str = ""


def version_of(sha256: str) -> str:
    """The embedder's version string: changes whenever the model's bytes do (templates carry it)."""
    return f"dlib-resnet-v1-int8-{sha256[:12]}"


def calibration_chips(data: Path, shape_predictor: Path, count: int, say: Callable[[str], None]) -> tuple[np.ndarray, list[str], int]:
    """The first ``count`` calibration-pool images in which dlib finds a face, aligned by dlib."""
    root = lfw_root(data)
    aligner = DlibAligner(shape_predictor)
    chips, used, missed = [], [], 0
    for rel in calibration_pool(root):
        chip = aligner.chip(load_rgb(root / rel))
        if chip is None:
            missed += 1
            continue
        chips.append(chip)
        used.append(rel)
        if len(chips) >= count:
            break
    if len(chips) < count:
        raise UsageError(f"only {len(chips)} calibration faces found in {root} (wanted {count}); lower --calibration")
    say(f"calibration: {len(chips)} dlib-aligned LFW chips ({missed} images without a detection skipped)")
    return np.stack(chips), used, missed


def build(manifest: Manifest, opts: BuildOptions, say: Callable[[str], None]) -> dict[str, Any]:
    """Run the whole build; returns the JSON report (and writes the outputs unless ``opts.check``)."""
    from firmware_py.convert import convert  # TensorFlow is imported lazily inside

    lfw_root(opts.data)  # refuse a wrong --data before any slow step
    if not dlib_available():
        raise ModelError("`kaoclock models build` aligns its calibration faces with dlib: pip install -e '.[models]' (dlib-bin)")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    dat = manifest.require(SOURCE, opts.models_dir)
    sp = manifest.require(SHAPE_PREDICTOR, opts.models_dir)
    net = load_face_resnet(dat)
    tf_version = convert.tf_version()
    say(f"parsed {dat.name}: {len(net.layers)} layers, {net.parameter_count():,} parameters; TensorFlow {tf_version}")

    t = time.perf_counter()
    chips, used, missed = calibration_chips(opts.data, sp, opts.calibration, say)
    timings["align_calibration_s"] = time.perf_counter() - t

    report: dict[str, Any] = {"name": NAME}
    f32_info: dict[str, Any] = {}
    if opts.float32 and not opts.check:
        t = time.perf_counter()
        f32 = convert.convert_float32(convert.fold(net))
        dest = opts.models_dir / FLOAT32_FILE
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f32)
        f32_info = _float32_check(dest, net, sp)
        timings["float32_s"] = time.perf_counter() - t
        say(f"float32: {dest} ({len(f32) / 1e6:.1f} MB), max |float32 - numpy| {f32_info['max_abs_diff_vs_numpy']:.2e}")
        report["float32"] = f32_info

    t = time.perf_counter()
    result = convert.build_int8(net, chips, opts.variants, opts.seed, say)
    timings["int8_s"] = time.perf_counter() - t
    sha = hashlib.sha256(result.model).hexdigest()
    say(f"int8: {len(result.model) / 1e6:.2f} MB, sha256 {sha}")
    report.update({"sha256": sha, "size_bytes": len(result.model), "version": version_of(sha)})

    if opts.check:
        expected = manifest.entry(NAME).sha256 if NAME in manifest.models else None
        report["check"] = {"expected_sha256": expected, "reproduced": sha == expected}
        timings["total_s"] = time.perf_counter() - t0
        report["timings"] = {k: round(v, 1) for k, v in timings.items()}
        return report

    dest = MODELS_TREE / TREE_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(result.model)

    t = time.perf_counter()
    from firmware_py.convert.dlib_resnet import ReferenceEmbedder
    from firmware_py.convert.parity import embedder_parity
    from firmware_py.vision.embedder import Embedder

    say("parity against the numpy reference on held-out faces")
    parity = embedder_parity(Embedder(dest, version_of(sha), 1), ReferenceEmbedder(dat), sp, opts.data, opts.parity_min_lfw)
    timings["parity_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    build_info = {
        "source_model": SOURCE,
        "source_sha256": manifest.entry(SOURCE).sha256,
        "tensorflow": tf_version,
        "dlib": _dlib_version(),
        "quantisation": (
            "full-integer int8 (TFLITE_BUILTINS_INT8), uint8 input scale 1 zero point 0, float32 output; per-channel weights; "
            "bias correction of weight rounding; activation ranges = min/max over the calibration samples; output-mean correction"
        ),
        "calibration_set": "lfw-dev images of the people in no pair of pairsDevTrain.txt, ordered by sha256 of the path, first with a dlib face",
        "calibration_alignment": "dlib HOG detector + shape_predictor_5_face_landmarks + get_face_chip(img, shape, 150, 0.25)",
        "calibration_files": len(used),
        "calibration_files_skipped_no_face": missed,
        "calibration_files_sha256": list_digest(used),
        "calibration_chips_sha256": hashlib.sha256(chips.tobytes()).hexdigest(),
        "calibration_samples": result.calibration_samples,
        "augmentation": convert.AUGMENTATION.replace("K", str(opts.variants)),
        "seed": opts.seed,
        "calibrated_tensors": result.calibrated_tensors,
        "output_correction_norm": round(result.output_shift_norm, 5),
        "command": opts.command,
        "built": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"),
        "seconds": round(timings["total_s"], 1),
    }
    if f32_info:
        build_info["float32_file"] = FLOAT32_FILE
        build_info["float32_sha256"] = f32_info["sha256"]
        build_info["float32_max_abs_diff_vs_numpy"] = f32_info["max_abs_diff_vs_numpy"]
    parity_rec = {k: v for k, v in parity.items() if k != "subsets"}
    parity_rec["command"] = "kaoclock models verify --json --data ../shared/data"
    for sub, figures in parity["subsets"].items():
        parity_rec[sub] = figures
    entry = {
        "role": "runtime",
        "location": "tree",
        "file": TREE_FILE,
        "sha256": sha,
        "licence": "CC0-1.0 (a conversion of Davis King's CC0 dlib_face_recognition_resnet_model_v1)",
        "version": version_of(sha),
        "size_bytes": len(result.model),
        "input": "chip: uint8 [1,150,150,3] RGB pixels 0..255 (scale 1.0, zero point 0), aligned like dlib.get_face_chip(img, shape5, 150, 0.25)",
        "output": "float32 [1,128] descriptor at dlib's scale, not L2-normalised (norm ~1.4); same person below Euclidean 0.6",
        "build": build_info,
        "parity": parity_rec,
    }
    (MODELS_TREE / RECORD).write_text(record_toml(NAME, entry), "utf-8")
    report.update({"file": str(dest), "record": str(MODELS_TREE / RECORD), "parity": parity, "timings": {k: round(v, 1) for k, v in timings.items()}})
    return report


def _dlib_version() -> str:
    import dlib

    return str(dlib.__version__)


def _float32_check(path: Path, net: Any, shape_predictor: Path) -> dict[str, Any]:
    from firmware_py.vision.embedder import Embedder

    chips, _ = package_photo_chips(shape_predictor)
    arr = np.stack(list(chips.values()))
    diff = float(np.abs(Embedder(path, "float32", 1).embed(arr) - forward(net, arr)).max())
    return {"file": str(path), "sha256": sha256_file(path), "max_abs_diff_vs_numpy": float(f"{diff:.3g}")}


# -- a small TOML writer (tomllib only reads) -----------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def record_toml(name: str, entry: dict[str, Any]) -> str:
    """The build record: ``[models.NAME]`` with nested tables for dict values."""
    lines = [
        f"# Build record of the {name} embedder, written by `kaoclock models build`: do not edit by hand.",
        "# load_manifest() merges this [models.*] table into models/manifest.toml.",
        "",
    ]

    def table(path: str, d: dict[str, Any]) -> None:
        lines.append(f"[{path}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict))
        lines.append("")
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{path}.{k}", v)

    table(f"models.{name}", entry)
    return "\n".join(lines)
