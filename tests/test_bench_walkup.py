"""`kaoclock bench walkup` replays clips in real time through the daemon's capture and loop and times the door."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.cli.main import main
from firmware_py.errors import UsageError


def write_clip(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    import av

    with av.open(str(path), "w") as out_file:
        stream = out_file.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.bit_rate = 8_000_000  # clean frames: the default rate blurs the first frames after the cut to the face
        for img in frames:
            out_file.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out_file.mux(stream.encode())
    return path


@pytest.fixture
def clips(tmp_path: Path, grace_hopper: np.ndarray, astronaut: np.ndarray) -> list[Path]:
    # Two people; each clip starts with frames without a face, then the face (the timed part),
    # then more frames of the face that enrolment reads.
    blank = np.full((240, 320, 3), 90, np.uint8)
    out = []
    for name, face in (("grace", grace_hopper), ("eileen", astronaut)):
        img = np.asarray(Image.fromarray(face).resize((320, 240)))
        out.append(write_clip(tmp_path / f"{name}.mp4", [blank] * 5 + [img] * 35, fps=25))
    return out


def test_walkup_times_the_door_from_the_first_usable_face(capsys: pytest.CaptureFixture[str], clips: list[Path], tmp_path: Path) -> None:
    # Still photos carry no live motion, so liveness is off here; the default policy is what the bench reports otherwise.
    config = tmp_path / "kaoclock.toml"
    config.write_text('[liveness]\npolicy = "off"\n')
    argv = ["bench", "walkup", "--source", *map(str, clips), "--timed-s", "1.0", "--config", str(config), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["walkups"] == 2 and out["accepted"] == 2 and out["wrong_person_accepted"] == 0 and out["gallery_persons"] == 2
    assert out["liveness"] == "off" and out["rejects"] == {}
    for run in out["runs"]:
        assert run["accepted_person"] == run["person"]
        assert run["first_usable_frame"] == 5  # the five blank frames before the face do not count
        # Three agreeing frames at 25 fps take at least two frame intervals after the first usable one.
        assert 0.08 - 0.02 <= run["time_to_door_s"] < 1.0
        # Embedding stops once the walk-up is decided (k = 3 agreeing frames, give or take the
        # codec's first frame of the face), though the face stays in view for 20 more frames.
        assert 3 <= run["embedded"] <= 5 and run["processed"] >= run["embedded"] + 10
        assert run["captured"] == run["frames"] == 25 and run["processed"] + run["dropped"] == run["captured"]
    t = out["time_to_door_s"]
    assert t["p50"] <= t["p95"] <= t["max"]


def test_slowdown_stretches_frames_and_the_buffer_drops_what_the_pipeline_cannot_take(
    capsys: pytest.CaptureFixture[str], clips: list[Path], tmp_path: Path
) -> None:
    config = tmp_path / "kaoclock.toml"
    config.write_text('[liveness]\npolicy = "off"\n')
    argv = ["bench", "walkup", "--source", str(clips[0]), "--timed-s", "1.0", "--slowdown", "30", "--config", str(config), "--json"]
    assert main(argv) == 0
    run = json.loads(capsys.readouterr().out)["runs"][0]
    # Each frame now costs 30x its measured time (well over the 40 ms frame interval), so the
    # newest-frame buffer drops frames instead of queueing them, and the door opens later.
    assert run["dropped"] > 0 and run["processed"] + run["dropped"] == run["captured"] == 25
    assert run["accepted_person"] == "grace" or run["rejects"]


def test_walkup_refuses_a_clip_too_short_to_enrol_from(capsys: pytest.CaptureFixture[str], clips: list[Path]) -> None:
    assert main(["bench", "walkup", "--source", str(clips[0]), "--timed-s", "5", "--json"]) == UsageError.exit_code
    err = capsys.readouterr().err
    assert "grace.mp4" in err and "nothing is left" in err and "--timed-s" in err
