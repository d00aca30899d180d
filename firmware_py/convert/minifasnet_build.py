"""`kaoclock models build --target liveness`: the learned liveness nets, from Minivision's MiniFASNet weights.

Inputs: the two PyTorch state dicts in ``<data>/models-src/minifasnet/``
(Apache-2.0; sha256 pinned below and checked), TensorFlow (extra ``models``).
No calibration data: the port is float16 weights (float32 arithmetic),
which keeps parity far inside the 0.02 target; int8 was not needed.
Outputs (committed):

* ``models/liveness/minifasnet_v2_2.7_f16.tflite`` and
  ``models/liveness/minifasnet_v1se_4.0_f16.tflite``;
* ``models/liveness/LICENSE-minifasnet`` (the Apache-2.0 licence, shipped beside them)
  and ``models/liveness/NOTICE-minifasnet`` (where they come from, what was changed);
* ``models/minifasnet_f16.toml``: the build record, two ``[models.*]`` tables
  merged by :func:`~firmware_py.models.manifest.load_manifest`.

``--check`` rebuilds in memory and compares the sha256 with the committed files.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from firmware_py.convert.build import record_toml
from firmware_py.errors import UsageError
from firmware_py.models.manifest import Manifest, ModelError, sha256_file
from firmware_py.paths import MODELS_TREE

RECORD = "minifasnet_f16.toml"
SOURCE_DIR = "models-src/minifasnet"
UPSTREAM = "github.com/minivision-ai/Silent-Face-Anti-Spoofing @ b6d5f04ad78778917853b25c778acef6d5626d15, resources/anti_spoof_models/"

# name -> (source file, its sha256, crop scale, tree file, architecture)
SOURCES: dict[str, tuple[str, str, float, str, str]] = {
    "minifasnet_v2": (
        "2.7_80x80_MiniFASNetV2.pth",
        "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
        2.7,
        "liveness/minifasnet_v2_2.7_f16.tflite",
        "MiniFASNetV2",
    ),
    "minifasnet_v1se": (
        "4_0_0_80x80_MiniFASNetV1SE.pth",
        "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
        4.0,
        "liveness/minifasnet_v1se_4.0_f16.tflite",
        "MiniFASNetV1SE",
    ),
}
CONVERSION = "batch norms folded; first conv's input channels reversed (RGB input); softmax appended; float16 weights, float32 arithmetic"
LICENCE_FILE = "liveness/LICENSE-minifasnet"
NOTICE_FILE = "liveness/NOTICE-minifasnet"
NOTICE = f"""MiniFASNet liveness models (models/liveness/*.tflite)

Converted by kaoclock (`kaoclock models build --target liveness`) from the
MiniFASNetV2 (scale 2.7) and MiniFASNetV1SE (scale 4.0) weights of
Silent-Face-Anti-Spoofing by Minivision AI, licensed under the Apache License,
Version 2.0 (LICENSE-minifasnet beside this file).
Source: {UPSTREAM}

Changes made in the conversion: batch norms folded into the preceding
layers; the first convolution's input channels reversed so the model takes
RGB instead of BGR; a softmax appended; weights stored as float16.
"""


def source_dir(data: Path) -> Path:
    d = Path(data) / SOURCE_DIR
    if not d.is_dir():
        raise UsageError(f"{d}: not a directory; --data must hold {SOURCE_DIR}/ (the MiniFASNet weights)")
    return d


def check_sources(data: Path) -> dict[str, Path]:
    """The source .pth files, each checked against its pinned sha256."""
    d = source_dir(data)
    out = {}
    for name, (fname, sha, *_rest) in SOURCES.items():
        p = d / fname
        if not p.is_file():
            raise ModelError(f"liveness build: missing source {p}")
        found = sha256_file(p)
        if found != sha:
            raise ModelError(f"liveness build: sha256 mismatch for {p}: expected {sha}, found {found}")
        out[name] = p
    return out


def version_of(name: str, sha256: str) -> str:
    return f"{name.replace('_', '-')}-f16-{sha256[:12]}"


def build(manifest: Manifest, data: Path, check: bool, command: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Convert both nets; write the files and the build record unless ``check``."""
    from firmware_py.convert import minifasnet_convert as mc
    from firmware_py.convert.minifasnet import forward, load_network
    from firmware_py.models.litert import load_interpreter_from_bytes

    t0 = time.perf_counter()
    sources = check_sources(data)
    tf_version = mc.tf_version()
    rng = np.random.default_rng(80)
    probe = rng.uniform(0, 255, (16, 80, 80, 3)).astype(np.float32)  # a bit-level self-check; the real parity is `models verify`
    report: dict[str, Any] = {"models": {}}
    entries: dict[str, dict[str, Any]] = {}
    for name, (fname, src_sha, scale, tree_file, arch) in SOURCES.items():
        net = load_network(sources[name])
        model = mc.convert(mc.fold(net), float16=True)
        sha = hashlib.sha256(model).hexdigest()
        interp = load_interpreter_from_bytes(model, 1)
        i_in, i_out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
        got = []
        for x in probe:
            interp.set_tensor(i_in, x[None])
            interp.invoke()
            got.append(interp.get_tensor(i_out)[0])
        diff = float(np.abs(np.array(got) - forward(net, probe)).max())
        say(f"{name}: {arch} {net.parameter_count():,} parameters -> {len(model):,} bytes float16, sha256 {sha[:12]}, max |dp| on noise {diff:.1e}")
        info: dict[str, Any] = {"sha256": sha, "size_bytes": len(model), "version": version_of(name, sha), "probe_max_abs_diff": diff}
        if check:
            expected = manifest.entry(name).sha256 if name in manifest.models else None
            info["check"] = {"expected_sha256": expected, "reproduced": sha == expected}
        else:
            dest = MODELS_TREE / tree_file
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(model)
            info["file"] = str(dest)
        report["models"][name] = info
        entries[name] = {
            "role": "runtime",
            "location": "tree",
            "file": tree_file,
            "sha256": sha,
            "licence": "Apache-2.0 (Minivision's Silent-Face-Anti-Spoofing; notice: models/liveness/LICENSE-minifasnet, NOTICE-minifasnet)",
            "version": version_of(name, sha),
            "size_bytes": len(model),
            "input": f"crop: float32 [1,80,80,3] RGB 0..255 (not normalised): the box {scale}x the RetinaFace-style face box about its centre, "
            "clamped and shifted into the frame, resized bilinearly (firmware_py.liveness.learned.crop)",
            "output": "float32 [1,3] softmax probabilities; class 1 = real, 0 and 2 = two kinds of attack",
            "build": {
                "source_file": f"{SOURCE_DIR}/{fname}",
                "source_sha256": src_sha,
                "source": UPSTREAM + fname,
                "architecture": arch,
                "crop_scale": scale,
                "parameters": net.parameter_count(),
                "tensorflow": tf_version,
                "conversion": CONVERSION,
                "command": command,
                "built": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"),
            },
        }
    if not check:
        shutil.copyfile(source_dir(data) / "LICENSE", MODELS_TREE / LICENCE_FILE)
        (MODELS_TREE / NOTICE_FILE).write_text(NOTICE, "utf-8")
        text = record_toml("minifasnet", {}).split("\n")[:2]
        body = "\n".join(record_toml(n, e).split("\n", 3)[3] for n, e in entries.items())
        header = [
            "# Build record of the MiniFASNet liveness nets, written by `kaoclock models build --target liveness`: do not edit by hand.",
            text[1],
            "",
        ]
        (MODELS_TREE / RECORD).write_text("\n".join(header) + body, "utf-8")
        report["record"] = str(MODELS_TREE / RECORD)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report
