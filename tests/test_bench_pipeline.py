"""`kaoclock bench pipeline` times the daemon's own pipeline on a real (tiny) clip and reports consistent figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.cli.main import main


@pytest.fixture
def clip(tmp_path: Path, grace_hopper: np.ndarray) -> Path:
    import av

    video = tmp_path / "walkup.mp4"
    with av.open(str(video), "w") as out_file:
        stream = out_file.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        img = np.asarray(Image.fromarray(grace_hopper).resize((320, 240)))
        for _ in range(10):
            out_file.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out_file.mux(stream.encode())
    return video


def test_bench_pipeline_measures_the_daemon_pipeline(capsys: pytest.CaptureFixture[str], clip: Path, models_dir: Path, tmp_path: Path) -> None:
    # The pipeline is built from the config like the daemon's: here a still clip, so liveness off
    # (the default policy is not: the figure below shows the config was used).
    config = tmp_path / "kaoclock.toml"
    config.write_text('[liveness]\npolicy = "off"\n')
    assert main(["bench", "pipeline", "--source", str(clip), "--gallery", "50", "--config", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["frames"] == 10 and out["frames_with_face"] == 10 and out["gallery"] == 50
    assert {"detect", "track", "landmarks", "embed", "match", "decide"} <= set(out["stages_ms"])
    # Overhead is the frame time over the time inside model invokes, both medians of the same run.
    assert out["model_invoke_ms_p50"] > 0 and out["frame_ms_p50"] >= out["model_invoke_ms_p50"]
    assert out["overhead_ratio"] == pytest.approx(out["frame_ms_p50"] / out["model_invoke_ms_p50"], abs=2e-3)
    # The learned liveness nets are model invokes too (none here: policy off).
    assert set(out["invoke_ms_p50"]) == {"detector", "facemesh", "embedder", "liveness"} and out["invoke_ms_p50"]["liveness"] == 0
    assert out["invoke_ms_p50"]["detector"] > 0 and out["invoke_ms_p50"]["facemesh"] > 0
    assert 0 < out["overhead_ms_p50"] < out["frame_ms_p50"]
    # The clip's person, enrolled from its first frame, is recognised once (one walk-up, one decision).
    assert [d["reason"] for d in out["decisions"]] == ["match"] and out["decisions"][0]["person"] == "clip-person"
    assert out["frames_embedded"] >= 3 and out["liveness"] == "off"  # from --config, not the passive default


def test_bench_pipeline_counts_the_liveness_nets_as_model_invokes(
    capsys: pytest.CaptureFixture[str], clip: Path, models_dir: Path, tmp_path: Path
) -> None:
    # Passive without the early pass: the nets run on every frame of the 0.8 s window (10 fps: 9 of the 10), so
    # the median frame has them.  (With the early pass this photo passes on its 2nd frame; the median frame would
    # then have no liveness invoke at all.)
    config = tmp_path / "kaoclock.toml"
    config.write_text("[liveness]\nearly_min_frames = 0\n")
    assert main(["bench", "pipeline", "--source", str(clip), "--gallery", "50", "--config", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["liveness"] == "passive" and out["invoke_ms_p50"]["liveness"] > 0
    assert out["overhead_ratio"] == pytest.approx(out["frame_ms_p50"] / out["model_invoke_ms_p50"], abs=2e-3)
