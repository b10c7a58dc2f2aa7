"""Face detectors behind one small interface: ``detect(image_bgr) -> (boxes, scores)``.

``boxes`` is ``(N, 4)`` float32 ``x0, y0, x1, y1`` in source-image pixels, ``scores`` is ``(N,)``
float32 in 0..1, both sorted by box area, largest (most prominent) face first.

The boxes are *landmark-bbox equivalent*: each detector's raw box is mapped, by a fixed
per-detector calibration, onto the box that the 68 landmarks of that face would span. The
Predictor crops around the box it is given (``crop.CROP_SCALE``), the convention its training crops follow, and
the tracker compares detector boxes with landmark boxes by IoU; both need the same convention.
The calibrations were measured on the 300-W AFW images (median over matched faces, see
``_HAAR_CAL`` and friends); they are fixed constants, no data is read at run time.

Detectors:
- ``blaze`` (default): MediaPipe BlazeFace short-range on LiteRT, see ``blazeface.py``; finds
  faces from ~32 px in a 640x480 frame on one thread (Haar: ~48-80 px).
- ``haar``: OpenCV's frontal-face Haar cascade shipped in ``cv2.data`` (opencv < 5),
  run on a grey copy downscaled to ``max_side`` pixels (320: 40-55 ms on astronaut() on this
  2-core CPU; 400 px with scale step 1.1 took 140 ms and found a false face in the suit).
- ``dlib``: dlib's HOG detector (pip ``dlib-bin`` or ``dlib``), optional import.
- ``yunet``: ``cv2.FaceDetectorYN`` with a user-supplied ONNX model file (no wheel ships one).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from emodan_ros.faces.boxes import sort_by_area

DETECTOR_NAMES = ("blaze", "haar", "dlib", "yunet")

# ``max_side`` 0 (the settings' default) means each detector's own working size (blaze's 0: sized to
# the frame, ``blazeface.auto_fine_side``):
DEFAULT_MAX_SIDE = {"blaze": 0, "haar": 320, "dlib": 320, "yunet": 320}


class DetectorError(RuntimeError):
    """A detector cannot be created (missing dependency, model file or cascade)."""


class FaceDetector(Protocol):
    """What the pipeline needs from a detector."""

    name: str

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(boxes (N,4) float32 xyxy, scores (N,) float32)``, largest face first."""
        ...


@dataclass(frozen=True)
class BoxCalibration:
    """Maps a detector's raw box onto the landmark bbox: centre shift and size scale.

    ``cx' = cx + dx * w``, ``cy' = cy + dy * h``, ``w' = sw * w``, ``h' = sh * h``.
    """

    dx: float = 0.0
    dy: float = 0.0
    sw: float = 1.0
    sh: float = 1.0

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        """Calibrated copy of ``boxes`` (N,4) xyxy."""
        if len(boxes) == 0:
            return np.zeros((0, 4), np.float32)
        b = np.asarray(boxes, np.float32)
        w = b[:, 2] - b[:, 0]
        h = b[:, 3] - b[:, 1]
        cx = (b[:, 0] + b[:, 2]) / 2 + self.dx * w
        cy = (b[:, 1] + b[:, 3]) / 2 + self.dy * h
        hw = self.sw * w / 2
        hh = self.sh * h / 2
        return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1).astype(np.float32)


# Medians over the AFW faces each detector found (raw box IoU with the landmark bbox > 0.3;
# Haar 144 faces, dlib 161): Haar's box sits high (forehead in, chin out) and is wider than the
# jaw line; dlib's is close to the landmark bbox. YuNet was not calibrated (its model file is not
# available here): its box is used as it comes.
_HAAR_CAL = BoxCalibration(dx=0.0, dy=0.153, sw=0.909, sh=0.899)
_DLIB_CAL = BoxCalibration(dx=0.016, dy=0.059, sw=1.007, sh=0.944)
_YUNET_CAL = BoxCalibration()


def _downscale_factor(shape: tuple[int, ...], max_side: int) -> float:
    """Factor (<= 1) that brings the longer side to ``max_side`` pixels (0 = no scaling)."""
    side = max(shape[0], shape[1])
    if max_side <= 0 or side <= max_side:
        return 1.0
    return max_side / side


def check_image(image_bgr: np.ndarray) -> None:
    """Every detector's input contract: HxWx3 uint8 BGR, else a ValueError that says what came."""
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {getattr(image_bgr, 'shape', None)}")
    if image_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image_bgr.dtype}")


