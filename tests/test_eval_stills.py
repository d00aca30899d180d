"""Still-image evaluations describe the labelled (centred) face, not a larger bystander at the edge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.config import load
from firmware_py.eval.stills import CentreFirst, describer_from_config


def face_crop(image: np.ndarray, describer) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The image cut to its one face with a margin of half the face's width."""
    (det,) = describer.analyzer.detector.detect(image)
    x0, y0, x1, y1 = det.box
    m = (x1 - x0) / 2
    h, w = image.shape[:2]
    return image[max(0, int(y0 - m)) : min(h, int(y1 + m)), max(0, int(x0 - m)) : min(w, int(x1 + m))]


@pytest.fixture(scope="module")
def describers(models_dir: Path):  # type: ignore[no-untyped-def]
    cfg = load(None)
    return {face: describer_from_config(cfg, face=face) for face in ("centre", "largest")}


def test_centre_pick_describes_the_labelled_face(
    describers, grace_hopper: np.ndarray, astronaut: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    centre, largest = describers["centre"], describers["largest"]
    assert isinstance(centre.analyzer.detector, CentreFirst) and not isinstance(largest.analyzer.detector, CentreFirst)
    assert centre.key != largest.key  # cached descriptors of one choice never serve the other
    labelled, bystander = face_crop(astronaut, largest), face_crop(grace_hopper, largest)
    # An LFW-like still: the labelled person in the middle, a bystander cut by the left edge and larger.
    canvas = Image.new("RGB", (560, 420), (128, 128, 128))
    small = Image.fromarray(labelled).resize((170, int(170 * labelled.shape[0] / labelled.shape[1])))
    big = Image.fromarray(bystander).resize((240, int(240 * bystander.shape[0] / bystander.shape[1])))
    canvas.paste(small, (280 - small.width // 2, 210 - small.height // 2))
    canvas.paste(big, (-60, 210 - big.height // 2))
    paths = []
    for name, img in (("still", canvas), ("labelled", Image.fromarray(labelled)), ("bystander", Image.fromarray(bystander))):
        paths.append(tmp_path / f"{name}.png")
        img.save(paths[-1])
    dets = largest.analyzer.detector.detect(np.asarray(canvas))
    # The detector itself lists the larger, off-centre face first.
    assert len(dets) == 2 and dets[0].width > dets[1].width and dets[0].box[0] < 60 < dets[1].box[0]

    d_c, d_l = centre.describe_paths(paths, progress=False), largest.describe_paths(paths, progress=False)
    assert d_c.detection_failures == d_l.detection_failures == 0
    to = {n: d_c.descriptors[i] for i, n in enumerate(("still", "labelled", "bystander"))}
    dist = lambda a, b: float(np.linalg.norm(a - b))  # noqa: E731
    assert dist(to["still"], to["labelled"]) < 0.4 < dist(to["still"], to["bystander"])
    by_largest = d_l.descriptors[0]
    assert dist(by_largest, d_l.descriptors[2]) < 0.4 < dist(by_largest, d_l.descriptors[1])


def test_face_pick_is_checked(models_dir: Path) -> None:
    with pytest.raises(ValueError, match="centre"):
        describer_from_config(load(None), face="middle")  # type: ignore[arg-type]
