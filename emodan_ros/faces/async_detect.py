"""The face detector on its own thread, so that followed faces never wait for it.

On a frame where the detector runs in line, that frame's latency is the detector's time plus the
model's (the node measured p90 at 3.7x p50 at 15 fps: every ``redetect_every``-th frame waited).
Here the pipeline hands the detector the newest frame it wants looked at (:meth:`AsyncDetector.submit`,
a frame not yet started is replaced by a newer one) and picks the boxes up when they are ready
(:meth:`AsyncDetector.poll`); in between, the faces it already knows are followed by their
landmarks as before. The boxes therefore belong to a past frame: the pipeline matches them to its
current faces (:func:`match_detections`) and admits a new face only where the frame still shows
what the detector saw there (the appearance patch taken here, on the detector's frame).

A detector exception is not allowed to end the thread or reach the caller's frame: it is counted
(``errors``, ``last_error``) and returned as an empty result with ``error`` set, so the pipeline
asks again and its owner can report it. The thread starts on the first submission, is a daemon
(a process that forgets :meth:`close` still exits), and :meth:`close` stops and joins it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from emodan_ros.faces.appearance import patch
from emodan_ros.faces.boxes import MIN_BOX_SIDE, iou_matrix
from emodan_ros.faces.detector import FaceDetector
from emodan_ros.faces.latest import LatestSlot
from emodan_ros.faces.tracker import centre_closeness, greedy_match


def clean_detections(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Detector output as float32 arrays without boxes too small for the model."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    ok = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE
    return boxes[ok], scores[ok]


@dataclass
class Detection:
    """The detector's answer for one submitted frame (``frame``: the caller's frame number)."""

    frame: int
    boxes: np.ndarray
    scores: np.ndarray
    patches: list[np.ndarray | None] = field(default_factory=list)  # appearance of each box in that frame
    ms: float = 0.0
    error: str | None = None


def match_detections(current: np.ndarray, detected: np.ndarray,
                     iou_threshold: float) -> tuple[np.ndarray, list[int]]:
    """Which detection continues each current box, and the detections left over.

    Same rule as the tracker (IoU first, then centre distance for what moved too far to
    overlap), each box used once. Returns ``(match (N,) int: detection index or -1, unmatched
    detection indices)``.
    """
    current = np.asarray(current, np.float32).reshape(-1, 4)
    detected = np.asarray(detected, np.float32).reshape(-1, 4)
    match = np.full(len(current), -1, np.int64)
    for r, c in greedy_match(iou_matrix(current, detected), iou_threshold):
        match[r] = c
    rows = np.flatnonzero(match < 0)
    cols = [c for c in range(len(detected)) if c not in set(match.tolist())]
    if len(rows) and cols:
        closeness = centre_closeness(current[rows], detected[cols])
        for i, j in greedy_match(closeness, 0.0):
            match[rows[i]] = cols[j]
    used = set(match.tolist())
    return match, [c for c in range(len(detected)) if c not in used]


class AsyncDetector:
    """One detector, one thread, newest frame first (a :class:`LatestSlot` between them).

    Every call into ``detector`` (the thread's and :meth:`detect_now`'s) holds one lock: the
    detectors keep per-instance state (LiteRT interpreters) that must not run twice at once.
    """

    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector
        self.errors = 0
        self.last_error = ""
        self.replaced = 0  # submitted frames a newer one replaced before the detector saw them
        self._detect_lock = threading.Lock()
        self._slot: LatestSlot[tuple[int, np.ndarray]] = LatestSlot()
        self._result_lock = threading.Lock()
        self._result: Detection | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        """Whether the thread runs (it starts with the first submission)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def busy(self) -> bool:
        """A frame is waiting for or inside the detector."""
        return self._slot.busy

    def submit(self, frame: int, image_bgr: np.ndarray) -> None:
        """Ask for detection on this frame (copied: the caller may reuse its buffer)."""
        if self._closed:
            return
        if self._slot.put((frame, np.array(image_bgr, copy=True))):
            self.replaced += 1
        with self._start_lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._work, name="emodan_detector", daemon=True)
                self._thread.start()

    def poll(self) -> Detection | None:
        """The newest finished detection not yet taken, or None; never waits."""
        with self._result_lock:
            result, self._result = self._result, None
            return result

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until the detector has nothing left to do (tests, offline replays); False on timeout."""
        if not self.alive:
            return not self._slot.busy
        return self._slot.wait_idle(timeout)

    def detect_now(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Detect in the caller's thread (after any detection in flight); exceptions reach the caller."""
        with self._detect_lock:
            boxes, scores = self.detector.detect(image_bgr)
        return clean_detections(boxes, scores)

    def discard(self) -> None:
        """Forget the waiting frame and the finished result (the scene they showed is gone)."""
        self._slot.clear()
        with self._result_lock:
            self._result = None

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread (a detection in flight finishes first) and wait for it; idempotent."""
        with self._start_lock:
            self._closed = True
            thread = self._thread
        self._slot.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _work(self) -> None:
        while (item := self._slot.take()) is not None:
            result = self._run(*item)
            with self._result_lock:
                self._result = result
            self._slot.done()

    def _run(self, frame: int, image: np.ndarray) -> Detection:
        t0 = time.perf_counter()
        try:
            with self._detect_lock:
                boxes, scores = self.detector.detect(image)
            boxes, scores = clean_detections(boxes, scores)
            patches = [patch(image, b) for b in boxes]
        except Exception as exc:  # noqa: BLE001 - whatever the detector raises, the thread goes on
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return Detection(frame, np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                             ms=(time.perf_counter() - t0) * 1000.0, error=self.last_error)
        return Detection(frame, boxes, scores, patches, (time.perf_counter() - t0) * 1000.0)
