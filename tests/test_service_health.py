"""`kaoclock health` run as a command: real config, real models loaded by LiteRT, real frames."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from firmware_py.models.manifest import load_manifest


def health(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    cmd = [sys.executable, "-m", "firmware_py", "health", "--json", *args]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return run.returncode, json.loads(run.stdout)


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_the_default_configuration_is_healthy_and_says_what_it_could_not_check(models_dir: Path) -> None:
    code, report = health()
    checks = by_name(report)
    assert code == 0 and report["ok"]
    assert checks["models"]["status"] == "ok" and "blazeface_short_range" in checks["models"]["detail"]
    assert checks["camera"]["status"] == "skip" and "built-in demo" in checks["camera"]["detail"]
    assert checks["broker_or_outbox"]["status"] == "ok" and "[mqtt] is off" in checks["broker_or_outbox"]["detail"]


def test_frames_are_read_from_a_replay_folder_and_a_video_file(tmp_path: Path, grace_hopper_path: Path, models_dir: Path) -> None:
    import av
    import numpy as np
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    shutil.copy(grace_hopper_path, folder / "a.jpg")
    shutil.copy(grace_hopper_path, folder / "b.jpg")
    (tmp_path / "a.toml").write_text(f'[camera]\nsource = "{folder}"\n')
    code, report = health("--config", str(tmp_path / "a.toml"), "--frames", "2")
    assert code == 0 and by_name(report)["camera"]["detail"].startswith("2 frame(s) 512x600")

    video = tmp_path / "walkup.mp4"
    img = np.asarray(Image.open(grace_hopper_path).convert("RGB").resize((320, 240)))
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for _ in range(5):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    (tmp_path / "v.toml").write_text(f'[camera]\nsource = "{video}"\n')
    code, report = health("--config", str(tmp_path / "v.toml"))
    assert code == 0 and by_name(report)["camera"]["detail"].startswith("3 frame(s) 320x240")


def test_a_missing_camera_source_fails_but_not_permanently(tmp_path: Path, models_dir: Path) -> None:
    (tmp_path / "c.toml").write_text(f'[camera]\nsource = "{tmp_path / "nothing-here.mp4"}"\n')
    code, report = health("--config", str(tmp_path / "c.toml"))
    cam = by_name(report)["camera"]
    assert code == 1 and cam["status"] == "fail" and "does not exist" in cam["detail"] and not cam["permanent"]


def test_a_refused_config_fails_permanently_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[camera]\nwidht = 800\n")
    code, report = health("--config", str(tmp_path / "bad.toml"))
    cfg = by_name(report)["config"]
    assert code == 1 and cfg["status"] == "fail" and cfg["permanent"] and "camera.widht" in cfg["detail"] and "camera.width" in cfg["detail"]
    assert by_name(report)["models"]["status"] == "skip"


def test_a_wrong_model_file_fails_permanently(tmp_path: Path, models_dir: Path) -> None:
    broken = tmp_path / "models"
    broken.mkdir()
    for m in load_manifest().select(["runtime"]):
        if m.location == "fetched":
            (broken / m.file).write_bytes(m.path(models_dir).read_bytes()[:-10])
    code, report = health(env={"KAOCLOCK_MODELS": str(broken)})
    models = by_name(report)["models"]
    assert code == 1 and models["permanent"] and "sha256 mismatch" in models["detail"]


def test_a_data_dir_that_cannot_be_written_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")  # fails even for root, unlike a chmod
    code, report = health(env={"KAOCLOCK_HOME": str(blocker / "kaoclock")})
    data = by_name(report)["data_dir"]
    assert code == 1 and data["status"] == "fail" and "Not a directory" in data["detail"]
