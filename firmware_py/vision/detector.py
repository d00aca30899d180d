"""Face detection: MediaPipe's BlazeFace short-range model through LiteRT.

:class:`FaceDetector` takes an RGB frame of any size and returns the faces in
it, nearest (largest) first, as :class:`FaceDetection` boxes with six
keypoints, all in pixels of the frame it was given.

What happens inside, following MediaPipe's ``face_detection_short_range``
graph (its options are reproduced in :data:`ANCHOR_SPEC` and
:class:`FaceDetector`'s defaults):

1. *Letterbox*: the frame is scaled to fit 128x128 keeping its aspect ratio
   (each input pixel the mean of a 2x2 block, by OpenCV's warp) and centred
   on a black square, then scaled to [-1, 1].
2. *Invoke* the model: 896 anchors, each with a score logit and 16
   regressors (box centre and size, then 6 keypoints as x, y).
3. *Decode* (plain Python over the anchors whose logit passes): ``SsdAnchorsCalculator`` anchors (strides
   8, 16, 16, 16; 2 + 6 anchors per cell; fixed size 1), sigmoid of the
   clipped logit, offsets divided by 128 and added to the anchor centre.
4. *Weighted NMS* (MediaPipe's ``WEIGHTED`` algorithm): the best-scoring
   box absorbs every remaining box overlapping it by IoU > ``nms_iou``, and
   the merged box and keypoints are their score-weighted average.  This
   steadies the box from frame to frame, which the tracker and the crop for
   the landmark model both benefit from.
5. Undo the letterbox and drop faces narrower than ``min_face_px`` pixels
   of the original frame.

Keypoint order (MediaPipe's, checked on real photos by the tests): the
*subject's* right eye, left eye, nose tip, mouth centre, right ear tragion,
left ear tragion.  On an unmirrored camera image the subject's right eye is
on the image's left (smaller x).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_py.models.litert import load_interpreter
from firmware_py.vision.opencv import cv2, warp_source

INPUT_SIZE = 128
NUM_KEYPOINTS = 6

# Keypoint indices, MediaPipe's order (subject's right/left).
RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH, RIGHT_EAR, LEFT_EAR = range(NUM_KEYPOINTS)
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion", "left_ear_tragion")

# SsdAnchorsCalculatorOptions of face_detection_short_range_common.pbtxt.
STRIDES: tuple[int, ...] = (8, 16, 16, 16)
ANCHOR_SPEC = {
    "num_layers": 4,
    "min_scale": 0.1484375,
    "max_scale": 0.75,
    "input_size": INPUT_SIZE,
    "anchor_offset": 0.5,
    "strides": STRIDES,
    "aspect_ratios": (1.0,),
    "interpolated_scale_aspect_ratio": 1.0,
    "fixed_anchor_size": True,
}


def ssd_anchors(
    input_size: int = INPUT_SIZE,
    strides: tuple[int, ...] = STRIDES,
    num_aspect_ratios: int = 1,
    interpolated_scale: bool = True,
    offset: float = 0.5,
) -> np.ndarray:
    """Anchor centres ``(N, 2)`` as (x, y) in [0, 1], in the model's output order.

    MediaPipe's ``SsdAnchorsCalculator`` with ``fixed_anchor_size: true``:
    consecutive layers with the same stride share one feature map, each
    contributing ``len(aspect_ratios)`` (+1 interpolated scale) anchors per
    cell; with fixed size every anchor is 1x1, so only centres matter.
    For BlazeFace short range: 16x16 cells x 2 + 8x8 cells x 6 = 896.
    """
    centres = []
    i = 0
    while i < len(strides):
        j = i
        per_cell = 0
        while j < len(strides) and strides[j] == strides[i]:
            per_cell += num_aspect_ratios + (1 if interpolated_scale else 0)
            j += 1
        cells = int(np.ceil(input_size / strides[i]))
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + offset) / cells, (ys + offset) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True)
class FaceDetection:
    """One detected face, in pixels of the frame given to :meth:`FaceDetector.detect`.

    ``box`` is (x0, y0, x1, y1); ``keypoints`` is ``(6, 2)`` (x, y) in
    MediaPipe's order (see :data:`KEYPOINT_NAMES`); ``score`` is the
    detector's confidence in [0, 1].
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def eye_distance(self) -> float:
        """Distance between the two eye keypoints (eye centres), in pixels."""
        return float(np.hypot(*(self.keypoints[LEFT_EYE] - self.keypoints[RIGHT_EYE])))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a (N,4)`` and ``b (M,4)`` given as x0, y0, x1, y1."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two boxes (x0, y0, x1, y1), in plain Python floats (faster than numpy for a handful)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _weighted_nms(cands: list[tuple[float, list[float]]], iou_threshold: float) -> list[tuple[float, list[float]]]:
    """Weighted NMS on ``(score, row)`` candidates, a row being box corners then values merged with them.

    A face yields a dozen overlapping anchors: plain Python on those few
    rows costs less than numpy's per-call overhead (which, right after a
    model invoke has flushed the caches, is most of the cost).
    """
    order = sorted(cands, key=lambda c: -c[0])  # stable: ties keep anchor order, as MediaPipe
    out = []
    while order:
        best_score, best = order[0]
        members: list[tuple[float, list[float]]] = [order[0]]
        rest: list[tuple[float, list[float]]] = []
        for c in order[1:]:
            (members if box_iou(best, c[1]) > iou_threshold else rest).append(c)
        if len(members) == 1:
            out.append((best_score, best))
        else:
            total = sum(w for w, _ in members)
            merged = [0.0] * len(best)
            for w, r in members:
                for k, v in enumerate(r):
                    merged[k] += w * v
            out.append((best_score, [v / total for v in merged]))
        order = rest
    return out


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression.

    Boxes ``(N,4)``, scores ``(N,)``, keypoints ``(N,K,2)``.  Repeatedly take
    the best remaining box; every remaining box whose IoU with it exceeds
    ``iou_threshold`` (itself included) is merged into one detection whose
    box and keypoints are the score-weighted mean and whose score is the
    best one's.  Returns the merged (boxes, scores, keypoints), best first.
    The loop runs once per *output* face; the IoU work is vectorised.
    """
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, *keypoints.shape[1:]), np.float32)
    n = len(boxes)
    rows = np.concatenate([np.asarray(boxes, np.float64).reshape(n, 4), np.asarray(keypoints, np.float64).reshape(n, -1)], axis=1)
    merged = _weighted_nms(list(zip(np.asarray(scores, np.float64).tolist(), rows.tolist(), strict=True)), iou_threshold)
    m = np.array([r for _, r in merged], np.float32)
    return m[:, :4], np.array([sc for sc, _ in merged], np.float32), m[:, 4:].reshape(len(m), *keypoints.shape[1:])


@dataclass(frozen=True)
class _Letterbox:
    """Precomputed sampling of one frame shape into the model's input square (see ``FaceDetector._plan``)."""

    nw: int
    nh: int
    px: int
    py: int
    scale: np.ndarray  # (x, y): frame pixels -> input pixels
    offset: np.ndarray  # (x, y): letterbox padding in input pixels
    borders: tuple[tuple[slice, slice], ...]  # the non-empty black bands around the image, as (rows, columns)
    # Where each input pixel samples the frame: the centre of its 2x2 block, as an affine map when the
    # blocks are evenly spaced (640x480 and other camera modes), else as OpenCV's fixed-point remap tables.
    affine: np.ndarray | None
    maps: tuple[np.ndarray, np.ndarray] | None
    small: np.ndarray  # (nh, nw, bytes per pixel) uint8: the sampled frame
    rgb: np.ndarray  # (nh, nw, 3) uint8: its RGB bytes (RGBX frames)
    flat: np.ndarray  # (nh, nw, 3) float32: the scaled input when the box is not contiguous in the tensor


