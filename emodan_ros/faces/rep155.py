"""ROS4HRI (REP 155) fields as plain numbers and strings, without ROS imports.

Why: the node fills hri_msgs messages; keeping the conventions here makes them
testable without ROS. Facts below are from hri_msgs' msg files:

* ``FacialLandmarks.msg``: 70 landmarks, normalised ``[0, 1]`` coordinates from the
  image's top-left, each with a confidence ``c``. Indices 0-67 are the dlib/OpenPose
  68-point order, i.e. iBUG index i -> ROS4HRI index i (identity). RIGHT/LEFT are the
  subject's: RIGHT_EYE_* are 36-41 and LEFT_EYE_* 42-47, so RIGHT_PUPIL (68) is
  estimated from iBUG 36-41 and LEFT_PUPIL (69) from iBUG 42-47.
* ``Expression.msg``: ``expression`` is one of a list of lower-case strings;
  ``valence``/``arousal`` in [-1, 1], ``confidence`` in [0, 1].
* ``NormalizedRegionOfInterest2D.msg``: ``xmin, ymin, xmax, ymax`` in [0, 1], ``c``.
* ``IdsList.msg``: ``string[] ids``, e.g. the currently tracked face ids.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from emodan_ros.faces import ibug68 as ib
from emodan_ros.faces.affect import checked_probs, class_key, valence_arousal

NUM_ROS4HRI_LANDMARKS = 70
RIGHT_PUPIL = 68
LEFT_PUPIL = 69
IBUG_TO_ROS4HRI: tuple[int, ...] = tuple(range(ib.NUM_LANDMARKS))   # identity, see above

# Eye-opening centroids are not iris detections: they miss the pupil whenever the
# gaze is not straight ahead, so they get a reduced confidence.
PUPIL_CONFIDENCE_FACTOR = 0.5

# FER+ class -> Expression.msg constant (exact strings from the msg file). Contempt
# has no counterpart and is never reported as ``expression`` (see top_expression).
EXPRESSION_BY_CLASS: dict[str, str] = {
    "neutral": "neutral",      # NEUTRAL
    "happiness": "happy",      # HAPPY
    "surprise": "surprised",   # SURPRISED
    "sadness": "sad",          # SAD
    "anger": "angry",          # ANGRY
    "disgust": "disgusted",    # DISGUSTED
    "fear": "scared",          # SCARED
}

# Face ids: 5 lower-case letters, a fixed bijective scramble of the track id.
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 5
_ID_SPACE = len(ID_ALPHABET) ** ID_LENGTH          # 11,881,376 ids of 5 letters
_ID_MULT = 7_368_787                               # odd and not a multiple of 13
_ID_OFFSET = 4_711_093
_ID_MULT_INV = pow(_ID_MULT, -1, _ID_SPACE)


@dataclass(frozen=True)
class NormalizedLandmarks:
    """The 70 ROS4HRI landmarks: normalised ``x``, ``y`` and confidence ``c``."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    c: tuple[float, ...]
    width: int
    height: int


@dataclass(frozen=True)
class ExpressionFields:
    """Values for hri_msgs/Expression; ``expression`` is "" when none can be named."""

    expression: str
    valence: float
    arousal: float
    confidence: float


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (x, y) of the subject's right (36-41) and left (42-47) eye contours.

    Our pupil estimate; NaN when any contour point is missing.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(ib.NUM_LANDMARKS, 2)
    return pts[list(ib.RIGHT_EYE)].mean(axis=0), pts[list(ib.LEFT_EYE)].mean(axis=0)


