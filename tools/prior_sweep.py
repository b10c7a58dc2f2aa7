"""Is the remaining confusion a class prior? Logit adjustment swept over `emodan eval` outputs.

    python tools/prior_sweep.py --config config/train_rt112.yaml \
        --select fer=eval/fer --select expw=eval/expw --select lfw=eval/lfw --report taiwanese=eval/tw

Each read-out divides the model's probabilities by ``prior ** tau``, where ``prior`` is the class
distribution of the training stream the config draws (each emotion source's targets under its
class-balanced sampling, mixed by the sources' shares of an epoch): tau 0 is the model as it is, 1
the full adjustment of "logit adjustment" (Menon et al. 2021). The argmax is over the classes each
set has, and a face the detector missed counts as wrong. The ``--select`` sets' mean accuracy is
the model-selection rule's combination; ``--report`` sets are printed and choose nothing.
Evaluation only: reads predictions.csv files, runs no model.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from emodan_ros.bench.accuracy import restricted_accuracy
from emodan_ros.data.mix import ClassBalanced
from emodan_ros.data.readers import FerPlusDataset, ManifestDataset
from emodan_ros.faces.classes import FERPLUS_CLASSES, map_distribution
from emodan_ros.training.trainer import TrainConfig


def source_prior(dataset: ClassBalanced | FerPlusDataset | ManifestDataset, power: float) -> np.ndarray:
    """Mean target (over the FER+ classes) of one source as the trainer samples it."""
    targets = np.array([np.zeros(len(FERPLUS_CLASSES)) if t is None
                        else map_distribution(t, dataset.classes, FERPLUS_CLASSES) for t in dataset.targets])
    targets /= np.maximum(targets.sum(1, keepdims=True), 1e-12)
    weights = ClassBalanced(dataset, power).probabilities if power else np.full(len(targets), 1 / len(targets))
    return weights @ targets


def training_prior(config: TrainConfig) -> np.ndarray:
    """The emotion classes' distribution in the training stream of ``config``."""
    parts, shares = [], []
    if config.ferplus_train:
        parts.append(FerPlusDataset(config.ferplus_train, scheme=config.scheme, verify=False))
        shares.append(1.0 - sum(float(e["weight"]) for e in config.emotion_sets)
                      - (config.landmark_share if config.landmark_dirs else 0.0))
    for entry in config.emotion_sets:
        parts.append(ManifestDataset(entry["train"], verify=False))
        shares.append(float(entry["weight"]))
    prior = sum(s * source_prior(d, config.class_balance) for d, s in zip(parts, shares)) / sum(shares)
    return np.asarray(prior)


def read_predictions(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, C), NaN rows where no face was found; true class index (N,), -1 if unknown)."""
    with open(Path(folder) / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    probs = np.array([[float(r[f"p_{c}"]) if r[f"p_{c}"] else np.nan for c in FERPLUS_CLASSES] for r in rows])
    true = np.array([FERPLUS_CLASSES.index(r["true_label"]) if r["true_label"] in FERPLUS_CLASSES else -1
                     for r in rows])
    return probs, true


def adjusted_scores(probs: np.ndarray, true: np.ndarray, prior: np.ndarray, tau: float) -> tuple[float, list[float]]:
    """Accuracy and per-class recall (the set's classes) with the probabilities divided by prior ** tau."""
    present = [FERPLUS_CLASSES[c] for c in np.unique(true[true >= 0])]
    adjusted = probs / prior ** tau  # NaN rows (no face) stay NaN and count as wrong
    labelled = true >= 0
    truth = np.array([present.index(FERPLUS_CLASSES[c]) for c in true[labelled]])
    scores = restricted_accuracy(adjusted[labelled], FERPLUS_CLASSES, truth, present)
    return scores["accuracy"], [scores["per_class_recall"][c] for c in present]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the training YAML whose stream gives the prior")
    parser.add_argument("--select", action="append", default=[], metavar="NAME=DIR", help="sets of the selection rule")
    parser.add_argument("--report", action="append", default=[], metavar="NAME=DIR", help="sets only reported")
    parser.add_argument("--taus", default="0,0.1,0.2,0.3,0.5,1")
    args = parser.parse_args()
    prior = training_prior(TrainConfig.from_sources(args.config, []))
    print("training prior:", ", ".join(f"{c} {p:.3f}" for c, p in zip(FERPLUS_CLASSES, prior)))
    sets = {name: read_predictions(folder) for name, folder in
            (item.split("=", 1) for item in args.select + args.report)}
    selected = [item.split("=", 1)[0] for item in args.select]
    last_name = list(sets)[-1]
    last_classes = [FERPLUS_CLASSES[c] for c in np.unique(sets[last_name][1][sets[last_name][1] >= 0])]
    print("| tau | " + " | ".join(sets) + f" | selection mean | {last_name} recall: {' / '.join(last_classes)} |")
    print("|---" * (len(sets) + 3) + "|")
    for tau in (float(t) for t in args.taus.split(",")):
        scores = {name: adjusted_scores(*sets[name], prior, tau) for name in sets}
        mean = np.mean([scores[name][0] for name in selected]) if selected else float("nan")
        last = scores[last_name][1]
        print(f"| {tau:g} | " + " | ".join(f"{100 * scores[n][0]:.2f}%" for n in sets)
              + f" | {mean:.4f} | " + " / ".join(f"{r:.2f}" for r in last) + " |")


if __name__ == "__main__":
    main()
