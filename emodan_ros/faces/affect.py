"""Valence and arousal of a face from its emotion probabilities, via Russell's circumplex.

Why: hri_msgs/Expression carries valence and arousal in [-1, 1] next to the
categorical expression, and our classifier only gives class probabilities. We place
each class at a point of the circumplex (valence = cos(angle), arousal = sin(angle),
angle counter-clockwise from "pleasure" on the valence axis) and take the
probability-weighted mean, which stays inside the unit disk.

Positions are approximate:

* happiness ("happy") 7.8 deg, surprise ("astonished") 69.8 deg, anger ("angry")
  99.0 deg, fear ("afraid") 116.5 deg, sadness ("sad") 207.5 deg: angles of those
  adjectives in J. A. Russell, "A circumplex model of affect", J. Personality and
  Social Psychology 39(6):1161-1178, 1980 (direct circular scaling of 28 affect
  words), as commonly reproduced; check against the paper before relying on the
  decimals.
* neutral: the origin (no pleasure, no activation), by definition of the model.
* disgust (140 deg, radius 1.0) and contempt (155 deg, radius 0.8): Russell's 28
  words include neither; this is our own placement in the unpleasant, moderately
  activated quadrant, contempt milder than disgust. An assumption, not a measurement.

Class names go by FER+ name (see the package's class vocabulary); pass canonical
names, e.g. after ``emodan_ros.faces.classes.canonical_classes``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from emodan_ros.faces.classes import canonical_name


def _polar(angle_deg: float, radius: float = 1.0) -> tuple[float, float]:
    """(valence, arousal) of a circumplex angle, so the table keeps the cited angles."""
    a = math.radians(angle_deg)
    return radius * math.cos(a), radius * math.sin(a)


# (valence, arousal) per FER+ class, each in [-1, 1].
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happiness": _polar(7.8),
    "surprise": _polar(69.8),
    "sadness": _polar(207.5),
    "anger": _polar(99.0),
    "disgust": _polar(140.0),
    "fear": _polar(116.5),
    "contempt": _polar(155.0, 0.8),
}


def class_key(name: str) -> str:
    """Lookup key of a class name: the package's canonical name (aliases such as "happy" resolved)."""
    return canonical_name(str(name))


def checked_probs(probs: Sequence[float] | np.ndarray, n_names: int) -> np.ndarray:
    """1-D finite non-negative float64 vector matching the class tuple, else ValueError.

    Shared with the ROS4HRI export so that both reject the same bad inputs.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"probs must be a non-empty 1-D vector, got shape {p.shape}")
    if p.size != n_names:
        raise ValueError(f"{p.size} probabilities for {n_names} class names")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"probs contain NaN or inf: {p.tolist()}")
    if np.any(p < 0):
        raise ValueError(f"probs must be non-negative (logits passed?): {p.tolist()}")
    return p


def _positions(class_names: Sequence[str], ignore_unknown: bool) -> np.ndarray:
    """(C, 2) circumplex positions by name; NaN rows for unknown names when ignored."""
    names = [class_key(n) for n in class_names]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names: {list(class_names)}")
    unknown = [n for n in names if n not in CIRCUMPLEX]
    if unknown and not ignore_unknown:
        raise ValueError(f"no circumplex position for classes {unknown}; known: {list(CIRCUMPLEX)}")
    return np.array([CIRCUMPLEX.get(n, (math.nan, math.nan)) for n in names], dtype=np.float64)


def valence_arousal(
    probs: Sequence[float] | np.ndarray,
    class_names: Sequence[str],
    ignore_unknown: bool = False,
) -> tuple[float, float]:
    """Probability-weighted circumplex position ``(valence, arousal)``, each in [-1, 1].

    Probabilities are renormalised to sum to 1 (over the known classes), so
    subsets, other orders and unnormalised scores work. Empty, NaN/inf, negative or
    all-zero input, a length mismatch, duplicate or (unless ``ignore_unknown``)
    unknown class names raise ValueError.
    """
    names = tuple(class_names)
    p = checked_probs(probs, len(names))
    pos = _positions(names, ignore_unknown)
    known = ~np.isnan(pos[:, 0])
    total = float(p[known].sum())
    if not known.any() or total <= 0.0:
        raise ValueError(f"no probability mass on known classes: {dict(zip(names, p.tolist()))}")
    va = (p[known] / total) @ pos[known]
    return float(np.clip(va[0], -1.0, 1.0)), float(np.clip(va[1], -1.0, 1.0))
