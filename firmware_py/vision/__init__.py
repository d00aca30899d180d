"""Vision: detection, tracking, landmarks, alignment, quality and the face embedder.

The pipeline's vision half, frame in, aligned chip out:

- :mod:`~firmware_py.vision.detector`: :class:`FaceDetector` (BlazeFace
  short-range) -> :class:`FaceDetection` (box, score, 6 keypoints), nearest first.
- :mod:`~firmware_py.vision.tracker`: :class:`IouTracker` -> :class:`Track`
  (stable ids, ended tracks reported once).
- :mod:`~firmware_py.vision.landmarks`: :class:`FaceMesh` ->
  :class:`FaceLandmarks` (468 points in frame pixels, eye-aspect-ratio and
  dlib-5 point sets for liveness and alignment).
- :mod:`~firmware_py.vision.align`: :func:`align_chip` -> the embedder's
  150x150 chip with dlib's ``get_face_chip`` geometry.
- :mod:`~firmware_py.vision.quality`: :class:`FaceQuality` (size, sharpness,
  pose, exposure) and its reason codes.
- :mod:`~firmware_py.vision.analyzer`: :class:`FaceAnalyzer` runs them all on
  each :class:`~firmware_py.capture.Frame`, with per-stage timings.
- :mod:`~firmware_py.vision.embedder`: the 128-D embedder runner (models package).

Import from the submodules; this package imports nothing heavy itself.
"""
