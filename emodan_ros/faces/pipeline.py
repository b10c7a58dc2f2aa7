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

With ``detect_async`` (the node's default) the detector runs on its own thread
(:mod:`emodan_ros.faces.async_detect`) and no followed face waits for it: its boxes, which are
for a past frame, confirm the current faces or add new ones (one detector period late) when they
arrive; a face they do not confirm, or whose appearance check fails, is not reported and a fresh
detection is asked for; and boxes for frames before such a loss are thrown away, so a face that
left cannot come back from an old detection. Only when nobody is followed does a frame wait for
the detector (nothing else would be reported anyway, and a face is then found on the frame it
appears in, not one period later), and on an empty scene only as often as ``idle_detector_share``
allows: the frames between are answered at once, with no face, so that an empty scene neither
takes a whole core nor queues frames where the detector is slower than the camera. Offline
evaluation uses the synchronous mode, which gives the same answer for the same frames whatever the
machine's speed.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from emodan_ros.faces.appearance import patch, similarity
from emodan_ros.faces.async_detect import AsyncDetector, Detection, clean_detections, match_detections
from emodan_ros.faces.crop import box_from_landmarks
from emodan_ros.faces.detector import FaceDetector
from emodan_ros.faces.boxes import MIN_BOX_SIDE, inside_fraction, iou_matrix
from emodan_ros.faces.config import PipelineConfig
from emodan_ros.faces.head_pose import HeadPose
from emodan_ros.faces.tracker import FaceTracker

# A box must keep this share of its area inside the image to be followed further.
MIN_INSIDE_FRACTION = 0.5
# Two followed faces overlapping this much are one face that two tracks converged on.
DUPLICATE_IOU = 0.6
# Faces reported on frames sent to the detector, kept for this many frames (a newer one replaces a waiting one).
MAX_SEEN = 8
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
    detector_errors: int = 0  # detections that raised (either thread); the frame went on without boxes
    stale_detections: int = 0  # async detections thrown away: for a frame before a face was lost
    idle_unsearched: int = 0  # frames with nobody to follow answered without a detection (idle_detector_share)


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
        self.detections = AsyncDetector(detector)  # its thread starts with the first async detection
        self._valid_from = 0  # async detections for frames before this one are stale
        self._seen: dict[int, tuple[list[int], np.ndarray]] = {}  # frame sent to the detector -> its faces
        self._idle_next = 0.0  # monotonic time from which a frame with nobody to follow may wait for the detector
        self._closer = weakref.finalize(self, self.detections.close)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.predictor.class_names)

    def configure(self, **changes: Any) -> None:
        """Change settings (validated: a bad value raises ValueError and changes nothing).

        Not thread-safe against :meth:`process`: callers on other threads apply changes between
        frames (the node queues them for its worker).
        """
        config = self.config.replace(**changes)
        if config.detect_async != self.config.detect_async:
            self.detections.discard()  # what the other mode asked for belongs to the past
            self._valid_from = self.counters.frames + 1
            self._need_detect = True
        self.config = config
        self.tracker.iou_threshold = config.iou_threshold
        self.tracker.max_missed = config.max_missed
        self.tracker.smoothing = config.smoothing

    def reset(self) -> None:
        """Forget all faces (e.g. the stream jumped: bag loop, camera switch)."""
        self.tracker.reset()
        self._need_detect = True
        self._since_detect = 0
        self.detections.discard()
        self._valid_from = self.counters.frames + 1
        self._seen.clear()
        self._idle_next = 0.0

    def close(self) -> None:
        """Stop the detector's thread (also done when the pipeline is garbage-collected or at exit).

        The pipeline still answers afterwards, but in the detect_async mode it then detects only on
        frames with nobody to follow.
        """
        self._closer()

    def __enter__(self) -> EmotionPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _followed(self, width: int, height: int) -> tuple[np.ndarray, list[np.ndarray | None], list[int]]:
        """Boxes of the faces seen last frame, minus those gone out of view or merged, their last patches and ids."""
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
        return boxes[keep], [tracks[i].appearance for i in keep], [tracks[i].face_id for i in keep]

    def _result_box(self, box: np.ndarray, landmarks: np.ndarray, quality: float) -> tuple[np.ndarray, bool]:
        """This frame's box of a face: its landmark bbox when the landmarks are trusted, else the model's box."""
        lm_box = box_from_landmarks(landmarks).astype(np.float32)
        trusted = quality >= self.config.min_quality and min(lm_box[2] - lm_box[0], lm_box[3] - lm_box[1]) >= MIN_BOX_SIDE
        return (lm_box if trusted else np.asarray(box, np.float32).copy()), trusted

    def _gone(self, image_bgr: np.ndarray, boxes: np.ndarray, appearances: list[np.ndarray | None],
              out: Any) -> np.ndarray:
        """Which followed faces are gone: the patch at their new box no longer looks like the last one."""
        gone = np.zeros(len(appearances), bool)
        for i, before in enumerate(appearances):
            box, _ = self._result_box(boxes[i], out.landmarks[i], float(out.quality[i]))
            gone[i] = similarity(before, image_bgr, box) < MIN_SIMILARITY
        return gone

    def _detect(self, image_bgr: np.ndarray, followed: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """Detector boxes and scores, and whether some followed face was not confirmed by them."""
        try:
            if self.config.detect_async:  # the detector's thread may be using it: take turns
                boxes, scores = self.detections.detect_now(image_bgr)
                self.detections.discard()
                self._valid_from = self.counters.frames
            else:
                boxes, scores = clean_detections(*self.detector.detect(image_bgr))
        except Exception as exc:  # a broken detector must not cost the frame: no boxes, counted, named
            self.counters.detector_errors += 1
            self.detections.last_error = f"{type(exc).__name__}: {exc}"
            boxes, scores = clean_detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        self.counters.detector_calls += 1
        self._since_detect = 0
        unconfirmed = False
        if len(followed):
            overlap = iou_matrix(followed, boxes)
            confirmed = overlap.max(axis=1) >= self.tracker.iou_threshold if overlap.size else \
                np.zeros(len(followed), bool)
            unconfirmed = not bool(confirmed.all())
        return boxes, scores, unconfirmed

    def _cap(self, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """At most ``max_faces`` boxes (counted when some are left out)."""
        if len(boxes) > self.config.max_faces:
            self.counters.capped_frames += 1
            self.counters.capped_faces += len(boxes) - self.config.max_faces
        return boxes[: self.config.max_faces], scores[: self.config.max_faces]

    def _report(self, image_bgr: np.ndarray, ids: list[int], boxes: np.ndarray, scores: np.ndarray,
                out: Any, rows: np.ndarray | None = None) -> list[FaceResult]:
        """One result per tracked box from the model's output (``rows``: which of its rows, default all)."""
        rows = np.arange(len(boxes)) if rows is None else rows
        landmarks = np.asarray(out.landmarks, np.float32)[rows]
        probs = np.asarray(out.probs, np.float32)[rows]
        quality = np.asarray(out.quality, np.float32).reshape(-1)[rows]
        results: list[FaceResult] = []
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
        return results

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
        followed, appearances, ids = self._followed(width, height)
        if self.config.detect_async:  # caps (and counts) followed and new faces together
            results = self._process_async(image_bgr, followed, appearances, ids)
        else:
            n = self.config.max_faces
            results = self._process_sync(image_bgr, followed[:n], appearances[:n])
        self.counters.faces += len(results)
        self.stats.total_ms = (time.perf_counter() - t0) * 1000.0
        return results

    def _process_sync(self, image_bgr: np.ndarray, followed: np.ndarray,
                      appearances: list[np.ndarray | None]) -> list[FaceResult]:
        """A detection frame waits for the detector and uses only its boxes (deterministic)."""
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
            gone = int(self._gone(image_bgr, followed, appearances, out).sum())
            self.counters.rejected_follows += gone
            detect = gone > 0
            self._since_detect += 0 if detect else 1
        if detect:
            out = None
            td = time.perf_counter()
            boxes, scores, unconfirmed = self._detect(image_bgr, followed)
            detect_ms = (time.perf_counter() - td) * 1000.0
        boxes, scores = self._cap(boxes, scores)
        ids = self.tracker.update(boxes, scores)
        self._need_detect = unconfirmed
        results: list[FaceResult] = []
        if len(boxes):
            if out is None:
                tp = time.perf_counter()
                out = self.predictor.predict(image_bgr, boxes)
                predict_ms += (time.perf_counter() - tp) * 1000.0
            results = self._report(image_bgr, ids, boxes, scores, out)
        self.stats = FrameStats(detected=detect, faces=len(results), rejected=gone, detect_ms=detect_ms,
                                predict_ms=predict_ms)
        return results

    def _arrived(self, image_bgr: np.ndarray, followed: np.ndarray,
                 followed_ids: list[int]) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """The detector thread's newest answer applied to this frame.

        The boxes are compared with the faces as they were reported on the frame the detector saw
        (however many frames ago, a moving face is where the detector looked), so a face it missed
        there is refused, and a face it cannot know about (found since) is left alone. A box that
        matches no face of that frame nor any such later face is added (the tracker gives it the
        id of a refused face it lies on: a face the landmarks lost track of is put right) if this
        frame's pixels still match what the detector saw (a face that moved on or left is not
        added at a stale place). A confirmed face's box moves by the detector's correction on that
        frame (``followed`` is changed in place: on a detection the model gets the detector's box,
        as in the synchronous mode, carried along by the motion followed since). Returns
        ``(confirmed, new_boxes, new_scores)``: which followed faces it confirms (None when no
        usable answer came) and the faces it adds.
        """
        none = None, np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        found: Detection | None = self.detections.poll()
        if found is None:
            return none
        if found.error is not None:
            self.counters.detector_errors += 1
            self._need_detect = True
            return none
        if found.frame < self._valid_from:
            self.counters.stale_detections += 1
            return none
        self.counters.detector_calls += 1
        seen_ids, seen_boxes = self._seen.pop(found.frame, ([], np.zeros((0, 4), np.float32)))
        for frame in [f for f in self._seen if f < found.frame]:
            del self._seen[frame]
        match, rest = match_detections(seen_boxes, found.boxes, self.tracker.iou_threshold)
        where = {face_id: (seen_boxes[i], found.boxes[match[i]]) for i, face_id in enumerate(seen_ids)
                 if match[i] >= 0}
        confirmed = np.ones(len(followed_ids), bool)
        for i, face_id in enumerate(followed_ids):
            if face_id in where:  # the detector's correction of that frame's box, carried to this frame
                before, detected = where[face_id]
                followed[i] = followed[i] + (detected - before)
            elif face_id in seen_ids:
                confirmed[i] = False
        unknown = np.array([face_id not in seen_ids for face_id in followed_ids], bool).reshape(-1)
        _, rest_new = match_detections(followed[unknown], found.boxes[rest], self.tracker.iou_threshold)
        new = [j for j in (rest[k] for k in rest_new)
               if similarity(found.patches[j], image_bgr, found.boxes[j]) >= MIN_SIMILARITY]
        return confirmed, found.boxes[new], found.scores[new]

    def _process_async(self, image_bgr: np.ndarray, followed: np.ndarray, appearances: list[np.ndarray | None],
                       followed_ids: list[int]) -> list[FaceResult]:
        """Followed faces never wait: detections are asked for here and merged when they arrive."""
        frame = self.counters.frames
        confirmed, new_boxes, new_scores = self._arrived(image_bgr, followed, followed_ids)
        detected = confirmed is not None
        if confirmed is None:
            confirmed = np.ones(len(followed), bool)
        elif not confirmed.all():
            self._need_detect = True  # a missed face costs one detector period, as one frame in sync mode
        kept = np.flatnonzero(confirmed)
        boxes, scores = self._cap(np.concatenate([followed[kept], new_boxes]),
                                  np.concatenate([np.ones(len(kept), np.float32), new_scores]))
        kept = kept[: len(boxes)]
        is_followed = np.arange(len(boxes)) < len(kept)
        detect_ms = predict_ms = 0.0
        out, rows, gone = None, np.arange(len(boxes)), 0
        if len(boxes):
            tp = time.perf_counter()
            out = self.predictor.predict(image_bgr, boxes)
            predict_ms = (time.perf_counter() - tp) * 1000.0
            lost = np.zeros(len(boxes), bool)
            lost[is_followed] = self._gone(image_bgr, boxes[is_followed], [appearances[i] for i in kept],
                                           _Rows(out, np.flatnonzero(is_followed)))
            gone = int(lost.sum())
            if gone:  # not reported; older detections still show the face, so they may not bring it back
                self.counters.rejected_follows += gone
                self._need_detect = True
                self._valid_from = frame
            rows = np.flatnonzero(~lost)
        synced = len(rows) == 0 and time.monotonic() >= self._idle_next
        unsearched = len(rows) == 0 and not synced  # nobody followed, the detector's idle share used up
        self.counters.idle_unsearched += int(unsearched)
        if synced:  # nobody to report in any case: this frame may as well wait for the detector
            td = time.perf_counter()
            boxes, scores = self._cap(*self._detect(image_bgr, followed[:0])[:2])
            detect_ms = (time.perf_counter() - td) * 1000.0
            share = self.config.idle_detector_share
            self._idle_next = time.monotonic() + detect_ms / 1000.0 * (1.0 - share) / share
            detected = True
            self._need_detect = False  # this frame has just been looked at
            rows = np.arange(len(boxes))
            if len(boxes):
                tp = time.perf_counter()
                out = self.predictor.predict(image_bgr, boxes)
                predict_ms += (time.perf_counter() - tp) * 1000.0
        boxes, scores = boxes[rows], scores[rows]
        if len(rows):
            self._idle_next = 0.0  # the first frame after a face leaves is searched at once
        ids = self.tracker.update(boxes, scores)
        results = self._report(image_bgr, ids, boxes, scores, out, rows) if len(boxes) else []
        self._since_detect += 0 if synced else 1
        due = self._need_detect or self._since_detect >= self.config.redetect_every
        if not synced and not unsearched and due:
            self._seen[frame] = ([r.face_id for r in results], np.array([r.box for r in results],
                                                                         np.float32).reshape(-1, 4))
            while len(self._seen) > MAX_SEEN:
                del self._seen[min(self._seen)]
            self.detections.submit(frame, image_bgr)
            self._need_detect = False
            self._since_detect = 0
        self.stats = FrameStats(detected=detected, faces=len(results), rejected=gone, detect_ms=detect_ms,
                                predict_ms=predict_ms)
        return results


class _Rows:
    """Some rows of a model output, for code that indexes ``landmarks[i]`` and ``quality[i]``."""

    def __init__(self, out: Any, rows: np.ndarray) -> None:
        self.landmarks = np.asarray(out.landmarks, np.float32)[rows]
        self.quality = np.asarray(out.quality, np.float32).reshape(-1)[rows]
