"""The IoU tracker on real detections: one walk-up is one track, two people two, a gap ends a track."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from firmware_py.vision.detector import FaceDetection, FaceDetector
from firmware_py.vision.tracker import IouTracker


def frame_with(photos: list[tuple[np.ndarray, int, tuple[int, int]]]) -> np.ndarray:
    """A 640x480 frame with each (photo, width, top-left) pasted on a grey wall."""
    canvas = Image.new("RGB", (640, 480), (100, 104, 110))
    for photo, width, at in photos:
        im = Image.fromarray(photo)
        canvas.paste(im.resize((width, round(im.height * width / im.width)), Image.BILINEAR), at)
    return np.asarray(canvas)


def walk_up(grace: np.ndarray, n: int = 20) -> list[np.ndarray]:
    """Grace Hopper walking up to the camera: her photo grows from 260 to 560 px wide, drifting right."""
    frames = []
    for i in range(n):
        w = round(260 + 300 * i / (n - 1))
        frames.append(frame_with([(grace, w, (140 + 3 * i - (w - 260) // 2, 40 - (w - 260) // 3))]))
    return frames


def det(box: tuple[float, float, float, float]) -> FaceDetection:
    return FaceDetection(box=box, score=0.9, keypoints=np.zeros((6, 2), np.float32))


def test_walking_up_is_one_track(detector: FaceDetector, grace_hopper: np.ndarray) -> None:
    tracker = IouTracker(iou_threshold=0.3, max_missed=3, max_missed_s=1.0)
    ids, widths = set(), []
    for i, frame in enumerate(walk_up(grace_hopper)):
        faces = detector.detect(frame)
        assert len(faces) == 1, i
        widths.append(faces[0].width)
        tracks = tracker.update(faces, ts=i / 15)
        assert len(tracks) == 1 and tracks[0].matched and not tracks[0].ended
        ids.add(tracks[0].track_id)
    assert widths[-1] > 1.8 * widths[0]  # the face really grew
    assert len(ids) == 1
    (t,) = tracks
    assert t.hits == t.age == 20 and t.missed == 0
    assert t.first_seen == 0 and t.last_seen == pytest.approx(19 / 15) and t.duration == pytest.approx(19 / 15)


def test_two_people_two_tracks(detector: FaceDetector, grace_hopper: np.ndarray, astronaut: np.ndarray) -> None:
    tracker = IouTracker()
    seen: dict[str, set[int]] = {"left": set(), "right": set()}
    for i in range(8):
        frame = frame_with([(astronaut, 520 + 4 * i, (300 - 2 * i, 100)), (grace_hopper, 400 + 6 * i, (10 + i, 0))])
        faces = detector.detect(frame)
        assert len(faces) == 2
        for t in tracker.update(faces, ts=i * 0.1):
            assert t.detection is not None
            seen["left" if t.detection.centre[0] < 300 else "right"].add(t.track_id)
    assert len(seen["left"]) == 1 and len(seen["right"]) == 1
    assert seen["left"] != seen["right"]


def test_a_gap_ends_the_track_once_and_a_return_is_a_new_walk_up(detector: FaceDetector, grace_hopper: np.ndarray) -> None:
    tracker = IouTracker(max_missed=3, max_missed_s=10.0)
    face = frame_with([(grace_hopper, 400, (100, 20))])
    empty = frame_with([])
    first = tracker.update(detector.detect(face), 0.0)[0].track_id
    reports = []
    for i in range(1, 6):
        reports.append(tracker.update(detector.detect(empty), i * 0.1))
    # Coasting for 3 frames (missed 1..3), ended on the 4th, then forgotten.
    assert [len(r) for r in reports] == [1, 1, 1, 1, 0]
    assert [r[0].missed for r in reports[:4]] == [1, 2, 3, 4]
    assert [r[0].ended for r in reports[:4]] == [False, False, False, True]
    assert all(r[0].detection is None and r[0].track_id == first for r in reports[:4])
    again = tracker.update(detector.detect(face), 1.0)
    assert len(again) == 1 and again[0].track_id != first and again[0].hits == 1


def test_time_gap_ends_a_track_even_within_max_missed() -> None:
    tracker = IouTracker(max_missed=100, max_missed_s=0.5)
    a = tracker.update([det((0, 0, 100, 100))], 0.0)[0]
    assert not tracker.update([], 0.3)[0].ended
    ended = tracker.update([], 0.6)
    assert ended[0].ended and ended[0].track_id == a.track_id
    assert tracker.active_count == 0


def test_a_brief_miss_keeps_the_track() -> None:
    tracker = IouTracker(max_missed=2)
    a = tracker.update([det((0, 0, 100, 100))], 0.0)[0].track_id
    tracker.update([], 0.1)
    b = tracker.update([det((5, 5, 105, 105))], 0.2)[0]
    assert b.track_id == a and b.hits == 2 and b.age == 3 and b.missed == 0


def test_greedy_matching_prefers_the_best_overlap() -> None:
    tracker = IouTracker(iou_threshold=0.2)
    ta, tb = (t.track_id for t in tracker.update([det((0, 0, 100, 100)), det((60, 0, 160, 100))], 0.0))
    # Both new boxes overlap both tracks; each goes to the track it overlaps most.
    out = tracker.update([det((70, 0, 170, 100)), det((-5, 0, 95, 100))], 0.1)
    by_x = {round(t.box[0]): t.track_id for t in out}
    assert by_x == {70: tb, -5: ta}


def test_reset_ends_everything() -> None:
    tracker = IouTracker()
    tracker.update([det((0, 0, 10, 10)), det((50, 50, 60, 60))], 0.0)
    ended = tracker.reset()
    assert len(ended) == 2 and all(t.ended for t in ended) and tracker.active_count == 0


def test_bad_threshold_refused() -> None:
    with pytest.raises(ValueError):
        IouTracker(iou_threshold=0)
