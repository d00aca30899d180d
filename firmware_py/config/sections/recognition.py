"""[recognition]: how a face descriptor becomes "this person" or "unknown"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from firmware_py.config.schema import Section, setting

# `kaoclock eval tune --root lfw-dev/images --split 0/2`: FPIR 0.1% on lfw-dev's tuning half (firmware_py/gallery/README.md, "Threshold").
DEFAULT_THRESHOLD = 0.40


@dataclass(frozen=True)
class RecognitionConfig(Section):
    """Embedding and 1:N matching against the gallery."""

    threshold: float = setting(
        DEFAULT_THRESHOLD,
        gt=0.0,
        lt=2.0,
        doc="Largest (cohort-normalised) descriptor distance accepted as a match, dlib scale. The default is calibrated for FPIR 0.1% "
        "on lfw-dev's tuning half (`kaoclock eval tune`); people of one population seen by one camera sit closer together, so with "
        "threshold_source = 'gallery' the reader tightens it from the gallery itself (`kaoclock gallery calibrate`).",
    )
    threshold_source: Literal["config", "gallery"] = setting(
        "gallery",
        doc="gallery: use the threshold `kaoclock gallery calibrate` stored with the gallery, else estimate one from the gallery at "
        "start for gallery.target_fpir (never looser than `threshold`; under 10 people never looser than `small_site_threshold`); "
        "config: always use `threshold`.",
    )
    small_site_threshold: float = setting(
        0.325,
        gt=0.0,
        lt=2.0,
        doc="With threshold_source = 'gallery' and no stored calibration, a gallery of fewer than 10 people (or with no usable "
        "estimate) never gets a looser threshold than this (nor than `threshold`); a stricter estimate is kept. Chosen for FPIR "
        "0.3% on random sites of 2-9 East Asian people (`kaoclock eval small-site`, gallery/README.md).",
    )
    track_fusion: Literal["vote", "mean"] = setting(
        "vote",
        doc="vote: each frame of a walk-up is matched on its own descriptor and decision.k of decision.n must agree; mean: each "
        "frame is matched on the mean descriptor of the walk-up's last decision.n usable frames (lower walk-up FNIR at the same "
        "threshold, but more strangers' walk-ups pass too: gallery/README.md, 'Walk-up fusion').",
    )
    min_margin: float = setting(
        0.04, ge=0.0, le=1.0, doc="Distance gap the best person must keep to the second-best; smaller is 'ambiguous', not a match."
    )
    mirror_average: bool = setting(
        True,
        doc="Average the descriptors of the chip and of its mirror image (two embedder runs per face; better on lfw-dev, see gallery/README.md).",
    )
    live_min_face_px: float = setting(
        60.0,
        ge=8.0,
        le=2000.0,
        doc="At the gate, frames whose face is narrower than this are not matched ('low_quality'); enrolment uses [vision.quality].",
    )
    live_min_sharpness: float = setting(
        0.15,
        ge=0.0,
        le=10.0,
        doc="At the gate, frames sharper than this are matched (webcam frames measure 0.25-0.45; enrolment asks [vision.quality] min_sharpness).",
    )
