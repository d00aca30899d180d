"""The vision package's measurement commands print JSON with the promised fields (on tiny real inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.cli.main import main


@pytest.fixture
def photos(tmp_path: Path, grace_hopper: np.ndarray, astronaut: np.ndarray) -> Path:
    d = tmp_path / "faces" / "someone"
    d.mkdir(parents=True)
    Image.fromarray(grace_hopper).save(d / "a.jpg")
    Image.fromarray(astronaut).save(d / "b.png")
    return d.parent


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_vision_reports_stages(capsys: pytest.CaptureFixture[str], tmp_path: Path, grace_hopper: np.ndarray, models_dir: Path) -> None:
    import av

    video = tmp_path / "v.mp4"
    with av.open(str(video), "w") as out_file:
        stream = out_file.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        img = np.asarray(Image.fromarray(grace_hopper).resize((320, 240)))
        for _ in range(8):
            out_file.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out_file.mux(stream.encode())
    out = run(capsys, "bench", "vision", "--source", str(video), "--json")
    assert out["frames"] == 8 and out["frames_with_face"] == 8 and out["size"] == [640, 480]
    assert set(out["stages_ms"]) == {"detect", "track", "landmarks", "align", "quality"}
    assert out["invoke_ms"]["detector"]["p50"] > 0 and out["invoke_ms"]["facemesh"]["p50"] > 0
    assert out["overhead_ratio"] >= 1 and out["model_invoke_ms_p50"] > 0


def test_eval_detect_counts_faces(capsys: pytest.CaptureFixture[str], photos: Path, models_dir: Path) -> None:
    out = run(capsys, "eval", "detect", "--root", str(photos), "--json")
    (s,) = out["image_sets"]
    assert s["images"] == 2 and s["with_face"] == 2 and s["rate"] == 1.0


def test_eval_align_compares_with_dlib(capsys: pytest.CaptureFixture[str], photos: Path, models_dir: Path) -> None:
    pytest.importorskip("dlib", reason="dlib-bin is in the dev extra")
    out = run(capsys, "eval", "align", "--root", str(photos), "--fit", "--json")
    assert out["n"] == 2 and out["detection_failures"]["ours"] == 0
    assert out["distance"]["facemesh"]["max"] < 0.2
    assert set(out["distance"]) == {"facemesh", "detector", "facemesh_dlib_template"}
    assert len(out["fitted_templates"]["facemesh"]) == 5


def test_bad_inputs_are_clear(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["eval", "detect", "--root", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", "vision", "--source", str(tmp_path / "nope.mp4"), "--size", "640"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