def _point_confidences(confidences: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """(68,) detector confidences clipped to [0, 1]; all ones when not given."""
    if confidences is None:
        return np.ones(ib.NUM_LANDMARKS)
    c = np.asarray(confidences, dtype=np.float64).ravel()
    if c.shape != (ib.NUM_LANDMARKS,):
        raise ValueError(f"need {ib.NUM_LANDMARKS} confidences, got shape {c.shape}")
    return np.clip(np.nan_to_num(c, nan=0.0), 0.0, 1.0)


def ros4hri_landmarks(
    landmarks: np.ndarray,
    width: int,
    height: int,
    confidences: Sequence[float] | np.ndarray | None = None,
) -> NormalizedLandmarks:
    """70 ROS4HRI landmarks from ``(68, 2)`` 0-based pixel landmarks.

    Normalised as ``x / width``, ``y / height``. Missing (NaN) points become
    ``(0, 0)`` with ``c = 0``; points outside the image are clipped into ``[0, 1]``
    with ``c = 0`` since their clipped position is wrong. Pupils are the eye-contour
    centroids with ``c = PUPIL_CONFIDENCE_FACTOR * min(contour confidences)``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    pts = ib.as_landmarks(landmarks)
    if pts is None:
        raise ValueError(f"landmarks must have shape (68, 2), got {np.shape(landmarks)}")
    conf = _point_confidences(confidences)
    right, left = eye_centres(pts)
    eye_conf = [conf[list(eye)].min() * PUPIL_CONFIDENCE_FACTOR
                for eye in (ib.RIGHT_EYE, ib.LEFT_EYE)]
    all_pts = np.empty((NUM_ROS4HRI_LANDMARKS, 2))
    all_pts[list(IBUG_TO_ROS4HRI)] = pts
    all_pts[RIGHT_PUPIL], all_pts[LEFT_PUPIL] = right, left
    all_conf = np.empty(NUM_ROS4HRI_LANDMARKS)
    all_conf[list(IBUG_TO_ROS4HRI)] = conf
    all_conf[[RIGHT_PUPIL, LEFT_PUPIL]] = eye_conf
    norm = all_pts / np.array([width, height], dtype=np.float64)
    missing = ~np.all(np.isfinite(norm), axis=1)
    outside = ~missing & np.any((norm < 0.0) | (norm > 1.0), axis=1)
    norm[missing] = 0.0
    all_conf[missing | outside] = 0.0
    norm = np.clip(norm, 0.0, 1.0)
    return NormalizedLandmarks(
        x=tuple(float(v) for v in norm[:, 0]),
        y=tuple(float(v) for v in norm[:, 1]),
        c=tuple(float(v) for v in all_conf),
        width=int(width),
        height=int(height),
    )


def normalized_roi(
    box: Sequence[float], width: int, height: int, confidence: float = 1.0
) -> tuple[float, float, float, float, float]:
    """``(xmin, ymin, xmax, ymax, c)`` in [0, 1] from a pixel box ``x0, y0, x1, y1``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    b = np.asarray(box, dtype=np.float64).ravel()
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise ValueError(f"box must be 4 finite numbers x0, y0, x1, y1, got {box!r}")
    x0, x1 = sorted((b[0] / width, b[2] / width))
    y0, y1 = sorted((b[1] / height, b[3] / height))
    return _unit(x0), _unit(y0), _unit(x1), _unit(y1), _unit(confidence)


def _unit(value: float) -> float:
    """Clip into [0, 1], the range every normalised hri_msgs field must lie in."""
    return float(min(1.0, max(0.0, value)))


def expression_name(class_name: str) -> str | None:
    """Expression.msg constant for a FER+ class name, None when there is none."""
    return EXPRESSION_BY_CLASS.get(class_key(class_name))


def top_expression(
    probs: Sequence[float] | np.ndarray, class_names: Sequence[str]
) -> tuple[str, float] | None:
    """Most probable class that has an Expression counterpart, with its probability.

    Probabilities are normalised over *all* classes, so mass on classes without a
    counterpart (contempt) is not handed to others: if contempt dominates, the best
    nameable class is reported with its own, lower, confidence. None if no nameable
    class has any probability.
    """
    names = tuple(class_names)
    p = checked_probs(probs, len(names))
    total = float(p.sum())
    if total <= 0.0:
        raise ValueError("probabilities sum to zero")
    best: tuple[str, float] | None = None
    for name, prob in zip(names, p / total):
        expr = expression_name(name)
        if expr is not None and prob > 0.0 and (best is None or prob > best[1]):
            best = (expr, float(prob))
    return best


def expression_fields(
    probs: Sequence[float] | np.ndarray, class_names: Sequence[str]
) -> ExpressionFields:
    """All hri_msgs/Expression values; valence/arousal use every class (affect.py)."""
    valence, arousal = valence_arousal(probs, class_names, ignore_unknown=True)
    top = top_expression(probs, class_names)
    expression, confidence = top if top is not None else ("", 0.0)
    return ExpressionFields(expression, valence, arousal, confidence)


def face_id(track_id: int) -> str:
    """Stable REP 155 face id of an integer track id: 5 random-looking letters.

    ``(track_id * 7368787 + 4711093) mod 26**5`` written in base 26 with digits a-z,
    most significant first; a bijection, so ids below 26**5 never collide. Larger
    track ids append ``track_id // 26**5`` in base 26, keeping ids unique.
    """
    tid = _as_track_id(track_id)
    low, high = tid % _ID_SPACE, tid // _ID_SPACE
    out = _base26((low * _ID_MULT + _ID_OFFSET) % _ID_SPACE, ID_LENGTH)
    return out + (_base26(high, 0) if high else "")


def track_id_from_face_id(fid: str) -> int:
    """Inverse of :func:`face_id`; ValueError for strings it cannot have produced."""
    if len(fid) < ID_LENGTH or any(ch not in ID_ALPHABET for ch in fid):
        raise ValueError(f"not a face id: {fid!r}")
    head, tail = fid[:ID_LENGTH], fid[ID_LENGTH:]
    if tail.startswith(ID_ALPHABET[0]):
        raise ValueError(f"not a face id (leading zero digit in suffix): {fid!r}")
    low = ((_from_base26(head) - _ID_OFFSET) * _ID_MULT_INV) % _ID_SPACE
    return low + (_from_base26(tail) * _ID_SPACE if tail else 0)


def face_ids(track_ids: Iterable[int]) -> list[str]:
    """IdsList ``ids`` for the given track ids, in the given order."""
    return [face_id(t) for t in track_ids]


def _as_track_id(track_id: int) -> int:
    """Non-negative int: numpy ints accepted; bools, floats etc. are a TypeError."""
    if isinstance(track_id, bool):
        raise TypeError("track id must be an integer, not a bool")
    try:
        tid = operator.index(track_id)
    except TypeError as exc:
        raise TypeError(f"track id must be an integer, got {track_id!r}") from exc
    if tid < 0:
        raise ValueError(f"track id must be non-negative, got {tid}")
    return tid


def _base26(value: int, width: int) -> str:
    """``value`` in base 26 (a = 0), left-padded with 'a' to ``width`` digits."""
    digits = []
    while value:
        value, d = divmod(value, len(ID_ALPHABET))
        digits.append(ID_ALPHABET[d])
    return "".join(reversed(digits)).rjust(width, ID_ALPHABET[0])


def _from_base26(text: str) -> int:
    value = 0
    for ch in text:
        value = value * len(ID_ALPHABET) + ID_ALPHABET.index(ch)
    return value
