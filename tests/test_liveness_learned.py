"""The learned liveness model: the torch-free state-dict reader, the numpy reference, the committed LiteRT port, crops, bad input."""

from __future__ import annotations

import io
import pickle
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from firmware_py.convert.minifasnet import forward, load_network, read_state_dict
from firmware_py.liveness.learned import BoxMap, LearnedModel, crop, crop_box, input_problem
from firmware_py.models.manifest import ModelError, load_manifest, sha256_file

V2 = "2.7_80x80_MiniFASNetV2.pth"
V1SE = "4_0_0_80x80_MiniFASNetV1SE.pth"


@pytest.fixture(scope="module")
def src(data_root: Path) -> Path:
    return data_root / "models-src" / "minifasnet"


@pytest.fixture(scope="module")
def learned() -> LearnedModel:
    m = load_manifest()
    return LearnedModel({n: m.require(n, Path("/nonexistent")) for n in ("minifasnet_v2", "minifasnet_v1se")})


def test_committed_nets_match_their_manifest_entries_and_ship_the_licence() -> None:
    m = load_manifest()
    for name in ("minifasnet_v2", "minifasnet_v1se"):
        e = m.entry(name)
        assert e.location == "tree" and e.role == "runtime" and "Apache-2.0" in e.licence
        assert sha256_file(e.path(Path("/nonexistent"))) == e.sha256
        assert e.extra["build"]["source_sha256"]
    lic = e.path(Path("/nonexistent")).parent / "LICENSE-minifasnet"
    assert "Apache License" in lic.read_text() and "Version 2.0" in lic.read_text()


def test_state_dict_reader_reads_the_legacy_files(src: Path) -> None:
    sd = read_state_dict(src / V1SE)
    assert sd["conv1.conv.weight"].shape == (32, 3, 3, 3) and sd["conv1.conv.weight"].dtype == np.float32
    assert sd["prob.weight"].shape == (3, 128)
    assert "conv_3.model.3.se_module.fc1.weight" in sd  # the SE variant: the last block of each stage
    net = load_network(src / V2)
    assert len(net.layers) == 19 and 400_000 < net.parameter_count() < 500_000


