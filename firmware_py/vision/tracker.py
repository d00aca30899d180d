"""An IoU tracker: one person walking up is one track, not thirty detections.

:class:`IouTracker` links each frame's detections to the tracks of the
previous frames by box overlap (greedy, highest IoU first), so the decision
stage can vote over the frames of one track and act once per walk-up.

A track that finds no detection *coasts* (keeps its last box, ``missed``
counts up); it ends when it has missed more than ``max_missed`` consecutive
frames or has not been seen for ``max_missed_s`` seconds, whichever comes
first.  An ended track is reported exactly once, with ``ended=True``, in the
list :meth:`IouTracker.update` returns, then forgotten.

Track ids are small integers, unique for the tracker's lifetime.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_py.vision.detector import FaceDetection, box_iou


@dataclass(frozen=True)
class Track:
    """A snapshot of one tracked face after an :meth:`IouTracker.update`.

    - ``detection``: this frame's detection, or ``None`` while coasting or ended.
    - ``box``: the latest matched box (x0, y0, x1, y1), frame pixels.
    - ``age``: frames since the track started (1 on its first frame).
    - ``hits``: frames in which it was matched to a detection.
    - ``missed``: consecutive frames without a detection (0 when matched).
    - ``first_seen`` / ``last_seen``: timestamps (the frames' ``ts``) of the first and latest match.
    - ``ended``: the track is over; this is its last report.
    """

    track_id: int
    box: tuple[float, float, float, float]
    detection: FaceDetection | None
    age: int
    hits: int
    missed: int
    first_seen: float
    last_seen: float
    ended: bool = False

    @property
    def matched(self) -> bool:
        """Whether a detection was linked to this track in the latest frame."""
        return self.detection is not None

    @property
    def duration(self) -> float:
        return self.last_seen - self.first_seen


class _State:
    __slots__ = ("age", "box", "first_seen", "hits", "last_seen", "missed", "track_id")

    def __init__(self, track_id: int, box: tuple[float, float, float, float], ts: float) -> None:
        self.track_id = track_id
        self.box = box
        self.age = 0
        self.hits = 0
        self.missed = 0
        self.first_seen = ts
        self.last_seen = ts


class IouTracker:
    """Greedy IoU tracker.

    :param iou_threshold: minimum IoU to link a detection to a track.
    :param max_missed: frames a track may go unmatched before it ends.
    :param max_missed_s: seconds a track may go unmatched before it ends
        (covers a slow pipeline or a camera stall, where few frames pass).
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5, max_missed_s: float = 1.0) -> None:
        if not 0 < iou_threshold <= 1:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        self.iou_threshold = float(iou_threshold)
        self.max_missed = int(max_missed)
        self.max_missed_s = float(max_missed_s)
        self._tracks: list[_State] = []
        self._next_id = 1

    @property
    def active_count(self) -> int:
        return len(self._tracks)

    def reset(self) -> list[Track]:
        """End every track (e.g. when the camera is lost); returns their final reports."""
        ended = [self._snapshot(t, None, ended=True) for t in self._tracks]
        self._tracks = []
        return ended

    def update(self, detections: list[FaceDetection], ts: float) -> list[Track]:
        """Link this frame's detections; returns every live track plus the tracks that ended now.

        Matched and new tracks come first, in the order of ``detections``
        (nearest first), then coasting tracks, then ended ones.
        """
        tracks = self._tracks
        assigned: dict[int, int] = {}  # detection index -> track index
        if tracks and detections:
            # A gate sees a handful of faces: plain Python floats beat numpy's per-call cost here.
            pairs = []
            for di, d in enumerate(detections):
                for ti, t in enumerate(tracks):
                    iou = box_iou(d.box, t.box)
                    if iou >= self.iou_threshold:
                        pairs.append((-iou, di, ti))
            # Greedy on the IoU-sorted pairs (ties: earlier detection, then older track first):
            # each detection and each track used at most once.
            pairs.sort()
            used_t: set[int] = set()
            for _, di, ti in pairs:
                if di in assigned or ti in used_t:
                    continue
                assigned[di] = ti
                used_t.add(ti)
        matched_tracks = set(assigned.values())
        out: list[Track] = []
        for di, det in enumerate(detections):
            if di in assigned:
                t = tracks[assigned[di]]
            else:
                t = _State(self._next_id, det.box, ts)
                self._next_id += 1
                tracks.append(t)
            t.box, t.last_seen, t.missed = det.box, ts, 0
            t.age += 1
            t.hits += 1
            out.append(self._snapshot(t, det))
        matched_ids = {tracks[i].track_id for i in matched_tracks} | {o.track_id for o in out}
        coasting, ended, keep = [], [], []
        for t in tracks:
            if t.track_id in matched_ids:
                keep.append(t)
                continue
            t.age += 1
            t.missed += 1
            if t.missed > self.max_missed or ts - t.last_seen > self.max_missed_s:
                ended.append(self._snapshot(t, None, ended=True))
            else:
                coasting.append(self._snapshot(t, None))
                keep.append(t)
        self._tracks = keep
        return out + coasting + ended

    @staticmethod
    def _snapshot(t: _State, det: FaceDetection | None, ended: bool = False) -> Track:
        return Track(t.track_id, t.box, det, t.age, t.hits, t.missed, t.first_seen, t.last_seen, ended)
