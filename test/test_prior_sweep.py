"""tools/prior_sweep.py: the training stream's class prior and the logit-adjusted read-out."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from emodan_ros.data.readers import ManifestDataset
from emodan_ros.faces.classes import FERPLUS_CLASSES

TOOL = Path(__file__).resolve().parent.parent / "tools" / "prior_sweep.py"
spec = importlib.util.spec_from_file_location("prior_sweep", TOOL)
prior_sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prior_sweep)

HAPPY, SAD = FERPLUS_CLASSES.index("happiness"), FERPLUS_CLASSES.index("sadness")


def _manifest(tmp_path: Path, labels: list[str]) -> ManifestDataset:
    path = tmp_path / "train.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows([[f"{i}.png", label] for i, label in enumerate(labels)])
    for i in range(len(labels)):  # listed files must exist; their pixels are never read here
        (tmp_path / f"{i}.png").touch()
    return ManifestDataset(path, verify=False)


def test_source_prior_follows_the_class_balance(tmp_path: Path) -> None:
    """Three happy faces and one sad: 3:1 as they come, 1:1 fully balanced, sqrt(3):1 at 0.5."""
    data = _manifest(tmp_path, ["happy", "happy", "happy", "sad"])
    for power, happy in ((0.0, 0.75), (1.0, 0.5), (0.5, np.sqrt(3) / (np.sqrt(3) + 1))):
        prior = prior_sweep.source_prior(data, power)
        assert prior.shape == (len(FERPLUS_CLASSES),) and prior.sum() == pytest.approx(1.0)
        assert prior[HAPPY] == pytest.approx(happy) and prior[SAD] == pytest.approx(1 - happy)


def test_adjusted_scores_divide_out_the_prior_and_count_misses() -> None:
    n = len(FERPLUS_CLASSES)
    probs = np.full((3, n), 0.01)
    probs[0, HAPPY], probs[0, SAD] = 0.6, 0.3  # a close call for happiness; the truth is sadness
    probs[1, SAD] = 0.9  # clearly sad
    probs[2] = np.nan  # no face found
    true = np.array([SAD, SAD, HAPPY])
    prior = np.full(n, 0.05)
    prior[HAPPY], prior[SAD] = 0.6, 0.05
    plain, recall = prior_sweep.adjusted_scores(probs, true, prior, 0.0)
    assert plain == pytest.approx(1 / 3) and recall == [0.0, 0.5]  # classes in index order: happiness, sadness
    adjusted, recall = prior_sweep.adjusted_scores(probs, true, prior, 1.0)
    assert adjusted == pytest.approx(2 / 3) and recall == [0.0, 1.0]


def test_read_predictions_keeps_rows_without_a_face(tmp_path: Path) -> None:
    header = ["path", "true_label", "predicted_label"] + [f"p_{c}" for c in FERPLUS_CLASSES]
    with open(tmp_path / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerow(["a.png", "sadness", "sadness"] + ["0.125"] * len(FERPLUS_CLASSES))
        writer.writerow(["b.png", "happiness", ""] + [""] * len(FERPLUS_CLASSES))
    probs, true = prior_sweep.read_predictions(str(tmp_path))
    assert true.tolist() == [SAD, HAPPY]
    assert np.allclose(probs[0], 0.125) and np.isnan(probs[1]).all()
