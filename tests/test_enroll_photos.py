"""Enrolment from real photos: the quality gates refuse clearly and store nothing; a good photo is enrolled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from firmware_py.cli.main import main
from firmware_py.config import load
from firmware_py.errors import ExitCode
from firmware_py.gallery.enrol import EnrolmentRefused, check_photo, enrol_photos
from firmware_py.gallery.store import open_from_config


@pytest.fixture
def cfg():
    """Built per test, after the autouse fixture pointed KAOCLOCK_HOME at the test's own state dir."""
    return load(None)


@pytest.fixture(scope="module")
def analyzer(models_dir):
    from firmware_py.pipeline.build import build_analyzer

    return build_analyzer(load(None), enrolment=True)


@pytest.fixture(scope="module")
def embedder(models_dir):
    from firmware_py.vision.embedding import load_embedder

    return load_embedder(load(None))


@pytest.fixture(scope="module")
def photos(tmp_path_factory, grace_hopper, astronaut) -> dict[str, Path]:
    """Real photos and real-photo derivatives: a group mosaic, a tiny face, a blurred face, an empty wall."""
    d = tmp_path_factory.mktemp("photos")
    g, a = Image.fromarray(grace_hopper), Image.fromarray(astronaut)
    g.save(d / "grace.jpg")
    a.save(d / "astronaut.png")
    # Two people side by side, faces of similar size (the astronaut's face enlarged to Grace's).
    group = Image.new("RGB", (1100, 620), (128, 128, 128))
    group.paste(g, (0, 10))
    group.paste(a.crop((100, 0, 356, 256)).resize((512, 512)), (560, 40))
    group.save(d / "group.jpg")
    g.resize((64, 75), Image.BILINEAR).save(d / "tiny.jpg")
    g.filter(ImageFilter.GaussianBlur(6)).save(d / "blurred.jpg")
    Image.fromarray((grace_hopper * 0.15).astype(np.uint8)).save(d / "dark.jpg")
    Image.new("RGB", (400, 300), (90, 120, 200)).save(d / "wall.png")
    (d / "notes.jpg").write_bytes(b"not a photo at all")
    return {p.stem: p for p in d.iterdir()}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("group", "several_faces"),
        ("tiny", "face_too_small"),
        ("blurred", "too_blurred"),
        ("dark", "too_dark"),
        ("wall", "no_face"),
        ("notes", "unreadable"),
    ],
)
def test_each_gate_refuses_with_its_reason(analyzer, embedder, photos, name, reason):
    r = check_photo(analyzer, embedder, photos[name])
    assert not r.ok and reason in r.reasons and r.descriptor is None
    assert r.message and r.message != "ok"


def test_good_photos_pass(analyzer, embedder, photos):
    for name in ("grace", "astronaut"):
        r = check_photo(analyzer, embedder, photos[name])
        assert r.ok, r.message
        assert r.descriptor.shape == (128,) and 0.5 < np.linalg.norm(r.descriptor) < 2.5


def test_one_refused_photo_stores_nothing(cfg, analyzer, embedder, photos, tmp_path):
    assert "kaoclock-home" in str(cfg.device.data_dir)  # never the user's own gallery
    with open_from_config(cfg) as store:
        with pytest.raises(EnrolmentRefused) as exc:
            enrol_photos(store, analyzer, embedder, "e1001", "Grace Hopper", ["demo-site"], [photos["grace"], photos["blurred"]])
        msg = str(exc.value)
        assert "blurred.jpg" in msg and "too blurred" in msg and "nothing was stored" in msg and "grace.jpg" in msg
        assert store.list_persons() == [] and store.version == 0
        # Two different people passed off as one are refused too.
        with pytest.raises(EnrolmentRefused, match="same person"):
            enrol_photos(store, analyzer, embedder, "e1001", "Grace Hopper", ["demo-site"], [photos["grace"], photos["astronaut"]])
        assert store.list_persons() == []
        rep = enrol_photos(store, analyzer, embedder, "e1001", "Grace Hopper", ["demo-site", "hq"], [photos["grace"]])
        assert rep.stored and store.version == 1
        (p,) = store.list_persons()
        assert p.person_id == "e1001" and p.sites == ("demo-site", "hq") and p.templates == 1 and p.embedder_versions == (embedder.version,)


def test_enroll_and_gallery_commands(photos, capsys):
    assert main(["enroll", "--person", "e7", "--name", "Grace Hopper", str(photos["grace"]), str(photos["group"])]) == ExitCode.ENROL_REFUSED
    err = capsys.readouterr().err
    assert "group.jpg" in err and "shows 2 faces" in err and "nothing was stored" in err
    assert main(["enroll", "--person", "e7", "--name", "Grace Hopper", str(photos["grace"])]) == 0
    assert "enrolled e7 (Grace Hopper)" in capsys.readouterr().out
    assert main(["gallery", "list"]) == 0
    out = capsys.readouterr().out
    assert "e7" in out and "Grace Hopper" in out and "version 1" in out
    assert main(["gallery", "remove", "e7"]) == 0
    assert main(["gallery", "remove", "e7"]) == 1
    assert "no person 'e7'" in capsys.readouterr().err
