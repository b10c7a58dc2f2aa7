"""Frame -> faces -> landmarks + emotion, without ROS (used by the node, the bag tools and benchmarks).

Detection is the expensive, jittery step, so it runs only every ``redetect_every`` frames, when
nobody is being followed, or when a face's landmark quality fell below ``min_quality``. In the
frames between, each face is followed by its own landmarks: the landmark bbox of this frame is
the box the model gets in the next one (a face moves little in 1/15 s, and the model's crop has
margin). The detector stays the authority: on a detection frame only its boxes are used, so a
track that drifted off a face dies instead of following the background. A followed face the
detector missed keeps its id for ``max_missed`` frames and triggers another detection at the
next frame, so one detector miss costs one frame, not ``redetect_every`` frames.

The model's landmark quality does not tell when a followed face is gone (it still finds a face
shape in noise or a flat frame), so every followed box is also checked against the pixels where
the face was last seen (:mod:`emodan_ros.faces.appearance`): a box whose content changed beyond
recognition is not followed, and the detector looks at the frame at once instead. A change of
the frame size (another camera mode, a switched stream) forgets every face.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from emodan_ros.faces.appearance import patch, similarity
from emodan_ros.faces.crop import box_from_landmarks
from emodan_ros.faces.detector import FaceDetector
from emodan_ros.faces.boxes import inside_fraction, iou_matrix
from emodan_ros.faces.config import PipelineConfig
from emodan_ros.faces.head_pose import HeadPose
from emodan_ros.faces.tracker import FaceTracker

# Below this size (px) a box gives the model too few pixels to say anything.
MIN_BOX_SIDE = 8.0
# A box must keep this share of its area inside the image to be followed further.
MIN_INSIDE_FRACTION = 0.5
# Two followed faces overlapping this much are one face that two tracks converged on.
DUPLICATE_IOU = 0.6
# A followed face whose last patch matches the frame around its new box less than this is gone (NCC).
MIN_SIMILARITY = 0.5


class PredictorLike(Protocol):
    """The part of ``emodan_ros.model.predictor.Predictor`` the pipeline uses."""

    class_names: tuple[str, ...]

    def predict(self, image_bgr: np.ndarray, boxes: np.ndarray) -> Any: ...


@dataclass
class FaceResult:
    """One face in one frame.

    ``box`` is the landmark bbox of this frame's landmarks (xyxy, px) when the landmarks are
    trusted (quality >= min_quality), else the box the model was given. ``score`` is the
    detector's score when the detector found the box in this frame, 1.0 when the box was
    followed from the previous frame's landmarks (the message convention).
    Coordinates follow the Predictor: OpenCV pixel centres at integer coordinates.
    """

    face_id: int
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    quality: float
    probs: np.ndarray
    smoothed: bool
    head_pose: HeadPose | None = None  # filled by callers that know the camera (the node)


@dataclass
class FrameStats:
    """What happened in the last ``process`` call (for diagnostics and benchmarks)."""

    detected: bool = False
    faces: int = 0
    rejected: int = 0  # followed faces whose box no longer showed them (appearance check)
    detect_ms: float = 0.0
    predict_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class PipelineCounters:
    """Totals since start."""

    frames: int = 0
    detector_calls: int = 0
    faces: int = 0
    capped_frames: int = 0
    capped_faces: int = 0  # faces found but not processed because of max_faces
    rejected_follows: int = 0  # followed faces the appearance check refused
    resets: int = 0  # tracking forgotten because the frame size changed


class EmotionPipeline:
    """Detector + tracker + predictor for a stream of frames of one camera."""

    def __init__(self, predictor: PredictorLike, detector: FaceDetector,
                 config: PipelineConfig = PipelineConfig()) -> None:
        self.predictor = predictor
        self.detector = detector
        self.config = config
        self.tracker = FaceTracker(config.iou_threshold, config.max_missed, config.smoothing)
        self.stats = FrameStats()
        self.counters = PipelineCounters()
        self._since_detect = 0
        self._need_detect = True
        self._frame_size: tuple[int, int] | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.predictor.class_names)

    def configure(self, **changes: Any) -> None:
        """Change settings (validated: a bad value raises ValueError and changes nothing).

        Not thread-safe against :meth:`process`: callers on other threads apply changes between
        frames (the node queues them for its worker).
        """
        config = self.config.replace(**changes)
        self.config = config
        self.tracker.iou_threshold = config.iou_threshold
        self.tracker.max_missed = config.max_missed
        self.tracker.smoothing = config.smoothing

    def reset(self) -> None:
        """Forget all faces (e.g. the stream jumped: bag loop, camera switch)."""
        self.tracker.reset()
        self._need_detect = True
        self._since_detect = 0

    def _followed(self, width: int, height: int) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Boxes of the faces seen last frame, minus those gone out of view or merged, and their last patches."""
        tracks = sorted(self.tracker.visible(), key=lambda t: -t.hits)
        keep: list[int] = []
        boxes = np.array([t.box for t in tracks], np.float32).reshape(-1, 4)
        inside = inside_fraction(boxes, width, height)
        for i, t in enumerate(tracks):
            side = min(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1])
            dup = keep and iou_matrix(boxes[i:i + 1], boxes[keep]).max() > DUPLICATE_IOU
            if inside[i] < MIN_INSIDE_FRACTION or side < MIN_BOX_SIDE or dup:
                self.tracker.drop(t.face_id)
                continue
            keep.append(i)
        return boxes[keep], [tracks[i].appearance for i in keep]

    def _result_box(self, box: np.ndarray, landmarks: np.ndarray, quality: float) -> tuple[np.ndarray, bool]:
        """This frame's box of a face: its landmark bbox when the landmarks are trusted, else the model's box."""
        lm_box = box_from_landmarks(landmarks).astype(np.float32)
        trusted = quality >= self.config.min_quality and min(lm_box[2] - lm_box[0], lm_box[3] - lm_box[1]) >= MIN_BOX_SIDE
        return (lm_box if trusted else np.asarray(box, np.float32).copy()), trusted

    def _still_there(self, image_bgr: np.ndarray, boxes: np.ndarray, appearances: list[np.ndarray | None],
                     out: Any) -> int:
        """How many followed faces are gone: the patch at their new box no longer looks like the last one."""
        gone = 0
        for i, before in enumerate(appearances):
            box, _ = self._result_box(boxes[i], out.landmarks[i], float(out.quality[i]))
            gone += similarity(before, image_bgr, box) < MIN_SIMILARITY
        return gone

    def _detect(self, image_bgr: np.ndarray, followed: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Detector boxes and scores, and whether some followed face was not confirmed by them."""
        boxes, scores = self.detector.detect(image_bgr)
        self.counters.detector_calls += 1
        self._since_detect = 0
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        ok = (np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE)
        boxes, scores = boxes[ok], scores[ok]
        unconfirmed = False
        if len(followed):
            overlap = iou_matrix(followed, boxes)
            confirmed = overlap.max(axis=1) >= self.tracker.iou_threshold if overlap.size else \
                np.zeros(len(followed), bool)
            unconfirmed = not bool(confirmed.all())
        return boxes, scores, unconfirmed

    def process(self, image_bgr: np.ndarray) -> list[FaceResult]:
        """Faces of this frame, at most ``max_faces`` (on detection frames the largest are kept)."""
        t0 = time.perf_counter()
        height, width = image_bgr.shape[:2]
        self.counters.frames += 1
        if self._frame_size != (width, height):
            if self._frame_size is not None:
                self.counters.resets += 1
            self.reset()
            self._frame_size = (width, height)
        followed, appearances = self._followed(width, height)
        followed, appearances = followed[: self.config.max_faces], appearances[: self.config.max_faces]
        detect = self._need_detect or len(followed) == 0 or self._since_detect + 1 >= self.config.redetect_every
        detect_ms = predict_ms = 0.0
        unconfirmed = False
        gone = 0
        out = None
        boxes, scores = followed, np.ones(len(followed), np.float32)
        if not detect:
            tp = time.perf_counter()
            out = self.predictor.predict(image_bgr, followed)
            predict_ms = (time.perf_counter() - tp) * 1000.0
            gone = self._still_there(image_bgr, followed, appearances, out)
            self.counters.rejected_follows += gone
            detect = gone > 0
            self._since_detect += 0 if detect else 1
        if detect:
            out = None
            td = time.perf_counter()
            boxes, scores, unconfirmed = self._detect(image_bgr, followed)
            detect_ms = (time.perf_counter() - td) * 1000.0
        if len(boxes) > self.config.max_faces:
            self.counters.capped_frames += 1
            self.counters.capped_faces += len(boxes) - self.config.max_faces
            boxes, scores = boxes[: self.config.max_faces], scores[: self.config.max_faces]
        ids = self.tracker.update(boxes, scores)
        self._need_detect = unconfirmed
        results: list[FaceResult] = []
        if len(boxes):
            if out is None:
                tp = time.perf_counter()
                out = self.predictor.predict(image_bgr, boxes)
                predict_ms += (time.perf_counter() - tp) * 1000.0
            landmarks = np.asarray(out.landmarks, np.float32)
            probs = np.asarray(out.probs, np.float32)
            quality = np.asarray(out.quality, np.float32).reshape(-1)
            for i, face_id in enumerate(ids):
                box, trusted = self._result_box(boxes[i], landmarks[i], float(quality[i]))
                if trusted:
                    self.tracker.set_box(face_id, box)
                else:
                    self._need_detect = True
                self.tracker.set_appearance(face_id, patch(image_bgr, box))
                p, smoothed = self.tracker.smooth(face_id, probs[i])
                results.append(FaceResult(
                    face_id=int(face_id), box=box, score=float(scores[i]), landmarks=landmarks[i],
                    quality=float(quality[i]), probs=p, smoothed=smoothed))
        self.counters.faces += len(results)
        self.stats = FrameStats(detected=detect, faces=len(results), rejected=gone, detect_ms=detect_ms,
                                predict_ms=predict_ms, total_ms=(time.perf_counter() - t0) * 1000.0)
        return results