def _zip_state_dict(tensors: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A torch>=1.6 zip state dict written without torch: data.pkl + data/<key> raw storages."""

    class Rebuild:
        pass

    class FloatStorage:
        pass

    # The pickler names globals by module: stand-in modules for the time of the dump only.
    fake_torch, fake_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    Rebuild.__module__, Rebuild.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    fake_utils._rebuild_tensor_v2 = Rebuild  # type: ignore[attr-defined]
    fake_torch.FloatStorage = FloatStorage  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)

    class P(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            if isinstance(obj, tuple) and obj and obj[0] == "S":
                return ("storage", FloatStorage, obj[1], "cpu", obj[2])
            return None

    class T:
        def __init__(self, key: str, a: np.ndarray) -> None:
            self.key, self.a = key, a

        def __reduce__(self) -> tuple:
            stride = tuple(s // 4 for s in self.a.strides)
            return (Rebuild, (("S", self.key, self.a.size), 0, self.a.shape, stride, False, OrderedDict()))

    sd = OrderedDict((f"module.{k}", T(str(i), v.astype(np.float32))) for i, (k, v) in enumerate(tensors.items()))
    buf = io.BytesIO()
    P(buf, protocol=2).dump(sd)
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.delitem(sys.modules, "torch._utils")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        for i, v in enumerate(tensors.values()):
            zf.writestr(f"archive/data/{i}", np.ascontiguousarray(v, "<f4").tobytes())
    return out.getvalue()


def test_state_dict_reader_reads_the_zip_format_and_refuses_foreign_globals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = tmp_path / "z.pth"
    p.write_bytes(_zip_state_dict({"w": a, "b": np.ones(5, np.float32)}, monkeypatch))
    sd = read_state_dict(p)
    assert set(sd) == {"w", "b"} and np.array_equal(sd["w"], a)

    class Evil:
        def __reduce__(self) -> tuple:
            import os

            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pth"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(ModelError, match="refused global"):
        read_state_dict(bad)
    (tmp_path / "junk.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(ModelError, match="not a readable PyTorch state dict"):
        read_state_dict(tmp_path / "junk.pth")


def test_litert_port_matches_the_numpy_reference_on_real_face_crops(src: Path, learned: LearnedModel, data_root: Path) -> None:
    from firmware_py.liveness.presentations import load_rgb

    images = [
        load_rgb(data_root / "nuaa-dev/ClientRaw/0001/0001_00_00_01_0.jpg"),
        load_rgb(data_root / "nuaa-dev/ImposterRaw/0001/0001_00_00_01_0.jpg"),
    ]
    refs = {"minifasnet_v2": load_network(src / V2), "minifasnet_v1se": load_network(src / V1SE)}
    for img in images:
        h, w = img.shape[:2]
        xywh = (w * 0.35, h * 0.25, w * 0.3, h * 0.4)
        got = learned.probabilities(img, xywh)
        for name, scale in (("minifasnet_v2", 2.7), ("minifasnet_v1se", 4.0)):
            c, _ = crop(img, xywh, scale)
            ref = forward(refs[name], c[None].astype(np.float64))[0]
            assert np.abs(got[name] - ref).max() < 0.02, name
            assert abs(ref.sum() - 1) < 1e-9


def test_crop_box_reproduces_the_original_clamp_and_shift() -> None:
    # A face in the middle: 2.7x box about its centre.
    x0, y0, x1, y1, s = crop_box(640, 480, (300, 200, 40, 50), 2.7)
    assert s == 2.7 and (x0, y0, x1, y1) == (266, 157, 374, 292)
    # Near the left edge: shifted right, not shrunk.
    x0, y0, x1, y1, s = crop_box(640, 480, (0, 200, 40, 50), 4.0)
    assert x0 == 0 and x1 == 160 and s == 4.0
    # Too big for 4.0: the scale is clamped to what the frame holds.
    x0, y0, x1, y1, s = crop_box(640, 480, (200, 100, 150, 200), 4.0)
    assert s == pytest.approx(479 / 200) and y0 == 0 and y1 <= 479


def test_bad_input_is_named_with_what_to_do(astronaut: np.ndarray) -> None:
    box = (175.0, 76.0, 265.0, 196.0)
    assert input_problem(astronaut, box, BoxMap()) is None
    grey = np.repeat(astronaut.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    code, text = input_problem(grey, box, BoxMap())  # type: ignore[misc]
    assert code == "grey_frame" and "colour" in text
    code, text = input_problem(astronaut, (200.0, 100.0, 220.0, 120.0), BoxMap())  # type: ignore[misc]
    assert code == "face_too_small" and "step closer" in text
    code, text = input_problem(astronaut, (50.0, 20.0, 450.0, 500.0), BoxMap())  # type: ignore[misc]
    assert code == "face_too_close" and "step back" in text
    # A 640x480 frame holds the 4.0 crop of a 100 px face; not of a 420 px one.
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[..., 0] = 200
    assert input_problem(frame, (270.0, 190.0, 370.0, 290.0), BoxMap()) is None
    assert input_problem(frame, (100.0, 30.0, 520.0, 450.0), BoxMap())[0] == "face_too_close"  # type: ignore[index]


def _stage(**changes: object):  # type: ignore[no-untyped-def]
    from firmware_py.config import load, with_changes
    from firmware_py.liveness.stage import LivenessDetector

    return LivenessDetector.from_config(with_changes(load(None), {f"liveness.{k}": v for k, v in changes.items()}))


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("early_min_frames, decided_at", [(0, (8, 9)), (2, (1,))])
def test_nets_run_only_until_the_verdict(astronaut: np.ndarray, early_min_frames: int, decided_at: tuple[int, ...], mirror: bool) -> None:
    st = _stage(policy="passive", early_min_frames=early_min_frames, mirror_unsure=mirror)
    box = (175.0, 76.0, 265.0, 196.0)
    assert st.learned is not None
    done = None
    for i in range(30):
        st.observe_face(1, astronaut, box, None, 100 + i * 0.1)
        v = st.verdict(1)
        if done is None and v is not None:  # the daemon asks after every frame
            done = st.learned.invokes
            # two 80x80 invokes per frame, two more on each frame the nets are unsure of; the 0.8 s window,
            # or the early pass on the 2nd frame
            mirrored = int(v.cues["mirrored_frames"])
            assert done == 2 * (i + 1) + 2 * mirrored and i in decided_at
            assert mirrored == 0 if not mirror else 0 <= mirrored <= i + 1
    assert done is not None and st.learned.invokes == done  # later frames of a decided track cost nothing


def test_unsure_frames_are_scored_on_the_mirrored_crops_too(learned: LearnedModel, astronaut: np.ndarray) -> None:
    from firmware_py.liveness.learned import BOX_MAP, crop

    box = (175.0, 76.0, 265.0, 196.0)
    xywh = BOX_MAP.apply(box)
    crops = [crop(astronaut, xywh, scale)[0] for scale in (2.7, 4.0)]
    plain, per, mirrored = learned.real_score(astronaut, box)
    assert not mirrored and plain == pytest.approx(np.mean(list(per.values())))
    # The four views by hand: each net on its crop and on the crop flipped left-right.
    flipped = learned._invoke_all([np.ascontiguousarray(c[:, ::-1]) for c in crops])
    four = np.mean([*per.values(), *(float(p[1]) for p in flipped)])
    band = min(plain, 1 - plain) - 1e-6  # just wide enough to call this frame unsure
    before = learned.invokes
    score, per2, mirrored = learned.real_score(astronaut, box, mirror_band=band)
    assert mirrored and per2 == per and score == pytest.approx(four) and learned.invokes == before + 4
    # A frame the nets are sure of costs two invokes, scored as before.
    score, _, mirrored = learned.real_score(astronaut, box, mirror_band=min(plain, 1 - plain) + 1e-3)
    assert not mirrored and score == plain and learned.invokes == before + 6


def test_unscorable_frames_give_a_verdict_that_says_what_to_do(astronaut: np.ndarray) -> None:
    grey = np.repeat(astronaut.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    st = _stage(policy="passive")
    for i in range(10):
        st.observe_face(1, grey, (175.0, 76.0, 265.0, 196.0), None, 100 + i * 0.1)
        st.observe_face(2, astronaut, (0.0, 0.0, 500.0, 510.0), None, 100 + i * 0.1)  # fills the frame
        st.observe_face(3, astronaut, (200.0, 100.0, 220.0, 122.0), None, 100 + i * 0.1)  # 20 px
    v1, v2, v3 = st.verdict(1), st.verdict(2), st.verdict(3)
    assert v1 is not None and not v1.passed and "grey or infrared" in v1.reason and v1.cues["unscored.grey_frame"] == 10
    # Too close for the 4.0 crop: scored on the clamped crop as the original does, and told to step back.
    assert v2 is not None and "step back" in v2.reason and v2.cues["too_close_frames"] == 10 and v2.cues["frames"] == 10
    assert v3 is not None and not v3.passed and "step closer" in v3.reason
    # conclude() on a track that ended early says the same, and never crashes.
    st.observe_face(4, grey, (175.0, 76.0, 265.0, 196.0), None, 200.0)
    v4 = st.conclude(4)
    assert not v4.passed and "grey or infrared" in v4.reason


@pytest.mark.converter
def test_models_build_liveness_check_reproduces_the_committed_nets(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reproducible build step: rebuilt from the .pth files (TensorFlow, extra `models`), same bytes as committed."""
    import json

    from firmware_py.cli.main import main

    assert main(["models", "build", "--target", "liveness", "--data", str(data_root), "--check", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for name in ("minifasnet_v2", "minifasnet_v1se"):
        assert out["models"][name]["check"]["reproduced"], name
        assert out["models"][name]["probe_max_abs_diff"] < 1e-3  # float16 weights vs the float64 reference


def test_models_verify_measures_liveness_parity_on_dev_crops(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from firmware_py.cli.main import main

    assert main(["models", "verify", "--data", str(data_root), "--target", "liveness", "--liveness-faces", "40", "--json"]) == 0
    lp = json.loads(capsys.readouterr().out)["liveness_parity"]
    assert lp["n"] >= 38 and lp["ensemble_p_real"]["max_abs_diff"] <= 0.02
    assert 0 < lp["minifasnet_v1se_p_real"]["mean_abs_diff"] <= lp["minifasnet_v1se_p_real"]["max_abs_diff"]


def test_models_build_liveness_refuses_a_wrong_source(tmp_path: Path) -> None:
    from firmware_py.convert.minifasnet_build import check_sources

    d = tmp_path / "models-src" / "minifasnet"
    d.mkdir(parents=True)
    with pytest.raises(ModelError, match="missing source"):
        check_sources(tmp_path)
    (d / V2).write_bytes(b"x")
    (d / V1SE).write_bytes(b"y")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        check_sources(tmp_path)


def test_early_pass_on_real_sequences_never_on_a_print(data_root: Path) -> None:
    """Real NUAA print sequences (3 subjects) and live sequences / a clip through the daemon's front-end and stage."""
    from firmware_py.config import load
    from firmware_py.eval.liveness import evaluate
    from firmware_py.liveness.frontend import FrontEnd
    from firmware_py.liveness.presentations import read_manifest

    ids = {
        "nuaa-ImposterRaw-0001_00_00_01-seq",
        "nuaa-ImposterRaw-0004_01_00_01-seq",
        "nuaa-ImposterRaw-0007_01_00_01-seq",
        "nuaa-ClientRaw-0002_01_00_01-seq",
        "nuaa-ClientRaw-0007_00_00_01-seq",
        "clip-liveportrait_d3",
    }
    pres = [p for p in read_manifest(data_root / "liveness-dev.csv") if p.id in ids]
    assert len(pres) == len(ids)
    cfg = load(None)
    stage = _stage(policy="passive")
    _, outcomes = evaluate(pres, FrontEnd(cfg), stage, max_seconds=2.0)
    for o in outcomes:
        assert o.cues is not None, o.presentation.id
        if o.presentation.is_attack:  # never early; rejected by the learned score (at the window, or when the sequence ends)
            assert not o.passed and o.cues["early"] == 0.0 and "learned liveness score" in o.reason, o.reason
        else:  # passed early, in fewer frames than the window, the verdict still explained cue by cue
            assert o.passed and o.reason.startswith("live (early)") and o.cues["early"] == 1.0, o.reason
            assert o.frames_used < 9 and o.cues["window_s"] < cfg.liveness.passive_window_s
            assert {"texture", "moire_peak", "learned.minifasnet_v2", "learned.minifasnet_v1se"} <= set(o.cues)


def test_parallel_nets_give_the_same_scores(learned: LearnedModel) -> None:
    m = load_manifest()
    par = LearnedModel({n: m.require(n, Path("/nonexistent")) for n in ("minifasnet_v2", "minifasnet_v1se")}, parallel=True)
    try:
        rng = np.random.default_rng(3)
        for _ in range(5):
            image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
            box = (100.0, 60.0, 200.0, 180.0)
            # the same arithmetic on two threads, the mirrored crops included
            assert learned.real_score(image, box, mirror_band=0.0) == par.real_score(image, box, mirror_band=0.0)
        assert par.parallel and not learned.parallel and par.invokes == 20 and par.invoke_s > 0
    finally:
        par.close()
    # Closed, it scores on the caller's thread.
    assert not par.parallel and par.real_score(image, box) == learned.real_score(image, box)
