"""Assemble the recognition core from a :class:`~firmware_py.config.Config`.

Every piece is built here from its config section so the daemon, the demo,
enrolment and the evaluations get the same front-end, embedder, gallery
scope and threshold.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firmware_py.config import with_changes
from firmware_py.decision.liveness import LivenessOff, LivenessStage
from firmware_py.decision.machine import DecisionParams
from firmware_py.events import EventBus
from firmware_py.gallery.store import GalleryStore, open_from_config
from firmware_py.pipeline.loop import RecognitionPipeline
from firmware_py.vision.embedding import ChipEmbedder, load_embedder

if TYPE_CHECKING:
    from firmware_py.config import Config

log = logging.getLogger(__name__)

# Enrolment detects faces of any size so a small face is refused as "too small", not as "no face".
ENROL_DETECTOR = {"vision.detector.min_face_px": 8.0, "vision.detector.max_faces": 0}


def build_analyzer(cfg: Config, enrolment: bool = False) -> Any:
    from firmware_py.vision.analyzer import FaceAnalyzer

    if enrolment:
        cfg = with_changes(cfg, ENROL_DETECTOR)
    return FaceAnalyzer.from_config(cfg)


def live_quality_limits(cfg: Config, analyzer: Any) -> Any:
    """The [vision.quality] limits with the gate's own, more lenient, size and sharpness minimums."""
    rc = cfg.recognition
    base = analyzer.quality_limits
    return dataclasses.replace(
        base,
        min_face_px=rc.live_min_face_px,
        min_interocular_px=min(base.min_interocular_px, rc.live_min_face_px * 0.3),
        min_sharpness=rc.live_min_sharpness,
    )


@dataclass(frozen=True)
class ThresholdChoice:
    value: float
    # "config", "gallery" (stored calibration), "gallery-estimate" (estimated at load) or
    # "small-site" (the safe default of a gallery too small to estimate its own)
    source: str
    detail: str


def choose_threshold(cfg: Config, store: GalleryStore, embedder_version: str, gallery: Any | None = None) -> ThresholdChoice:
    """The threshold in force: the gallery's calibrated one when configured and valid, else an estimate.

    With ``threshold_source = "gallery"`` and no stored calibration for this
    embedder, the threshold is estimated from the in-scope gallery itself
    for ``gallery.target_fpir`` (as `kaoclock gallery calibrate` would, never
    looser than ``recognition.threshold``): the config's default is
    calibrated on lfw-dev's mostly Western faces, and a site's own people
    can sit much closer together (gallery/README.md, "Threshold").  A
    gallery too small for that (:func:`estimate_threshold`) never gets a
    looser threshold than ``recognition.small_site_threshold``.
    """
    rc = cfg.recognition
    if rc.threshold_source == "gallery":
        cal = store.calibration()
        if cal is not None and cal.embedder_version == embedder_version:
            stale = "" if cal.content_hash == store.content_hash else " (the gallery changed since; run `kaoclock gallery calibrate` again)"
            return ThresholdChoice(cal.threshold, "gallery", f"calibrated for FPIR {cal.target_fpir:g} over {cal.persons} people{stale}")
        est = estimate_threshold(cfg, gallery if gallery is not None else store.load_matrix(cfg.device.site, embedder_version))
        if cal is not None:
            est = dataclasses.replace(est, detail=est.detail + f"; the stored calibration is for embedder {cal.embedder_version}: recalibrate")
        return est
    return ThresholdChoice(rc.threshold, "config", "recognition.threshold")


