"""Emotion class vocabularies and mappings between them, always by name.

Datasets and models each carry a tuple of class names; predictions and labels move
between vocabularies only through :func:`class_mapping`, never by index, so that a
FER2013 csv (index 0 = angry) and a FER+ model (index 0 = neutral) cannot be mixed up.

Grouping into Emotional DAN's three classes (neutral, positive, negative):
happiness -> positive; anger, disgust, fear, sadness, contempt -> negative;
neutral -> neutral. Surprise has no fixed valence (it can be pleasant or not); the
Emotional DAN papers give no grouping we could check, so we follow the common
valence split used with FER-style data and put surprise in *positive*, which keeps
every FER+ class mapped so that probabilities still sum to 1 after grouping.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

FERPLUS_CLASSES: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)
# Index order of the `emotion` column of the original fer2013.csv, FER+ vocabulary.
FER2013_CLASSES: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral",
)
EDAN3_CLASSES: tuple[str, ...] = ("neutral", "positive", "negative")

# Other spellings found in folder names and csv files -> FER+ vocabulary.
ALIASES: dict[str, str] = {
    "angry": "anger",
    "happy": "happiness",
    "sad": "sadness",
    "surprised": "surprise",
    "disgusted": "disgust",
    "fearful": "fear",
    "scared": "fear",
    "contemptuous": "contempt",
    "calm": "neutral",
}

# Many-to-one groupings: a source class absent from the destination vocabulary is
# looked up here and mapped to its group when the destination has the group.
GROUPS: dict[str, str] = {
    "neutral": "neutral",
    "happiness": "positive",
    "surprise": "positive",
    "sadness": "negative",
    "anger": "negative",
    "disgust": "negative",
    "fear": "negative",
    "contempt": "negative",
}


def canonical_name(name: str) -> str:
    """Lower-cased, trimmed name with aliases resolved (``"Happy"`` -> ``"happiness"``)."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


def canonical_classes(names: Sequence[str]) -> tuple[str, ...]:
    """Canonical names of a vocabulary; duplicates after aliasing are an error."""
    out = tuple(canonical_name(n) for n in names)
    if len(set(out)) != len(out):
        raise ValueError(f"class names collide after aliasing: {list(names)}")
    return out


def class_mapping(src: Sequence[str], dst: Sequence[str]) -> np.ndarray:
    """Index map from ``src`` classes to ``dst`` classes, by name.

    ``out[i]`` is the index in ``dst`` of ``src[i]`` (after aliases), else of its
    group in :data:`GROUPS` when ``dst`` has that group, else -1.
    """
    return _class_mapping(tuple(src), tuple(dst)).copy()


@functools.lru_cache(maxsize=64)
def _class_mapping(src: tuple[str, ...], dst: tuple[str, ...]) -> np.ndarray:
    # cached: training maps every sample's target (1% of a CPU training step when resolved each time)
    dst_index = {name: j for j, name in enumerate(canonical_classes(dst))}
    out = np.full(len(src), -1, dtype=np.int64)
    for i, name in enumerate(canonical_classes(src)):
        if name in dst_index:
            out[i] = dst_index[name]
        elif GROUPS.get(name) in dst_index:
            out[i] = dst_index[GROUPS[name]]
    return out


def map_labels(labels: np.ndarray | Sequence[int], src: Sequence[str],
               dst: Sequence[str]) -> np.ndarray:
    """Hard labels in ``src`` indices -> ``dst`` indices; -1 stays -1, unknown -> -1."""
    labels = np.asarray(labels, dtype=np.int64)
    mapping = np.append(class_mapping(src, dst), -1)  # index -1 picks the appended -1
    return mapping[labels]


def map_distribution(probs: np.ndarray, src: Sequence[str], dst: Sequence[str]) -> np.ndarray:
    """Sum probabilities (..., len(src)) into ``dst`` classes (..., len(dst)).

    Mass of source classes unknown to ``dst`` is dropped (not renormalised), so the
    caller can see how much of the distribution fell outside ``dst``.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.shape[-1] != len(src):
        raise ValueError(f"last axis {probs.shape[-1]} != {len(src)} source classes")
    mapping = class_mapping(src, dst)
    out = np.zeros(probs.shape[:-1] + (len(dst),), dtype=np.float32)
    for i, j in enumerate(mapping):
        if j >= 0:
            out[..., j] += probs[..., i]
    return out
