"""The encrypted SQLite gallery: encryption at rest, keys, versions, hash, scope, purge, atomic sync."""

from __future__ import annotations

import os
import sqlite3
import stat

import numpy as np
import pytest

from firmware_py.gallery.store import GalleryError, GalleryStore, Person, Template, content_hash

V1 = "embedder-test-v1"


def _desc(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.09, 128)).astype(np.float32)


def _person(pid: str, seed: int, sites=("site-a",), n: int = 2, version: str = V1) -> Person:
    return Person(pid, f"Name {pid}", tuple(sites), tuple(Template(_desc(seed * 10 + i), version, f"photo{i}.jpg") for i in range(n)))


@pytest.fixture
def paths(tmp_path):
    return tmp_path / "gallery.sqlite", tmp_path / "keys" / "gallery.key"


def test_templates_are_encrypted_at_rest_and_key_is_private(paths):
    db, key = paths
    p = _person("e1001", 1)
    with GalleryStore.open(db, key) as store:
        store.upsert_person(p)
    raw = db.read_bytes()
    for t in p.templates:
        blob = t.descriptor.astype("<f4").tobytes()
        assert blob not in raw
        assert blob[:16] not in raw  # not even a fragment of a descriptor
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert key.read_bytes() not in raw
    # and the store decrypts them back exactly
    with GalleryStore.open(db, key) as store:
        got = store.get_person("e1001")
    assert got is not None and len(got.templates) == 2
    np.testing.assert_array_equal(got.templates[0].descriptor, p.templates[0].descriptor)


def test_wrong_key_is_refused_clearly_and_nothing_is_wiped(paths, tmp_path):
    db, key = paths
    with GalleryStore.open(db, key) as store:
        store.upsert_person(_person("e1001", 1))
    before = db.read_bytes()
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o600)
    with pytest.raises(GalleryError, match="wrong key"):
        GalleryStore.open(db, other)
    key.unlink()
    with pytest.raises(GalleryError, match="missing"):
        GalleryStore.open(db, key)
    assert db.read_bytes() == before


def test_corrupt_database_is_reported_and_left_alone(paths):
    db, key = paths
    with GalleryStore.open(db, key) as store:
        store.upsert_person(_person("e1001", 1))
    garbage = b"this is not sqlite" * 100
    db.write_bytes(garbage)
    with pytest.raises(GalleryError, match=r"unreadable.*left untouched"):
        GalleryStore.open(db, key)
    assert db.read_bytes() == garbage


def test_group_readable_key_is_refused(paths):
    db, key = paths
    GalleryStore.open(db, key).close()
    key.chmod(0o644)
    with pytest.raises(GalleryError, match="chmod 600"):
        GalleryStore.open(db, key)


def test_remove_purges_templates_and_name_from_the_file(paths):
    db, key = paths
    with GalleryStore.open(db, key) as store:
        store.upsert_person(_person("e1001", 1))
        victim = Person("e2002", "Zebulon Quartermaine", ("site-a",), (Template(_desc(77), V1, "p.jpg"),))
        store.upsert_person(victim)
        sealed = store._db.execute("SELECT sealed FROM templates WHERE person_id = 'e2002'").fetchone()[0]
        assert b"Zebulon Quartermaine" in db.read_bytes()
        assert store.remove_person("e2002") is True
        assert store.remove_person("e2002") is False
        assert store.get_person("e2002") is None
        assert store._db.execute("SELECT COUNT(*) FROM templates WHERE person_id = 'e2002'").fetchone()[0] == 0
    raw = db.read_bytes()
    assert b"Zebulon Quartermaine" not in raw
    assert sealed not in raw
    assert not any(db.parent.glob("*-wal")) and not any(db.parent.glob("*-journal"))


