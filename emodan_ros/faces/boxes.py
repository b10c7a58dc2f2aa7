"""Face boxes (xyxy, pixel-centre coordinates): the one IoU and the few box measures everyone shares."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# Below this size (px) a box gives the model too few pixels to say anything.
MIN_BOX_SIDE = 8.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection-over-union of xyxy boxes ``a`` (N,4) and ``b`` (M,4) -> (N,M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of each xyxy box (N,4) -> (N,); inverted boxes count as 0."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def inside_fraction(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Share of each box's area that lies inside the image."""
    if len(boxes) == 0:
        return np.zeros((0,))
    w = np.clip(boxes[:, 2] - boxes[:, 0], 1e-6, None)
    h = np.clip(boxes[:, 3] - boxes[:, 1], 1e-6, None)
    iw = np.clip(np.minimum(boxes[:, 2], width) - np.maximum(boxes[:, 0], 0), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], height) - np.maximum(boxes[:, 1], 0), 0, None)
    return (iw * ih) / (w * h)


def sort_by_area(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest box first, so a ``max_faces`` cap keeps the most prominent faces."""
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = np.argsort(-area, kind="stable")
    return boxes[order].astype(np.float32), scores[order].astype(np.float32)


def best_overlap(boxes: np.ndarray, target: np.ndarray, min_iou: float) -> int | None:
    """Index of the box overlapping ``target`` most, or None when none reaches ``min_iou`` (which
    detection is a given face: a dataset's box, an annotation's landmark box)."""
    if len(boxes) == 0:
        return None
    overlap = iou_matrix(boxes, target)[:, 0]
    best = int(overlap.argmax())
    return best if overlap[best] >= min_iou else None


def largest_face(faces: Sequence[Any]) -> Any:
    """The face with the largest box (results with a ``box``): the one a single-person image is about."""
    return max(faces, key=lambda face: float(box_area(face.box)[0]))