class HaarDetector:
    """OpenCV frontal-face Haar cascade on a downscaled grey image.

    Score: the cascade's neighbour count ``n`` (how many overlapping windows voted for the face)
    mapped to 0..1 as ``n / (n + min_neighbors)``; it only orders faces, it is no probability.
    """

    name = "haar"

    def __init__(
        self,
        max_side: int = 320,
        scale_factor: float = 1.2,
        min_neighbors: int = 5,
        min_face_fraction: float = 0.08,
        cascade_path: str | None = None,
    ) -> None:
        import cv2

        if cascade_path is None:
            data = getattr(cv2, "data", None)
            base = getattr(data, "haarcascades", "") if data is not None else ""
            cascade_path = os.path.join(base, "haarcascade_frontalface_default.xml")
        if not os.path.isfile(cascade_path):
            raise DetectorError(
                f"Haar cascade not found at {cascade_path!r}: OpenCV >= 5 wheels ship no cascades; "
                "install opencv-python-headless<5 (as `make setup` does) or choose detector 'dlib'/'yunet'"
            )
        self._cascade = cv2.CascadeClassifier(cascade_path)
        if self._cascade.empty():
            raise DetectorError(f"cannot load Haar cascade {cascade_path!r}")
        self._cv2 = cv2
        self.max_side = int(max_side)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_face_fraction = float(min_face_fraction)

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_image(image_bgr)
        cv2 = self._cv2
        f = _downscale_factor(image_bgr.shape, self.max_side)
        small = image_bgr if f == 1.0 else cv2.resize(
            image_bgr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        min_px = max(12, int(round(self.min_face_fraction * min(grey.shape[:2]))))
        rects, neighbours = self._cascade.detectMultiScale2(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_px, min_px))
        if len(rects) == 0:
            return sort_by_area(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))
        r = np.asarray(rects, np.float32).reshape(-1, 4) / f
        boxes = np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], axis=1)
        n = np.asarray(neighbours, np.float32).reshape(-1)
        scores = n / (n + max(self.min_neighbors, 1))
        return sort_by_area(_HAAR_CAL.apply(boxes), scores)


class DlibDetector:
    """dlib's HOG + linear SVM frontal face detector (optional dependency).

    Score: the SVM margin ``m`` mapped to 0..1 by a logistic ``1 / (1 + exp(-m))``.
    """

    name = "dlib"

    def __init__(self, max_side: int = 320, upsample: int = 0, threshold: float = 0.0) -> None:
        try:
            import dlib  # type: ignore[import-not-found]
        except ImportError as exc:
            raise DetectorError(
                "detector 'dlib' needs the dlib Python module: `pip install dlib-bin` "
                "(or choose detector 'haar')") from exc
        self._detector = dlib.get_frontal_face_detector()
        self.max_side = int(max_side)
        self.upsample = int(upsample)
        self.threshold = float(threshold)

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        check_image(image_bgr)
        f = _downscale_factor(image_bgr.shape, self.max_side)
        small = image_bgr if f == 1.0 else cv2.resize(
            image_bgr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        rgb = np.ascontiguousarray(small[:, :, ::-1])
        rects, margins, _ = self._detector.run(rgb, self.upsample, self.threshold)
        if len(rects) == 0:
            return sort_by_area(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects],
                         np.float32) / f
        scores = np.array([1.0 / (1.0 + math.exp(-m)) for m in margins], np.float32)
        return sort_by_area(_DLIB_CAL.apply(boxes), scores)


class YuNetDetector:
    """OpenCV's YuNet CNN detector (``cv2.FaceDetectorYN``); needs its ONNX model file."""

    name = "yunet"

    def __init__(self, model_path: str, max_side: int = 320, score_threshold: float = 0.7,
                 nms_threshold: float = 0.3, top_k: int = 100) -> None:
        import cv2

        if not model_path or not os.path.isfile(model_path):
            raise DetectorError(
                f"detector 'yunet' needs its ONNX model file (parameter detector_model_path); "
                f"{model_path!r} does not exist (get face_detection_yunet_2023mar.onnx from opencv_zoo)")
        if not hasattr(cv2, "FaceDetectorYN"):
            raise DetectorError("this OpenCV build has no cv2.FaceDetectorYN (needs OpenCV >= 4.5.4)")
        self._det = cv2.FaceDetectorYN.create(model_path, "", (320, 320), float(score_threshold),
                                              float(nms_threshold), int(top_k))
        self._cv2 = cv2
        self.max_side = int(max_side)

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cv2 = self._cv2
        check_image(image_bgr)
        f = _downscale_factor(image_bgr.shape, self.max_side)
        small = image_bgr if f == 1.0 else cv2.resize(
            image_bgr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        self._det.setInputSize((small.shape[1], small.shape[0]))
        _, faces = self._det.detect(small)
        if faces is None or len(faces) == 0:
            return sort_by_area(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))
        faces = np.asarray(faces, np.float32)
        boxes = np.stack([faces[:, 0], faces[:, 1], faces[:, 0] + faces[:, 2],
                          faces[:, 1] + faces[:, 3]], axis=1) / f
        return sort_by_area(_YUNET_CAL.apply(boxes), faces[:, -1])


def make_detector(name: str, *, max_side: int = 0, model_path: str = "",
                  min_face_fraction: float = 0.08) -> FaceDetector:
    """Create the detector called ``name`` (one of ``DETECTOR_NAMES``).

    ``max_side``: the longer side the detector works at (blaze: its fine pass); 0 takes
    ``DEFAULT_MAX_SIDE[name]``. ``model_path``: yunet's ONNX file, or another BlazeFace
    short-range .tflite for blaze (empty: the shipped one). ``min_face_fraction``: haar only.
    """
    if name not in DETECTOR_NAMES:
        raise DetectorError(f"unknown detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}")
    side = int(max_side) if max_side > 0 else DEFAULT_MAX_SIDE[name]
    if name == "blaze":
        from emodan_ros.faces.blazeface import BlazeFaceDetector

        return BlazeFaceDetector(fine_side=side, model_path=model_path or None)
    if name == "haar":
        return HaarDetector(max_side=side, min_face_fraction=min_face_fraction)
    if name == "dlib":
        return DlibDetector(max_side=side)
    return YuNetDetector(model_path, max_side=side)