def _even_step(idx: np.ndarray) -> int | None:
    """The step of ``idx`` when it is evenly spaced (an affine map reproduces it), else ``None``."""
    if len(idx) == 1:
        return 1
    step = int(idx[1] - idx[0])
    return step if step > 0 and np.array_equal(idx, idx[0] + step * np.arange(len(idx))) else None


# The detector's input scaling, byte -> [-1, 1] (float32 as the model takes it), applied by one table lookup.
_INPUT_LUT = (np.arange(256, dtype=np.float32) * np.float32(2 / 255) - np.float32(1)).reshape(1, 256)


class FaceDetector:
    """BlazeFace short-range face detector.

    :param model_path: the ``blazeface_short_range`` TFLite file (use
        ``load_manifest().require("blazeface_short_range", models_dir)``).
    :param min_face_px: faces whose box is narrower than this many pixels of
        the original frame are dropped (too far away to recognise).
    :param score_threshold: minimum detection confidence (MediaPipe: 0.5).
    :param nms_iou: IoU above which overlapping boxes are merged (MediaPipe: 0.3).
    :param max_faces: keep at most this many faces (largest first); 0 = all.
    :param threads: LiteRT interpreter threads.

    After each :meth:`detect`, :attr:`last_invoke_ms` holds the time spent in
    the model itself and :attr:`last_ms` the whole call.
    """

    def __init__(
        self,
        model_path: Path | str,
        *,
        min_face_px: float = 40.0,
        score_threshold: float = 0.5,
        nms_iou: float = 0.3,
        max_faces: int = 0,
        threads: int = 1,
    ) -> None:
        self.path = Path(model_path)
        self.min_face_px = float(min_face_px)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_faces = int(max_faces)
        self._interp = load_interpreter(self.path, threads)
        (inp,) = self._interp.get_input_details()
        outs = {d["name"]: d for d in self._interp.get_output_details()}
        if tuple(inp["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"{self.path}: not a 128x128 BlazeFace model (input {inp['shape']})")
        by_shape = {int(d["shape"][-1]): d for d in outs.values()}
        if set(by_shape) != {16, 1}:
            raise ValueError(f"{self.path}: expected outputs [1,896,16] and [1,896,1], got {[list(d['shape']) for d in outs.values()]}")
        self._in_index = inp["index"]
        self._reg_index = by_shape[16]["index"]
        self._cls_index = by_shape[1]["index"]
        self._anchors = ssd_anchors()
        n = int(by_shape[16]["shape"][1])
        if n != len(self._anchors):
            raise ValueError(f"{self.path}: {n} boxes, but the short-range anchor layout has {len(self._anchors)}")
        # Logit threshold: sigmoid(x) >= t  <=>  x >= logit(t): only anchors that pass are decoded.
        t = min(max(self.score_threshold, 1e-6), 1 - 1e-6)
        self._logit_threshold = np.float32(np.log(t / (1 - t)))
        self._anchor_px: list[list[float]] = (self._anchors * INPUT_SIZE).tolist()
        self._input = np.full((1, INPUT_SIZE, INPUT_SIZE, 3), -1.0, np.float32)  # for _letterbox (tests, tools)
        self._plans: dict[tuple[int, int, int], _Letterbox] = {}
        self._input_shape = (0, 0)
        self.last_invoke_ms = 0.0
        self.last_ms = 0.0

    def _plan(self, h: int, w: int, ch: int = 3) -> _Letterbox:
        """How an (h, w) frame of ``ch`` bytes per pixel is letterboxed into the input square (computed once per frame shape).

        Each input pixel is the mean of the 2x2 frame pixels around its
        sample point, rounded to a byte: MediaPipe samples bilinearly without
        a pre-filter, which aliases when shrinking a 640x480 frame 5x; the
        2x2 mean is a cheap partial anti-alias (exact for the 2x shrink of a
        250 px photo).  OpenCV's bilinear warp sampled at the centre of each
        block computes exactly that mean (weights of one half are exact in
        its fixed point; it rounds half up), reading only the two rows and
        columns of each block from the frame in place, RGB or RGBX alike.
        """
        plan = self._plans.get((h, w, ch))
        if plan is not None:
            return plan
        scale = INPUT_SIZE / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        # Top-left of the 2x2 block centred on each output pixel's sample point; the block's centre is
        # half a pixel further (a 1-pixel side has no second row or column: its pixel itself).
        ys = np.clip(np.floor((np.arange(nh) + 0.5) * (h / nh) - 1.0).astype(np.intp), 0, max(h - 2, 0))
        xs = np.clip(np.floor((np.arange(nw) + 0.5) * (w / nw) - 1.0).astype(np.intp), 0, max(w - 2, 0))
        cy, cx = ys + (0.5 if h > 1 else 0.0), xs + (0.5 if w > 1 else 0.0)
        sx, sy = _even_step(xs), _even_step(ys)
        affine: np.ndarray | None = None
        maps: tuple[np.ndarray, np.ndarray] | None = None
        if sx is not None and sy is not None:
            affine = np.array([[sx, 0.0, cx[0]], [0.0, sy, cy[0]]], np.float64)
        else:
            mx, my = np.meshgrid(cx.astype(np.float32), cy.astype(np.float32))
            m1, m2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
            maps = (m1, m2)
        px, py = (INPUT_SIZE - nw) // 2, (INPUT_SIZE - nh) // 2
        plan = _Letterbox(
            nw=nw,
            nh=nh,
            px=px,
            py=py,
            scale=np.array([nw / w, nh / h], np.float32),
            offset=np.array([px, py], np.float32),
            borders=tuple(
                (r, c)
                for r, c in (
                    (slice(0, py), slice(None)),
                    (slice(py + nh, INPUT_SIZE), slice(None)),
                    (slice(py, py + nh), slice(0, px)),
                    (slice(py, py + nh), slice(px + nw, INPUT_SIZE)),
                )
                if r.stop > r.start and (c.stop is None or c.stop > c.start)
            ),
            affine=affine,
            maps=maps,
            small=np.empty((nh, nw, ch), np.uint8),
            rgb=np.empty((nh, nw, 3), np.uint8),
            flat=np.empty((nh, nw, 3), np.float32),
        )
        if len(self._plans) >= 4:  # a camera has one mode; photos of many sizes must not grow this
            self._plans.clear()
        self._plans[(h, w, ch)] = plan
        return plan

    def _fill(self, image: np.ndarray, x: np.ndarray, borders: bool) -> _Letterbox:
        """Write the letterboxed ``image`` into the model input ``x`` (1,128,128,3), in [-1,1]; ``borders``: redraw the black bands."""
        src = warp_source(image)
        h, w, ch = src.shape
        p = self._plan(h, w, ch)
        if borders:
            for band in p.borders:
                x[0][band] = -1.0  # black (-1 after scaling)
        if p.affine is not None:
            cv2.warpAffine(src, p.affine, (p.nw, p.nh), dst=p.small, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        else:
            assert p.maps is not None
            cv2.remap(src, p.maps[0], p.maps[1], cv2.INTER_LINEAR, dst=p.small, borderMode=cv2.BORDER_REPLICATE)
        rgb = cv2.cvtColor(p.small, cv2.COLOR_RGBA2RGB, dst=p.rgb) if ch == 4 else p.small
        box = x[0, p.py : p.py + p.nh, p.px : p.px + p.nw]
        if box.flags.c_contiguous:  # a landscape frame: its rows fill the tensor's rows
            cv2.LUT(rgb, _INPUT_LUT, dst=box)
        else:
            box[...] = cv2.LUT(rgb, _INPUT_LUT, dst=p.flat)
        return p

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model input (1,128,128,3) in [-1,1] (a persistent array), and the (x, y) scale and padding that undo it."""
        h, w = image.shape[:2]
        p = self._fill(image, self._input, self._input_shape != (h, w))
        self._input_shape = (h, w)
        return self._input, p.scale, p.offset

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Faces in an RGB ``(H, W, 3)`` or RGBX ``(H, W, 4)`` uint8 image (a frame's ``pixels``), largest first."""
        t0 = time.perf_counter()
        # Written straight into the interpreter's input tensor (no 196 KB copy by set_tensor); the view
        # is released before invoke, as LiteRT requires, and the bands redrawn every time (cheap slices).
        inp = self._interp.tensor(self._in_index)()
        try:
            p = self._fill(image, inp, True)
        finally:
            del inp
        scale, offset = p.scale, p.offset
        t1 = time.perf_counter()
        self._interp.invoke()
        self.last_invoke_ms = (time.perf_counter() - t1) * 1000
        # Only the anchors whose raw logit passes are decoded, in plain Python: a face passes about a
        # dozen, and numpy's per-call cost right after an invoke exceeds the arithmetic on so few.
        # Views of the outputs: only the passing rows are copied (LiteRT refuses to invoke while a view
        # of its tensors is alive, so both are released before anything can fail).
        cls, regs = self._interp.tensor(self._cls_index)(), self._interp.tensor(self._reg_index)()
        try:
            keep = np.flatnonzero(cls.reshape(-1) >= self._logit_threshold)
            lgs = cls.reshape(-1)[keep].tolist()
            raws = regs[0, keep].tolist()
        finally:
            del cls, regs
        if not raws:
            self.last_ms = (time.perf_counter() - t0) * 1000
            return []
        cands = []
        for i, lg, r in zip(keep.tolist(), lgs, raws, strict=True):
            # reverse_output_order: x, y, w, h; offsets in input pixels (x_scale = 128, anchor size 1).
            ax, ay = self._anchor_px[i]
            cx, cy, hw, hh = r[0] + ax, r[1] + ay, r[2] / 2, r[3] / 2
            row = [cx - hw, cy - hh, cx + hw, cy + hh]
            for k in range(4, 4 + 2 * NUM_KEYPOINTS, 2):
                row += (r[k] + ax, r[k + 1] + ay)
            cands.append((1 / (1 + math.exp(-min(max(lg, -100.0), 100.0))), row))
        # Undo the letterbox: input pixels -> frame pixels (boxes and keypoints are all (x, y) pairs).
        sx, sy = scale.tolist()
        ox, oy = offset.tolist()
        out = []
        for sc, row in _weighted_nms(cands, self.nms_iou):
            xy = [(row[k] - ox) / sx if k % 2 == 0 else (row[k] - oy) / sy for k in range(len(row))]
            if xy[2] - xy[0] >= self.min_face_px:
                kps = np.array(xy[4:], np.float32).reshape(NUM_KEYPOINTS, 2)
                out.append(FaceDetection(box=(xy[0], xy[1], xy[2], xy[3]), score=sc, keypoints=kps))
        if len(out) > 1:
            out.sort(key=lambda d: d.area, reverse=True)
        if self.max_faces:
            out = out[: self.max_faces]
        self.last_ms = (time.perf_counter() - t0) * 1000
        return out