def test_version_and_hash_change_on_every_change_and_hash_is_deterministic(paths, tmp_path):
    db, key = paths
    a, b = _person("a1", 1), _person("b2", 2, sites=("site-a", "site-b"))
    with GalleryStore.open(db, key) as store:
        seen = {(store.version, store.content_hash)}
        store.upsert_person(a)
        seen.add((store.version, store.content_hash))
        store.upsert_person(b)
        seen.add((store.version, store.content_hash))
        store.upsert_person(Person("a1", "Renamed", ("site-a",)))
        seen.add((store.version, store.content_hash))
        assert len(seen) == 4 and store.version == 3
        h_store = store.content_hash
        snap = store.export_snapshot()
    # Same content in another order, in another file under another key: same hash.
    with GalleryStore.open(tmp_path / "g2.sqlite", tmp_path / "k2") as other:
        other.upsert_person(b)
        other.upsert_person(Person("a1", "Renamed", ("site-a",), a.templates))
        assert other.content_hash == h_store == content_hash(snap.persons)


def test_scope_by_site_and_embedder_version(paths):
    db, key = paths
    with GalleryStore.open(db, key) as store:
        store.upsert_person(_person("a1", 1, sites=("site-a",)))
        store.upsert_person(_person("b2", 2, sites=("site-b",)))
        store.upsert_person(_person("c3", 3, sites=("site-a", "site-b")))
        store.upsert_person(_person("d4", 4, sites=("site-a",), version="old-embedder"))
        m = store.load_matrix("site-a", V1)
        assert sorted(set(m.person_ids.tolist())) == ["a1", "c3"]
        assert m.matrix.shape == (4, 128) and m.mismatched == 2
        assert store.load_matrix("site-b", V1).persons == 2
        assert store.template_versions() == {V1: 6, "old-embedder": 2}


def test_replace_all_is_atomic_and_checks_the_hash(paths):
    db, key = paths
    with GalleryStore.open(db, key) as store:
        store.upsert_person(_person("a1", 1))
        before = (store.version, store.content_hash)
        new = [_person("x9", 9), _person("y8", 8)]
        with pytest.raises(GalleryError, match="nothing was changed"):
            store.replace_all(new, expected_hash="0" * 64)
        bad = [*new, Person("bad id!", "X", ("site-a",))]
        with pytest.raises(GalleryError, match="not allowed"):
            store.replace_all(bad)
        assert (store.version, store.content_hash) == before
        store.replace_all(new, expected_hash=content_hash(new))
        assert [p.person_id for p in store.list_persons()] == ["x9", "y8"]
        assert store.content_hash == content_hash(new)


def test_a_failing_transaction_leaves_nothing_half_applied(paths, monkeypatch):
    db, key = paths
    with GalleryStore.open(db, key) as store:
        store.upsert_person(_person("a1", 1))
        before = (store.version, store.content_hash)
        # The disk fills up (or power goes) while the second template is written.
        real_seal, calls = store._seal, []

        def failing_seal(pid, t):
            calls.append(pid)
            if len(calls) == 2:
                raise sqlite3.OperationalError("database or disk is full")
            return real_seal(pid, t)

        monkeypatch.setattr(store, "_seal", failing_seal)
        with pytest.raises(sqlite3.OperationalError):
            store.replace_all([_person("b2", 2), _person("c3", 3)])
        monkeypatch.undo()
        assert (store.version, store.content_hash) == before
        assert [p.person_id for p in store.list_persons()] == ["a1"]
        assert len(store.get_person("a1").templates) == 2


def test_tampered_template_is_detected(paths):
    db, key = paths
    with GalleryStore.open(db, key) as store:
        store.upsert_person(_person("a1", 1))
        store.upsert_person(_person("b2", 2))
    con = sqlite3.connect(db)
    con.execute("UPDATE templates SET person_id = 'b2' WHERE person_id = 'a1'")  # move a's templates to b
    con.commit()
    con.close()
    with GalleryStore.open(db, key) as store, pytest.raises(GalleryError, match="integrity"):
        store.load_matrix("site-a", V1)
