"""Face identities across frames and per-face emotion smoothing (pure numpy, no ROS).

A face keeps its id while its box overlaps the box it had last time (greedy IoU matching, best
pairs first) and survives ``max_missed`` frames without a match, so a blink of the detector or a
hand across the face does not make a new person. A face that moved too far for its boxes to
overlap (a fast head movement, a box the landmarks could not follow, a detector box of another
shape after an interruption) is matched in a second pass by centre distance to a track nobody
matched, so one person keeps one id. Probabilities are smoothed per id with an
exponential moving average so a behaviour does not see the emotion flicker frame to frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emodan_ros.faces.boxes import iou_matrix
from emodan_ros.faces.config import PipelineConfig

_DEFAULTS = PipelineConfig()
# Second pass: an unmatched box whose centre is closer than this share of an unmatched track's
# larger side to the track's centre continues that track (neighbouring faces are a side apart).
CENTRE_MATCH = 0.75


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col) with IoU >= threshold, highest first, each row and column used once."""
    pairs: list[tuple[int, int]] = []
    if iou.size == 0:
        return pairs
    rows, cols = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


def centre_closeness(track_boxes: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(tracks, boxes) matrix: 1 - centre distance / the track's larger side where that distance is
    under ``CENTRE_MATCH``, else -1 (for :func:`greedy_match` with threshold 0)."""
    track_boxes = np.asarray(track_boxes, np.float64).reshape(-1, 4)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centres_t = (track_boxes[:, :2] + track_boxes[:, 2:]) / 2
    centres_b = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = np.maximum(track_boxes[:, 2] - track_boxes[:, 0], track_boxes[:, 3] - track_boxes[:, 1])
    distance = np.linalg.norm(centres_t[:, None] - centres_b[None], axis=-1) / np.maximum(side, 1e-6)[:, None]
    return np.where(distance < CENTRE_MATCH, 1.0 - distance, -1.0)


@dataclass
class Track:
    """One face followed over time."""

    face_id: int
    box: np.ndarray
    score: float
    missed: int = 0
    hits: int = 1
    probs: np.ndarray | None = field(default=None, repr=False)
    appearance: np.ndarray | None = field(default=None, repr=False)  # patch where it was last seen


class FaceTracker:
    """Assigns stable ids to face boxes and smooths each id's emotion probabilities.

    ``smoothing`` is the EMA weight of the past (0 = off, 0.9 = slow): ``s = a*s + (1-a)*p``.
    """

    def __init__(self, iou_threshold: float = _DEFAULTS.iou_threshold, max_missed: int = _DEFAULTS.max_missed,
                 smoothing: float = _DEFAULTS.smoothing) -> None:
        checked = PipelineConfig(iou_threshold=iou_threshold, max_missed=max_missed, smoothing=smoothing)
        self.iou_threshold = checked.iou_threshold
        self.max_missed = checked.max_missed
        self.smoothing = checked.smoothing
        self._tracks: dict[int, Track] = {}
        self._next_id = 1
        self.forgotten = 0  # ids dropped after max_missed unseen frames, since start (diagnostics)

    @property
    def tracks(self) -> list[Track]:
        """Live tracks, oldest id first."""
        return [self._tracks[k] for k in sorted(self._tracks)]

    def visible(self) -> list[Track]:
        """Tracks matched in the latest update (the faces to follow in the next frame)."""
        return [t for t in self.tracks if t.missed == 0]

    def reset(self) -> None:
        """Forget every face (ids continue to count up, so an old id never comes back)."""
        self._tracks.clear()

    def update(self, boxes: np.ndarray, scores: np.ndarray | None = None) -> list[int]:
        """Match this frame's boxes to the tracks; return one id per box (new ids for new faces).

        Unmatched tracks age by one frame and are dropped after ``max_missed`` missed frames.
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if scores is None:
            scores = np.ones(len(boxes), np.float32)
        tracks = self.tracks
        iou = iou_matrix(np.array([t.box for t in tracks]).reshape(-1, 4), boxes)
        ids = [0] * len(boxes)
        matched: set[int] = set()
        for r, c in greedy_match(iou, self.iou_threshold):
            t = tracks[r]
            t.box = boxes[c].copy()
            t.score = float(scores[c])
            t.missed = 0
            t.hits += 1
            ids[c] = t.face_id
            matched.add(t.face_id)
        for r, c in self._centre_match(tracks, boxes, matched, ids):
            t = tracks[r]
            t.box, t.score, t.missed = boxes[c].copy(), float(scores[c]), 0
            t.hits += 1
            ids[c] = t.face_id
            matched.add(t.face_id)
        for t in tracks:
            if t.face_id not in matched:
                t.missed += 1
                if t.missed > self.max_missed:
                    del self._tracks[t.face_id]
                    self.forgotten += 1
        for c in range(len(boxes)):
            if ids[c] == 0:
                t = Track(self._next_id, boxes[c].copy(), float(scores[c]))
                self._tracks[t.face_id] = t
                self._next_id += 1
                ids[c] = t.face_id
        return ids

    @staticmethod
    def _centre_match(tracks: list[Track], boxes: np.ndarray, matched: set[int],
                      ids: list[int]) -> list[tuple[int, int]]:
        """(track, box) pairs among the leftovers of the IoU pass whose centres are close, closest first."""
        rows = [r for r, t in enumerate(tracks) if t.face_id not in matched]
        cols = [c for c in range(len(boxes)) if ids[c] == 0]
        if not rows or not cols:
            return []
        closeness = centre_closeness(np.array([tracks[r].box for r in rows]), boxes[cols])
        return [(rows[i], cols[j]) for i, j in greedy_match(closeness, 0.0)]

    def set_box(self, face_id: int, box: np.ndarray) -> None:
        """Move a track to a refined box (the landmark bbox of this frame), used for matching next time."""
        if face_id in self._tracks:
            self._tracks[face_id].box = np.asarray(box, np.float32).copy()

    def set_appearance(self, face_id: int, appearance: np.ndarray | None) -> None:
        """Remember how a face looked where it was seen this frame (checked before following it)."""
        if face_id in self._tracks:
            self._tracks[face_id].appearance = appearance

    def drop(self, face_id: int) -> None:
        """Forget one face now (e.g. its box left the image)."""
        self._tracks.pop(face_id, None)

    def smooth(self, face_id: int, probs: np.ndarray) -> tuple[np.ndarray, bool]:
        """EMA of this id's probabilities; ``(probs, smoothed)``, smoothed False on the first frame or when off."""
        p = np.asarray(probs, np.float32)
        t = self._tracks.get(face_id)
        if t is None or self.smoothing <= 0.0:
            return p, False
        if t.probs is None or t.probs.shape != p.shape:
            t.probs = p.copy()
            return p, False
        s = self.smoothing * t.probs + (1.0 - self.smoothing) * p
        s = s / max(float(s.sum()), 1e-12)
        t.probs = s.astype(np.float32)
        return t.probs.copy(), True
