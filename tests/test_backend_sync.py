"""Staff enrolled once at the backend reach exactly the readers of their sites: a differential sync through the
signed gallery.* commands to the readers' real MQTT sides (DeviceLink, encrypted gallery) over a real mosquitto,
with PostgreSQL as the HR master; an offline reader catches up when it comes online; a live enrolment at one
reader is taken back and distributed to the person's other sites; templates survive an embedder upgrade."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.backend.db import Database
from firmware_py.backend.enrol import enrol_person, photo_describer
from firmware_py.backend.hr import HrMaster
from firmware_py.backend.registry import DbDeviceRegistry
from firmware_py.backend.sync import Brokers, GallerySyncer
from firmware_py.bench.gates import Gate
from firmware_py.gallery.store import Person, Template, open_from_config
from firmware_py.keys.store import init_private_key, load_private_key

EMB = "emb-v1"
rng = np.random.default_rng(3)


def _desc() -> np.ndarray:
    return rng.normal(0, 0.1, 128).astype(np.float32)


@pytest.fixture
def city(tmp_path: Path, pg_url: str, mosquitto: Any) -> Any:
    home = tmp_path / "backend"
    init_private_key(home / "backend_ed25519.pem")
    key = load_private_key(home / "backend_ed25519.pem")
    db = Database.open(pg_url)
    master = HrMaster.open(db, home / "templates.key")
    gates: dict[str, Gate] = {}
    for site, device in (("town-hall", "gate-1"), ("town-hall", "gate-2"), ("library", "gate-3")):
        g = Gate(tmp_path, mosquitto.url, site, device, key, EMB)
        DbDeviceRegistry(db).add(site, device, g.public_jwk)
        gates[device] = g
    master.import_people(b"id,name,sites\np1,Ada,town-hall\np2,Grace,town-hall;library\np3,Barbara,library\n")
    for pid in ("p1", "p2", "p3"):
        master.store_enrolment(pid, [f"photo of {pid}".encode()], [_desc()], EMB)

    class City:
        pass

    c = City()
    c.home, c.db, c.master, c.key, c.gates, c.url, c.pg_url = home, db, master, key, gates, mosquitto.url, pg_url
    c.syncer = GallerySyncer(db, master, key, Brokers([mosquitto.url]), wait_s=2.0)
    yield c
    for g in gates.values():
        g.stop()


def _holds(g: Gate) -> dict[str, tuple[str, tuple[str, ...], int]]:
    return {pid: (p.name, tuple(sorted(p.sites)), len(p.templates)) for pid, p in g.people().items()}


def test_each_site_gets_its_people_and_only_the_difference(city: Any) -> None:
    g1, g3 = city.gates["gate-1"].start(), city.gates["gate-3"].start()  # gate-2 is offline
    results = {r.device: r for r in city.syncer.sync()}
    assert {d: r.status for d, r in results.items()} == {"gate-1": "synced", "gate-2": "offline", "gate-3": "synced"}
    assert _holds(g1) == {"p1": ("Ada", ("town-hall",), 1), "p2": ("Grace", ("library", "town-hall"), 1)}
    assert _holds(g3) == {"p2": ("Grace", ("library", "town-hall"), 1), "p3": ("Barbara", ("library",), 1)}
    sent = city.master.templates(["p2"], EMB)["p2"][0].descriptor
    assert np.array_equal(g3.people()["p2"].templates[0].descriptor, sent)

    again = {r.device: r for r in city.syncer.sync(["town-hall", "library"])}
    assert (again["gate-1"].updated, again["gate-1"].removed, again["gate-1"].unchanged) == (0, 0, 2)  # nothing to send

    city.master.import_people(b"id,name,sites\np1,Ada,library\np2,Grace,town-hall;library\np3,Barbara,library\n")  # Ada moves
    t0 = time.monotonic()
    changed = {r.device: r for r in city.syncer.sync()}
    print(f"one move reached its readers in {time.monotonic() - t0:.2f} s")
    assert (changed["gate-1"].removed, changed["gate-1"].updated) == (1, 0) and "p1" not in g1.people()
    assert changed["gate-3"].updated == 1 and _holds(g3)["p1"] == ("Ada", ("library",), 1)
    city.master.remove_person("p3")  # removing a person purges them from the readers
    city.syncer.sync(["library"])
    assert set(g3.people()) == {"p1", "p2"}
    held = city.db.query("SELECT device, person_id FROM reader_state ORDER BY device, person_id")
    assert held == [("gate-1", "p2"), ("gate-3", "p1"), ("gate-3", "p2")]  # gate-2 never answered: nothing recorded for it
    logged = city.db.query("SELECT cmd, status FROM command_log WHERE device = 'gate-3' AND cmd = 'gallery.remove'")
    assert logged == [("gallery.remove", "done")]


def test_an_empty_reader_gets_one_gallery_snapshot_an_older_one_person_by_person(city: Any, tmp_path: Path) -> None:
    """A reader that holds nobody gets its site's people as one chunked, signed, hash-checked snapshot; later changes go person by person."""
    people = "".join(f"s{i:02d},Staff {i},town-hall\n" for i in range(30))
    city.master.import_people(("id,name,sites\np1,Ada,town-hall\np2,Grace,town-hall;library\np3,Barbara,library\n" + people).encode())
    for i in range(30):
        city.master.store_enrolment(f"s{i:02d}", [f"photo {i}".encode()], [_desc()], EMB)
    old = Gate(tmp_path, city.url, "town-hall", "gate-old", city.key, EMB, transfers=False)  # a reader without the transfer commands
    DbDeviceRegistry(city.db).add("town-hall", "gate-old", old.public_jwk)
    g1 = city.gates["gate-1"].start()
    old.start()
    try:
        syncer = GallerySyncer(city.db, city.master, city.key, Brokers([city.url]), wait_s=5.0, snapshot_min=20)
        results = {r.device: r for r in syncer.sync(devices=[("town-hall", "gate-1"), ("town-hall", "gate-old")])}
        assert {d: (r.status, r.snapshot, r.updated) for d, r in results.items()} == {
            "gate-1": ("synced", True, 32),
            "gate-old": ("synced", False, 32),  # refused as an unknown command: one gallery.update per person instead
        }, {d: r.problems for d, r in results.items()}
        want = {p.person_id: p for p in city.master.site_people("town-hall", EMB)}
        for g in (g1, old):
            held = g.people()
            assert set(held) == set(want) and len(held) == 32
            assert all(np.array_equal(held[pid].templates[0].descriptor, want[pid].templates[0].descriptor) for pid in want)
            assert held["p2"].sites == ("library", "town-hall") and held["s07"].name == "Staff 7"
        cmds = dict(city.db.query("SELECT cmd, count(*) FROM command_log WHERE device = 'gate-1' GROUP BY cmd"))
        assert "gallery.update" not in cmds and cmds["transfer.commit"] == 1 and cmds["transfer.chunk"] >= 1
        assert dict(city.db.query("SELECT cmd, count(*) FROM command_log WHERE device = 'gate-old' GROUP BY cmd"))["gallery.update"] == 32
        assert len(city.db.query("SELECT person_id FROM reader_state WHERE device = 'gate-1'")) == 32

        city.master.remove_person("s03")  # a reader that holds people gets the difference, not a snapshot
        again = {r.device: r for r in syncer.sync(devices=[("town-hall", "gate-1")])}
        assert (again["gate-1"].snapshot, again["gate-1"].removed, again["gate-1"].updated) == (False, 1, 0)
        assert "s03" not in g1.people() and len(g1.people()) == 31
    finally:
        old.stop()


