"""Evaluation metrics (pure numpy): emotion classification and 68-point landmarks.

Landmark errors follow the 300-W conventions: the mean point-to-point distance
divided by the inter-ocular distance (outer eye corners, points 36 and 45) or the
inter-pupil distance (eye centres, means of points 36-41 and 42-47), both taken
from the ground truth. AUC and failure rate are read off the cumulative error
distribution up to a threshold (0.08 by default).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)
OUTER_CORNERS = (36, 45)
NORMALISATIONS = ("inter_ocular", "inter_pupil")


def _labels(y_true: Sequence[int], y_pred: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Integer arrays of equal length with rows whose true label is -1 removed."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} predictions")
    keep = t >= 0
    return t[keep], p[keep]


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts: row = true class, column = predicted class.

    True labels of -1 (unknown) are ignored; a prediction outside the classes is an error.
    """
    t, p = _labels(y_true, y_pred)
    if ((t >= n_classes) | (p < 0) | (p >= n_classes)).any():
        raise ValueError(f"labels outside 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of correct predictions over labelled rows (NaN when there are none)."""
    t, p = _labels(y_true, y_pred)
    return float(np.mean(t == p)) if t.size else float("nan")


def _precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(actual > 0, tp / np.maximum(actual, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Mean F1 over the classes that occur in the truth or the predictions.

    Classes absent from both are left out (as scikit-learn does without
    ``labels=``), so a model class the dataset lacks, and never predicted, does
    not pull the score down.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    if not present.any():
        return float("nan")
    return float(_precision_recall_f1(cm)[2][present].mean())


def per_class(y_true: Sequence[int], y_pred: Sequence[int],
              classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """{class: {precision, recall, f1, n}} with n = number of true samples of the class."""
    cm = confusion_matrix(y_true, y_pred, len(classes))
    precision, recall, f1 = _precision_recall_f1(cm)
    return {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "n": int(cm[i].sum())}
            for i, name in enumerate(classes)}


def normalising_distance(gt: np.ndarray, norm: str = "inter_ocular") -> np.ndarray:
    """Per-sample normalising distance from ground-truth landmarks (N,68,2) -> (N,)."""
    gt = np.asarray(gt, dtype=np.float64)
    if norm == "inter_ocular":
        a, b = gt[:, OUTER_CORNERS[0]], gt[:, OUTER_CORNERS[1]]
    elif norm == "inter_pupil":
        a, b = gt[:, RIGHT_EYE].mean(axis=1), gt[:, LEFT_EYE].mean(axis=1)
    else:
        raise ValueError(f"norm {norm!r} not in {NORMALISATIONS}")
    return np.linalg.norm(a - b, axis=-1)


def nme(pred: np.ndarray, gt: np.ndarray, norm: str = "inter_ocular") -> np.ndarray:
    """Normalised mean error per sample: mean_i ||pred_i - gt_i|| / d(gt), shape (N,)."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
    if pred.shape != gt.shape or pred.shape[1:] != (68, 2):
        raise ValueError(f"need matching (N,68,2) arrays, got {pred.shape} and {gt.shape}")
    d = normalising_distance(gt, norm)
    if (d <= 0).any():
        raise ValueError("degenerate ground truth: zero normalising distance")
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=1) / d


def cumulative_error_curve(errors: Sequence[float], max_error: float = 0.08,
                           steps: int = 81) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, fraction of samples with error <= threshold) on [0, max_error]."""
    errors = np.sort(np.asarray(errors, dtype=np.float64).ravel())
    thresholds = np.linspace(0.0, max_error, steps)
    if errors.size == 0:
        return thresholds, np.full(steps, np.nan)
    return thresholds, np.searchsorted(errors, thresholds, side="right") / errors.size


def auc_at(errors: Sequence[float], threshold: float = 0.08) -> float:
    """Area under the cumulative error curve on [0, threshold], divided by threshold.

    Computed exactly: each sample with error e < threshold contributes
    (threshold - e) / threshold, so the value lies in [0, 1] with 1 = no error.
    """
    errors = np.asarray(errors, dtype=np.float64).ravel()
    if errors.size == 0:
        return float("nan")
    return float(np.mean(np.clip(threshold - errors, 0.0, None)) / threshold)


def failure_rate(errors: Sequence[float], threshold: float = 0.08) -> float:
    """Fraction of samples whose error exceeds the threshold."""
    errors = np.asarray(errors, dtype=np.float64).ravel()
    return float(np.mean(errors > threshold)) if errors.size else float("nan")


def summarize(y_true: Sequence[int] | None = None, y_pred: Sequence[int] | None = None,
              classes: Sequence[str] | None = None, pred_landmarks: np.ndarray | None = None,
              gt_landmarks: np.ndarray | None = None, threshold: float = 0.08) -> dict:
    """JSON-ready metrics dict.

    Emotion keys (when labels are given): n (labelled samples), accuracy, macro_f1,
    per_class, confusion {classes, matrix}. Landmark keys (when landmarks are
    given): n_landmarks, nme_inter_ocular, nme_inter_pupil (means over samples),
    ``auc_<t>`` and ``failure_rate_<t>`` on the inter-ocular NME. ``n`` falls back
    to the landmark count when there are no labels.
    """
    out: dict = {}
    if y_true is not None and y_pred is not None:
        if classes is None:
            raise ValueError("classes are needed with labels")
        classes = list(classes)
        t, p = _labels(y_true, y_pred)
        out["n"] = int(t.size)
        out["accuracy"] = accuracy(t, p)
        out["macro_f1"] = macro_f1(t, p, len(classes))
        out["per_class"] = per_class(t, p, classes)
        out["confusion"] = {"classes": classes,
                            "matrix": confusion_matrix(t, p, len(classes)).tolist()}
    if pred_landmarks is not None and gt_landmarks is not None:
        io = nme(pred_landmarks, gt_landmarks, "inter_ocular")
        ip = nme(pred_landmarks, gt_landmarks, "inter_pupil")
        out.setdefault("n", int(io.size))
        out["n_landmarks"] = int(io.size)
        out["nme_inter_ocular"] = float(io.mean())
        out["nme_inter_pupil"] = float(ip.mean())
        out[f"auc_{threshold:g}"] = auc_at(io, threshold)
        out[f"failure_rate_{threshold:g}"] = failure_rate(io, threshold)
    return out
