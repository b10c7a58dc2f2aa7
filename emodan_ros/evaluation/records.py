"""What every evaluation produces and writes: per-face records, predictions.csv, strict JSON, progress.

Shared by the image-dataset evaluation, the bag evaluation and the benchmarks.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np


@dataclass
class Record:
    """One scored face: an image of a dataset, or one frame of a bag.

    ``probs`` is None when no face was found (frame input); landmarks are (68, 2) in image pixels
    (OpenCV centres), ``box`` the face box the model was given (xyxy), for the saliency crops.
    """

    key: str
    true_name: str | None
    true: int = -1
    probs: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    gt_landmarks: np.ndarray | None = None
    box: np.ndarray | None = None
    face_id: int = -1
    stamp_ns: int | None = None
    no_output: bool = False  # bags: no output frame at all for this stamp (dropped), not "no face"
    flipped_probs: np.ndarray | None = None  # crop input: the mirrored face's probabilities


def write_predictions(path: Path, records: Sequence[Record], pred: np.ndarray, model_classes: Sequence[str],
                      key_name: str = "path") -> None:
    """predictions.csv: key, true label, predicted label, p_<class>..., then x0,y0..x67,y67 if any."""
    with_landmarks = any(r.landmarks is not None for r in records)
    with_ids = any(r.face_id >= 0 for r in records)
    header = [key_name, "true_label", "predicted_label"] + (["face_id"] if with_ids else [])
    header += [f"p_{c}" for c in model_classes]
    if with_landmarks:
        header += [f"{axis}{i}" for i in range(68) for axis in ("x", "y")]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r, p in zip(records, pred):
            row: list[Any] = [r.key, r.true_name or "", model_classes[p] if p >= 0 else ""]
            if with_ids:
                row.append(r.face_id)
            row += [f"{v:.5f}" for v in r.probs] if r.probs is not None else [""] * len(model_classes)
            if with_landmarks:
                row += [f"{v:.2f}" for v in r.landmarks.reshape(-1)] if r.landmarks is not None else [""] * 136
            writer.writerow(row)


def json_safe(value: Any) -> Any:
    """NaN -> None (strict JSON), numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def progress(iterable: Iterable, total: int | None, desc: str) -> Iterable:
    """tqdm on stderr when installed (it is a torch dependency), else the plain iterable."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
