"""Enrolment from photos, with quality gates and clear refusals.

Each photo goes through the same front-end as the camera (detect, landmarks,
align, quality) and must show exactly one clear face:

- ``unreadable``: not an image file Pillow can open;
- ``no_face``: no face found;
- ``several_faces``: another face at least half as wide as the largest one
  (who is being enrolled?  crop the photo to one person);
- the vision package's quality codes: ``face_too_small``, ``too_blurred``,
  ``pose_yaw`` / ``pose_pitch`` / ``pose_roll``, ``too_dark`` /
  ``too_bright`` / ``overexposed``;
- ``not_same_person``: with several photos, one lies farther than
  :data:`SAME_PERSON_MAX` from the others' mean descriptor.

**All or nothing per command**: if any photo is refused, nothing is stored
and the report names every photo with its reason; fix or drop the photo and
run the command again.  This keeps a person from being half-enrolled from
the photos that happened to pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from firmware_py.capture.still import ImageTooLarge, open_still
from firmware_py.errors import ExitCode, KaoclockError
from firmware_py.gallery.store import GalleryStore, Person, Template
from firmware_py.progress import Progress
from firmware_py.vision.embedding import ChipEmbedder, describe_face

# dlib's own same-person bound: farther than this from the others is another person.
SAME_PERSON_MAX = 0.6
# A second face at least this fraction of the largest face's width makes the photo ambiguous.
SECOND_FACE_RATIO = 0.5

MESSAGES = {
    "unreadable": "is not an image that can be read",
    "too_large": "has more pixels than enrolment decodes; downscale it",
    "no_face": "shows no face",
    "several_faces": "shows several faces; crop it to the one person being enrolled",
    "face_too_small": "face is too small; use a closer or larger photo (face at least {min_face_px:.0f} px wide)",
    "too_blurred": "face is too blurred; use a sharp photo",
    "pose_yaw": "head is turned sideways; use a photo facing the camera",
    "pose_pitch": "head is tilted up or down; use a photo facing the camera",
    "pose_roll": "head is tilted sideways; use an upright photo",
    "too_dark": "face is too dark; use a better-lit photo",
    "too_bright": "face is too bright; use a photo that is not washed out",
    "overexposed": "face has clipped black or white areas; use a better-exposed photo",
    "not_same_person": "does not look like the same person as the other photos",
}


class EnrolmentRefused(KaoclockError):
    """At least one photo failed a gate; nothing was stored."""

    exit_code = ExitCode.ENROL_REFUSED

    def __init__(self, report: EnrolmentReport) -> None:
        self.report = report
        lines = [f"enrolment of {report.person_id} refused; nothing was stored:"]
        lines += [f"  - {r.path}: {r.message}" for r in report.photos if not r.ok]
        ok = [r.path.name for r in report.photos if r.ok]
        if ok:
            lines.append(f"  (accepted: {', '.join(ok)}; fix or drop the refused photos and run the command again)")
        super().__init__("\n".join(lines))


@dataclass
class PhotoReport:
    path: Path
    ok: bool
    reasons: list[str] = field(default_factory=list)
    message: str = "ok"
    quality: dict[str, float] = field(default_factory=dict)
    faces: int = 0
    descriptor: np.ndarray | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "photo": str(self.path),
            "ok": self.ok,
            "reasons": self.reasons,
            "message": self.message,
            "faces": self.faces,
            "quality": self.quality,
        }


@dataclass
class EnrolmentReport:
    person_id: str
    name: str
    photos: list[PhotoReport]
    stored: bool = False
    gallery_version: int | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "person": self.person_id,
            "name": self.name,
            "stored": self.stored,
            "gallery_version": self.gallery_version,
            "photos": [p.as_dict() for p in self.photos],
            "warnings": self.warnings,
        }


def load_photo(path: Path) -> np.ndarray:
    """An RGB uint8 array, upright per its EXIF orientation."""
    with open_still(path) as im:  # the pixel limit is checked from the header, before decoding
        return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB")))


def check_photo(analyzer: Any, embedder: ChipEmbedder, path: Path, mirror: bool = False, image: np.ndarray | None = None) -> PhotoReport:
    """Run one photo through the gates; on success the report carries its descriptor."""
    from firmware_py.capture.frame import Frame

    path = Path(path)
    if image is None:
        try:
            image = load_photo(path)
        except ImageTooLarge as exc:
            return PhotoReport(path, False, ["too_large"], str(exc))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            return PhotoReport(path, False, ["unreadable"], f"{MESSAGES['unreadable']} ({exc.__class__.__name__})")
    analyzer.reset()
    analysis = analyzer.process(Frame(image, 0.0, 0, str(path)))
    faces = analysis.observations
    if not faces:
        return PhotoReport(path, False, ["no_face"], MESSAGES["no_face"])
    primary = analysis.primary or faces[0]
    big = [o for o in faces if o.detection.width >= SECOND_FACE_RATIO * primary.detection.width]
    if len(big) > 1:
        return PhotoReport(path, False, ["several_faces"], f"shows {len(big)} faces; crop it to the one person being enrolled", faces=len(faces))
    limits = analyzer.quality_limits
    q = primary.quality
    failures = q.failures(limits) if q is not None else ["no_face"]
    if primary.chip is None:
        failures = failures or ["no_face"]
    if failures:
        msgs = [MESSAGES.get(f, f).format(**vars(limits)) for f in failures]
        detail = ""
        if q is not None:
            detail = f" (face {q.face_px:.0f} px, sharpness {q.sharpness:.2f}, yaw {q.yaw:.0f}, pitch {q.pitch:.0f}, luminance {q.luminance:.0f})"
        return PhotoReport(path, False, failures, "; ".join(msgs) + detail, q.as_dict() if q else {}, len(faces))
    desc = describe_face(embedder, primary.chips, mirror)
    return PhotoReport(path, True, [], "ok", q.as_dict() if q else {}, len(faces), desc)


def check_photos(
    analyzer: Any,
    embedder: ChipEmbedder,
    person_id: str,
    name: str,
    photos: list[Path],
    *,
    mirror: bool = False,
    images: dict[Path, np.ndarray] | None = None,
) -> EnrolmentReport:
    """Every photo through the gates, then the same-person check; the report, or :class:`EnrolmentRefused` naming each bad photo."""
    if not photos:
        raise KaoclockError("no photo given: name at least one photo of the person")
    reports = []
    with Progress("checking photos", total=len(photos)) as bar:
        for p in photos:
            reports.append(check_photo(analyzer, embedder, Path(p), mirror, (images or {}).get(Path(p))))
            bar.advance()
    report = EnrolmentReport(person_id, name, reports)
    good = [(r, r.descriptor) for r in reports if r.ok and r.descriptor is not None]
    if len(good) >= 2:
        for r, desc in good:
            others = np.mean([o_desc for o, o_desc in good if o is not r], axis=0)
            d = float(np.linalg.norm(desc - others))
            if d > SAME_PERSON_MAX:
                r.ok, r.reasons, r.message = False, ["not_same_person"], f"{MESSAGES['not_same_person']} (distance {d:.2f} > {SAME_PERSON_MAX})"
    if any(not r.ok for r in reports):
        raise EnrolmentRefused(report)
    return report


def accepted(report: EnrolmentReport) -> list[tuple[PhotoReport, np.ndarray]]:
    """The accepted photos of a checked report with their descriptors."""
    return [(r, r.descriptor) for r in report.photos if r.ok and r.descriptor is not None]


def enrol_photos(
    store: GalleryStore,
    analyzer: Any,
    embedder: ChipEmbedder,
    person_id: str,
    name: str,
    sites: list[str],
    photos: list[Path],
    *,
    replace: bool = False,
    mirror: bool = False,
    threshold: float | None = None,
    images: dict[Path, np.ndarray] | None = None,
) -> EnrolmentReport:
    """Check every photo, then store all of them as templates of one person, or none (raises :class:`EnrolmentRefused`)."""
    report = check_photos(analyzer, embedder, person_id, name, photos, mirror=mirror, images=images)
    good = accepted(report)
    # Not a refusal (twins exist), but worth a line: someone else enrolled looks the same.
    if threshold is not None:
        for pid, dist in _closest_others(store, person_id, [d for _, d in good], embedder.version):
            if dist <= threshold:
                report.warnings.append(f"already enrolled {pid} is as close as {dist:.3f} (threshold {threshold:.3f}); is it the same person?")
    person = Person(person_id, name, tuple(sites), tuple(Template(d, embedder.version, r.path.name) for r, d in good))
    report.gallery_version = store.upsert_person(person, replace_templates=replace)
    report.stored = True
    return report


def _closest_others(store: GalleryStore, person_id: str, descriptors: list[np.ndarray], version: str) -> list[tuple[str, float]]:
    gal = store.load_matrix(None, version)
    if len(gal) == 0:
        return []
    q = np.asarray(descriptors, np.float32)
    d = np.sqrt(((gal.matrix[None, :, :] - q[:, None, :]) ** 2).sum(-1)).min(0)
    best: dict[str, float] = {}
    for pid, dist in zip(gal.person_ids.tolist(), d.tolist(), strict=True):
        if pid != person_id:
            best[pid] = min(best.get(pid, 9.0), dist)
    return sorted(best.items(), key=lambda kv: kv[1])[:3]
