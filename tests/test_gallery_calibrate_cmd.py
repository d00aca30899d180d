"""`kaoclock gallery calibrate` stores a site threshold with the gallery and the reader uses it."""

from __future__ import annotations

import json

import numpy as np

from firmware_py.cli.main import main
from firmware_py.config import load, with_changes
from firmware_py.gallery.store import Person, Template, open_from_config
from firmware_py.pipeline.build import choose_threshold
from firmware_py.vision.embedding import load_embedder


def test_calibrate_stores_threshold_and_reader_uses_it(models_dir, capsys):
    cfg = load(None)
    version = load_embedder(cfg).version
    rng = np.random.default_rng(5)
    centre = rng.normal(0, 0.09, 128).astype(np.float32)
    with open_from_config(cfg) as store:
        for i in range(12):  # a homogeneous site: people fairly close to each other
            t = Template(centre + rng.normal(0, 0.03, 128).astype(np.float32), version, f"p{i}.jpg")
            store.upsert_person(Person(f"e{i:03d}", f"Person {i}", (cfg.device.site,), (t,)))
        # No stored calibration: the reader estimates one from the gallery, never looser than the config's.
        est = choose_threshold(cfg, store, version)
        assert est.source == "gallery-estimate" and 0 < est.value <= cfg.recognition.threshold
        assert "FPIR 0.003 over 12 people" in est.detail
    assert main(["gallery", "calibrate", "--target-fpir", "0.01", "--json"]) == 0
    cal = json.loads(capsys.readouterr().out)
    assert cal["persons"] == 12 and cal["impostor_pairs"] == 12 and 0 < cal["threshold"] <= cfg.recognition.threshold
    with open_from_config(cfg) as store:
        chosen = choose_threshold(cfg, store, version)
        assert chosen.source == "gallery" and chosen.value == cal["threshold"]
        # the config can pin its own threshold instead
        pinned = with_changes(cfg, {"recognition.threshold_source": "config"})
        assert choose_threshold(pinned, store, version).value == cfg.recognition.threshold
        # a change to the gallery marks the calibration stale
        store.remove_person("e000")
        assert "calibrate` again" in choose_threshold(cfg, store, version).detail
    assert main(["gallery", "calibrate", "--clear"]) == 0
    with open_from_config(cfg) as store:
        assert store.calibration() is None
        # cleared: back to the gallery's own estimate; too few people for one: the safe small-site default,
        # never the looser config threshold
        assert choose_threshold(cfg, store, version).source == "gallery-estimate"
        for i in range(1, 10):
            store.remove_person(f"e{i:03d}")
        small = choose_threshold(cfg, store, version)
        assert small.source == "small-site" and small.value == min(cfg.recognition.small_site_threshold, cfg.recognition.threshold)
