"""Mixing datasets of different label vocabularies into one training stream."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset

from emodan_ros.data.readers import Sample
from emodan_ros.faces.classes import canonical_classes, map_distribution, map_labels

def remap_sample(sample: Sample, classes: Sequence[str]) -> Sample:
    """The same sample with its target and label expressed over ``classes`` by name.

    0/1 targets (one-hot, multi-label masks) stay 0/1; distributions are summed per
    destination class and renormalised. A target left empty (its classes are all
    unknown to ``classes``) becomes None with label -1.
    """
    classes = canonical_classes(classes)
    if sample.target is None:
        return replace(sample, label=-1, classes=classes)
    target = map_distribution(sample.target, sample.classes, classes)
    label = int(map_labels([sample.label], sample.classes, classes)[0])
    if target.sum() <= 0:
        return replace(sample, target=None, label=-1, classes=classes)
    if np.isin(sample.target, (0.0, 1.0)).all():
        target = np.minimum(target, 1.0)
    else:
        target = target / target.sum()
    return replace(sample, target=target.astype(np.float32), label=label, classes=classes)


class WeightedMix(Dataset):
    """Draws an epoch of ``length`` items from several datasets with given weights.

    Each dataset contributes round(weight share * length) items (largest
    remainder), taken from reshuffled passes over it without repeats until it
    runs out, then the epoch is shuffled; all of it is fixed by (seed, epoch).
    Targets are remapped onto ``classes`` by name (default: the one vocabulary the
    labelled datasets share). Call :meth:`set_epoch` each epoch; it is passed on.
    """

    def __init__(self, datasets: Sequence[Dataset], weights: Sequence[float],
                 length: int | None = None, classes: Sequence[str] | None = None,
                 seed: int = 0) -> None:
        if len(datasets) != len(weights) or not datasets:
            raise ValueError("need one weight per dataset and at least one dataset")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum: {list(weights)}")
        if any(len(d) == 0 for d, wi in zip(datasets, w) if wi > 0):
            raise ValueError("a dataset with a positive weight is empty")
        self.datasets = list(datasets)
        self.weights = w / w.sum()
        self.length = int(sum(len(d) for d in datasets) if length is None else length)
        self.seed = int(seed)
        if classes is None:
            vocabularies = {tuple(getattr(d, "classes", ())) for d in datasets} - {()}
            if len(vocabularies) > 1:
                raise ValueError("datasets have different class lists: pass classes=")
            classes = vocabularies.pop() if vocabularies else ()
        self.classes = canonical_classes(classes)
        self.set_epoch(0)

    def counts(self) -> np.ndarray:
        """Items per dataset in one epoch (largest-remainder rounding of the weights)."""
        exact = self.weights * self.length
        counts = np.floor(exact).astype(np.int64)
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[: self.length - counts.sum()]] += 1
        return counts

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)
        rng = np.random.default_rng((self.seed, self.epoch))
        plan = []
        for k, (dataset, count) in enumerate(zip(self.datasets, self.counts())):
            if count == 0:
                continue
            passes = -(-count // len(dataset))
            idx = np.concatenate([rng.permutation(len(dataset)) for _ in range(passes)])[:count]
            plan.append(np.stack([np.full(count, k), idx], axis=1))
        self.plan = np.concatenate(plan)[rng.permutation(self.length)]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        k, j = self.plan[index]
        sample = self.datasets[k][int(j)]
        if not self.classes:
            return sample
        return remap_sample(sample, self.classes)


class ClassBalanced(Dataset):
    """One epoch of ``len(dataset)`` items drawn with replacement, class ``c`` weighted ``n_c ** -power``.

    ``power`` 0 keeps the dataset's own class priors, 1 makes every class equally frequent; in
    between tempers a prior (FER+ is 37% neutral) without repeating a rare class's few faces
    endlessly. The class of an item is the argmax of its target (the vote majority for FER+).
    The draw is fixed by (seed, epoch); :meth:`set_epoch` redraws and is passed on.
    """

    def __init__(self, dataset: Dataset, power: float, seed: int = 0) -> None:
        if not 0.0 <= power <= 1.0:
            raise ValueError(f"class balance power must be in [0, 1], got {power}")
        self.dataset = dataset
        self.classes = tuple(getattr(dataset, "classes", ()))
        self.power = float(power)
        self.seed = int(seed)
        targets = getattr(dataset, "targets", None)
        if targets is None or len(targets) != len(dataset):
            raise ValueError("class balancing needs a dataset with per-item targets")
        labels = np.array([-1 if t is None else int(np.argmax(t)) for t in targets])
        counts = np.bincount(labels[labels >= 0], minlength=max(len(self.classes), 1)).astype(np.float64)
        weight = np.where(labels >= 0, np.power(np.maximum(counts[np.maximum(labels, 0)], 1.0), -self.power), 0.0)
        if weight.sum() <= 0:
            weight = np.ones(len(dataset))
        self.probabilities = weight / weight.sum()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        rng = np.random.default_rng((self.seed, self.epoch, 7))
        self.order = rng.choice(len(self.dataset), size=len(self.dataset), p=self.probabilities)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        return self.dataset[int(self.order[index])]