def test_offline_reader_catches_up_and_live_enrolment_is_distributed(city: Any) -> None:
    g1 = city.gates["gate-1"].start()
    g3 = city.gates["gate-3"].start()
    watch = subprocess.Popen(
        [sys.executable, "-m", "firmware_py", "backend", "sync", "--watch", "--home", str(city.home), "--db", city.pg_url,
         "--broker", city.url, "--wait", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and set(g1.people()) != {"p1", "p2"}:
            time.sleep(0.2)
        assert set(g1.people()) == {"p1", "p2"}
        g2 = city.gates["gate-2"].start()  # comes online: its retained status tells the watcher
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and set(g2.people()) != {"p1", "p2"}:
            time.sleep(0.2)
        assert _holds(g2) == _holds(g1)

        # A live enrolment at gate-3 (library): Grace gets a second template there, confirmed by the technician.
        live = _desc()
        with open_from_config(g3.cfg) as store:
            store.upsert_person(Person("p2", "Grace", ("library", "town-hall"), (Template(live, EMB, "live"),)))
        g3.bus.emit_new("gallery.enrol_live_done", "info", person_id="p2", templates=1, confirmed_by="console")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(g1.people()["p2"].templates) < 2:
            time.sleep(0.2)
        for g in (g1, g2, g3):  # the town-hall readers got it too, and gate-3's copy is now the backend's
            descs = [t.descriptor for t in g.people()["p2"].templates]
            assert len(descs) == 2 and any(np.array_equal(d, live) for d in descs), g.device
        assert any(s.startswith("reader:library/gate-3") for (s,) in city.db.query("SELECT source FROM templates WHERE person_id='p2'"))

        # HR moves Ada to the library on another host: the watcher sends the difference by itself.
        t0 = time.monotonic()
        city.master.import_people(b"id,name,sites\np1,Ada,library\np2,Grace,town-hall;library\np3,Barbara,library\n")
        while time.monotonic() - t0 < 30 and ("p1" not in g3.people() or "p1" in g1.people()):
            time.sleep(0.1)
        assert "p1" in g3.people() and "p1" not in g1.people() and "p1" not in g2.people()
        print(f"an HR change reached the readers in {time.monotonic() - t0:.2f} s")
    finally:
        watch.terminate()
        out, err = watch.communicate(timeout=15)
    assert "took live enrolment(s) of p2" in out, out + err


@pytest.fixture(scope="module")
def embedders() -> dict[str, Any]:
    from firmware_py.bench.dlib_peer import DlibChipEmbedder
    from firmware_py.config import load
    from firmware_py.pipeline.build import build_analyzer
    from firmware_py.vision.embedding import load_embedder

    cfg = load(None)
    return {"analyzer": build_analyzer(cfg, enrolment=True), "old": DlibChipEmbedder(cfg.models.dir), "new": load_embedder(cfg)}


def test_templates_survive_an_embedder_upgrade(
    tmp_path: Path, pg_url: str, mosquitto: Any, embedders: dict[str, Any], grace_hopper_path: Path
) -> None:
    """Enrolled under the old embedder (dlib's float ResNet); a reader on the new one (the int8 build) gets templates
    re-extracted from the kept photo, a reader still on the old one keeps the old, and a reader on an embedder the
    backend does not have is told so with nothing removed."""
    analyzer, old, new = embedders["analyzer"], embedders["old"], embedders["new"]
    assert old.version != new.version
    key = Ed25519PrivateKey.generate()
    db = Database.open(pg_url)
    master = HrMaster.open(db, tmp_path / "templates.key")
    gates = {
        "old": Gate(tmp_path, mosquitto.url, "hq", "gate-old", key, old.version).start(),
        "new": Gate(tmp_path, mosquitto.url, "hq", "gate-new", key, new.version).start(),
        "odd": Gate(tmp_path, mosquitto.url, "annex", "gate-odd", key, "some-future-embedder").start(),
    }
    try:
        for g in gates.values():
            DbDeviceRegistry(db).add(g.site, g.device, g.public_jwk)
        master.import_people(b"id,name,sites\ngrace,Grace Hopper,hq;annex\n")
        enrol_person(master, analyzer, old, "grace", [grace_hopper_path])  # the backend still ran the old embedder
        with open_from_config(gates["odd"].cfg) as store:  # the odd reader holds someone from an earlier sync
            store.upsert_person(Person("grace", "Grace Hopper", ("annex", "hq"), (Template(_desc(), "some-future-embedder", "sync"),)))
        syncer = GallerySyncer(db, master, key, Brokers([mosquitto.url]), embedders={new.version: photo_describer(analyzer, new)}, wait_s=5)
        results = {r.device: r for r in syncer.sync()}
        assert results["gate-old"].status == "synced" and results["gate-new"].status == "synced"
        t_old = gates["old"].people()["grace"].templates
        t_new = gates["new"].people()["grace"].templates
        assert [t.embedder_version for t in t_old] == [old.version] and [t.embedder_version for t in t_new] == [new.version]
        direct = photo_describer(analyzer, new)(grace_hopper_path.read_bytes())
        assert np.allclose(t_new[0].descriptor, direct)  # re-extracted from the kept photo by the new embedder
        assert not np.array_equal(t_old[0].descriptor, t_new[0].descriptor)  # two embedders, two different templates
        odd = results["gate-odd"]
        assert odd.missing == ["grace"] and "some-future-embedder" in odd.problems[0] and odd.removed == 0
        assert "grace" in gates["odd"].people()  # left alone, not purged
        assert master.people()[0]["templates"] == {old.version: 1, new.version: 1}
    finally:
        for g in gates.values():
            g.stop()
