"""The HR master: staff CSV import (every bad row named, all or nothing), enrolment at the backend with the
reader's quality gates on real photos, photos and templates sealed at rest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.backend.db import Database
from firmware_py.backend.enrol import enrol_person, photo_describer
from firmware_py.backend.hr import HrError, HrMaster
from firmware_py.cli.main import main
from firmware_py.config import load
from firmware_py.gallery.enrol import EnrolmentRefused
from firmware_py.gallery.store import load_or_create_key
from firmware_py.pipeline.build import build_analyzer
from firmware_py.vision.embedding import load_embedder


def _csv(tmp: Path, text: str | bytes, name: str = "staff.csv") -> Path:
    p = tmp / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def test_staff_import_names_every_bad_row_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(tmp_path / "hr")]
    assert main(["backend", "sites", "add", "town-hall", "library", *home]) == 0
    assert capsys.readouterr().out == "town-hall: added\nlibrary: added\n"
    good = _csv(tmp_path, 'id,name,sites\ne001,Ada Lovelace,town-hall\ne002,"Hopper, Grace",town-hall;library\n')
    assert main(["backend", "people", "import", str(good), "--json", *home]) == 0
    assert json.loads(capsys.readouterr().out) == {"added": 2, "updated": 0, "unchanged": 0, "removed": 0}
    bad = _csv(
        tmp_path,
        "id,name,sites\n"
        "e003,Alan Turing,town-hall\n"
        "e003,Alan Again,town-hall\n"  # duplicate id
        "e004,,library\n"  # empty name
        "e005,Edsger,harbour\n"  # unknown site
        "e 6,Bad Id,library\n"  # bad id
        "e007,No Site,\n",
        "bad.csv",
    )
    assert main(["backend", "people", "import", str(bad), *home]) == 2
    err = capsys.readouterr().err
    assert "5 bad row(s); nothing was imported" in err
    needles = ("line 3: id e003 is a duplicate of line 2", "line 4: the name is empty", "line 5: unknown site 'harbour'", "line 6: id 'e 6'")
    for needle in (*needles, "line 7: no site"):
        assert needle in err, needle
    latin1 = _csv(tmp_path, "id,name,sites\ne008,Jos\xe9,library\n".encode("latin-1"), "latin1.csv")
    assert main(["backend", "people", "import", str(latin1), *home]) == 2
    assert "line 2 is not UTF-8" in capsys.readouterr().err
    assert main(["backend", "people", "import", str(_csv(tmp_path, "name,id\n", "h.csv")), *home]) == 2
    assert "must be id,name,sites" in capsys.readouterr().err
    assert main(["backend", "people", "list", "--json", *home]) == 0
    people = json.loads(capsys.readouterr().out)
    assert [(p["id"], p["name"], p["sites"]) for p in people] == [
        ("e001", "Ada Lovelace", ["town-hall"]),
        ("e002", "Hopper, Grace", ["library", "town-hall"]),
    ]
    # An update and a full import: e001 moves, e002 leaves, e009 joins.
    full = _csv(tmp_path, "\ufeffid,name,sites\ne001,Ada Lovelace,library\ne009,Barbara Liskov,library\n", "full.csv")
    assert main(["backend", "people", "import", str(full), "--full", "--json", *home]) == 0
    assert json.loads(capsys.readouterr().out) == {"added": 1, "updated": 1, "unchanged": 0, "removed": 1}


def test_import_on_postgres_is_all_or_nothing(pg_url: str) -> None:
    m = HrMaster(Database.open(pg_url))
    m.add_site("hq")
    m.import_people(b"id,name,sites\na1,A,hq\n")
    with pytest.raises(HrError, match="unknown site 'nowhere'"):
        m.import_people(b"id,name,sites\na1,Renamed,hq\na2,B,nowhere\n")
    assert [(p["id"], p["name"]) for p in m.people()] == [("a1", "A")]


@pytest.fixture(scope="module")
def front_end() -> tuple:
    cfg = load(None)
    return build_analyzer(cfg, enrolment=True), load_embedder(cfg)


def test_backend_enrol_gates_and_sealed_storage(tmp_path: Path, front_end: tuple, grace_hopper_path: Path, astronaut: np.ndarray) -> None:
    analyzer, embedder = front_end
    db = Database.open(tmp_path / "hr.sqlite")
    key_path = tmp_path / "templates.key"
    m = HrMaster.open(db, key_path)
    m.add_site("hq")
    m.import_people(b"id,name,sites\ngrace,Grace Hopper,hq\n")
    blank = tmp_path / "blank.png"
    Image.new("RGB", (400, 400), (90, 120, 90)).save(blank)
    two = tmp_path / "two.png"
    canvas = Image.new("RGB", (1100, 620), (128, 128, 128))  # as the reader's own enrolment test builds a group photo
    canvas.paste(Image.open(grace_hopper_path).convert("RGB"), (0, 10))
    canvas.paste(Image.fromarray(astronaut).crop((100, 0, 356, 256)).resize((512, 512)), (560, 40))
    canvas.save(two)
    astro = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(astro)
    with pytest.raises(EnrolmentRefused) as refused:
        enrol_person(m, analyzer, embedder, "grace", [grace_hopper_path, blank, two])
    reasons = {r.path.name: r.reasons for r in refused.value.report.photos}
    assert reasons["blank.png"] == ["no_face"] and reasons["two.png"] == ["several_faces"] and reasons["grace_hopper.jpg"] == []
    with pytest.raises(EnrolmentRefused) as refused:
        enrol_person(m, analyzer, embedder, "grace", [grace_hopper_path, astro])  # two different people
    assert any("not_same_person" in r.reasons for r in refused.value.report.photos)
    assert m.people()[0]["photos"] == 0  # nothing stored by a refused enrolment
    with pytest.raises(HrError, match="import them first"):
        enrol_person(m, analyzer, embedder, "nobody", [grace_hopper_path])

    report = enrol_person(m, analyzer, embedder, "grace", [grace_hopper_path])
    assert report.stored
    enrol_person(m, analyzer, embedder, "grace", [grace_hopper_path])  # the same photo again: replaced, not doubled
    assert m.people()[0]["photos"] == 1 and m.people()[0]["templates"] == {embedder.version: 1}
    # Sealed at rest: neither the photo nor the descriptor is in the database file in the clear.
    raw_db = (tmp_path / "hr.sqlite").read_bytes() + (tmp_path / "hr.sqlite-wal").read_bytes()
    photo = grace_hopper_path.read_bytes()
    desc = m.templates(["grace"], embedder.version)["grace"][0].descriptor
    assert photo[1000:1064] not in raw_db and np.asarray(desc, "<f4").tobytes()[:32] not in raw_db
    assert m.photos("grace")[0][1] == photo
    assert np.allclose(desc, photo_describer(analyzer, embedder)(photo))  # re-extraction gives what enrolment gave
    other = HrMaster(db, load_or_create_key(tmp_path / "other.key", True))
    with pytest.raises(HrError, match="integrity check"):
        other.templates(["grace"], None)
