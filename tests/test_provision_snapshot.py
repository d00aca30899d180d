"""`kaoclock snapshot --annotate`: real photos through the reader's own front-end and matcher, drawn with Pillow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.cli.main import main


@pytest.fixture
def reader(tmp_path: Path, grace_hopper_path: Path) -> Path:
    cfg = tmp_path / "kaoclock.toml"
    argv = ["provision", "--device-id", "gate-01", "--site", "hq", "--broker", "mqtt://127.0.0.1:1883", "--config-out", str(cfg)]
    assert main([*argv, "--data-dir", str(tmp_path / "data")]) == 0
    assert main(["enroll", "--config", str(cfg), "--person", "e7", "--name", "Grace Hopper", str(grace_hopper_path)]) == 0
    return cfg


def _snap(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    capsys.readouterr()
    assert main(["snapshot", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_known_face_drawn_with_name_distance_and_guides(reader: Path, grace_hopper_path: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "gh.png"
    rep = _snap(capsys, "--config", str(reader), "--source", str(grace_hopper_path), "--annotate", str(out))
    (face,) = rep["faces"]
    assert face["verdict"] == "match" and face["person_id"] == "e7" and face["name"] == "Grace Hopper"
    assert face["distance"] < face["threshold"] and face["landmarks"] == 468
    assert face["face_px"] > rep["min_face_px_enrol"] >= rep["min_face_px_gate"] > 0
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (600, 512, 3)
    original = np.asarray(Image.open(grace_hopper_path).convert("RGB")).astype(int)
    # The face box is drawn in green along its top edge; the gate guide in cyan at the centre.
    x0, y0, x1, _ = (round(v) for v in face["box"])
    edge = img[y0 + 1, (x0 + x1) // 2 : x1 - 5].astype(int)  # right half: the label sits above the left
    assert ((edge[:, 1] > 180) & (edge[:, 0] < 90) & (edge[:, 2] < 130)).mean() > 0.5
    half = rep["min_face_px_gate"] / 2
    cy, cx = 300, 256
    guide = img[int(cy - half), int(cx - half) + 3 : int(cx + half) - 3].astype(int)
    assert ((guide[:, 2] > 200) & (guide[:, 1] > 160) & (guide[:, 0] < 90)).mean() > 0.5
    assert np.abs(img.astype(int) - original).sum(axis=2).astype(bool).mean() < 0.25  # annotated, not repainted


def test_stranger_unknown_and_liveness_score_shown(reader: Path, astronaut: np.ndarray, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "0001.png")
    text = reader.read_text() + '\n[liveness]\npolicy = "passive"\n'
    live_cfg = tmp_path / "live.toml"
    live_cfg.write_text(text)
    # A folder goes through the replay camera, as a clip from the site would.
    rep = _snap(capsys, "--config", str(live_cfg), "--source", str(folder), "--annotate", str(tmp_path / "a.png"))
    (face,) = rep["faces"]
    assert face["verdict"] == "unknown" and face["distance"] > face["threshold"]
    assert face["liveness_policy"] == "passive" and isinstance(face["liveness"], float) and face["liveness_threshold"] is not None
    capsys.readouterr()
    assert main(["snapshot", "--config", str(live_cfg), "--source", str(folder), "--annotate", str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert "unknown [unknown, nearest e7]" in out and "live " in out and "gate needs" in out


def test_bad_source_and_output_refused(reader: Path, tmp_path: Path, capsys) -> None:
    assert main(["snapshot", "--config", str(reader), "--source", str(tmp_path / "nope.mp4"), "--annotate", str(tmp_path / "x.png")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["snapshot", "--config", str(reader), "--source", str(bad), "--annotate", str(tmp_path / "x.png")]) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert main(["snapshot", "--config", str(reader), "--source", str(bad), "--annotate", str(tmp_path / "x.gif")]) == 2
    assert not (tmp_path / "x.png").exists()