def estimate_threshold(cfg: Config, gallery: Any) -> ThresholdChoice:
    """The threshold for this gallery when none is stored: its own estimate under the small-site rule.

    The gallery's own estimate for ``gallery.target_fpir`` is capped at
    ``recognition.threshold``.  The small-site rule: a gallery of fewer than
    :data:`~firmware_py.gallery.calibration.SMALL_SITE_PERSONS` people is
    never given a looser threshold than ``recognition.small_site_threshold``,
    and neither is a gallery with no usable estimate (fewer than 3 people,
    or a tolerance bound <= 0, as at about 4 people).  Below ten people the
    bound swings from below 0 to above the safe default between sites of one
    population (4-person sites of taiwan-dev: -0.50 to 0.33), so it may only
    tighten there; ``recognition.threshold`` (calibrated on mostly Western
    faces) lets East Asian look-alikes in (gallery/README.md, "Small
    sites").  An empty gallery keeps the config's threshold: nobody can
    match, and the threshold is chosen again when the gallery changes.
    """
    from firmware_py.gallery.calibration import MIN_PERSONS, calibrate, reader_threshold
    from firmware_py.gallery.store import GalleryError

    rc = cfg.recognition
    if gallery.persons == 0:
        return ThresholdChoice(rc.threshold, "config", "recognition.threshold (the gallery is empty)")
    small = f"recognition.small_site_threshold for a site of {gallery.persons} people"
    if gallery.persons < MIN_PERSONS:
        t, _ = reader_threshold(None, gallery.persons, rc.threshold, rc.small_site_threshold)
        return ThresholdChoice(t, "small-site", small + f" (an estimate needs {MIN_PERSONS} people)")
    try:
        cal = calibrate(gallery, cfg.gallery.target_fpir, ceiling=rc.threshold)
    except GalleryError as exc:
        t, _ = reader_threshold(None, gallery.persons, rc.threshold, rc.small_site_threshold)
        log.warning("no threshold estimate from the gallery (%s); using recognition.small_site_threshold %s", exc, t)
        return ThresholdChoice(t, "small-site", small + " (no usable estimate from the gallery)")
    t, by_rule = reader_threshold(cal.threshold, gallery.persons, rc.threshold, rc.small_site_threshold)
    if by_rule:
        return ThresholdChoice(t, "small-site", small + f" (the gallery's estimate {cal.threshold:g} is looser)")
    return ThresholdChoice(cal.threshold, "gallery-estimate", f"estimated from the gallery for FPIR {cal.target_fpir:g} over {cal.persons} people")


def build_pipeline(
    cfg: Config,
    *,
    store: GalleryStore | None = None,
    analyzer: Any | None = None,
    embedder: ChipEmbedder | None = None,
    liveness: LivenessStage | None = None,
    bus: EventBus | None = None,
) -> tuple[RecognitionPipeline, ThresholdChoice]:
    """The recognition pipeline for this reader's site, gallery and models."""
    bus = bus or EventBus()
    store = store or open_from_config(cfg)
    embedder = embedder or load_embedder(cfg)
    analyzer = analyzer or build_analyzer(cfg)
    gallery = store.load_matrix(cfg.device.site, embedder.version)
    choice = choose_threshold(cfg, store, embedder.version, gallery)
    live_limits = live_quality_limits(cfg, analyzer)
    versions = {"gallery": f"{gallery.gallery_version}:{gallery.content_hash[:12]}"}
    liveness = liveness or liveness_from_config(cfg)
    versions.update(getattr(liveness, "model_versions", {}))  # the punch names the liveness models that passed it
    pipeline = RecognitionPipeline(
        analyzer,
        embedder,
        gallery,
        choice.value,
        cfg.recognition.min_margin,
        DecisionParams.from_config(cfg),
        liveness=liveness,
        bus=bus,
        mirror=cfg.recognition.mirror_average,
        model_versions=versions,
        quality_limits=live_limits,
        fusion=cfg.recognition.track_fusion,
    )
    return pipeline, choice


def liveness_from_config(cfg: Config) -> LivenessStage:
    """The stage for ``[liveness] policy``: :class:`LivenessOff` for ``off``, else the liveness package's detector."""
    if cfg.liveness.policy == "off":
        return LivenessOff()
    # Imported here so a reader with liveness off never loads the liveness package.
    from firmware_py.liveness.stage import stage_from_config

    return stage_from_config(cfg)
