"""The training crop dataset: raw samples -> tensors in the model's frame (out of the trainer so
evaluation and tests can build the exact training input)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from emodan_ros.data.landmarks import PtsDataset
from emodan_ros.data.readers import Sample
from emodan_ros.faces.crop import Augmentation, apply_affine, box_for_full_crop, box_from_landmarks, crop_matrix, make_crop


class CropDataset(Dataset):
    """Raw samples -> tensors in the model's frame: crop, landmarks in unit coordinates, masks."""

    def __init__(self, samples: Dataset, classes: Sequence[str], size: int, augment: Augmentation,
                 seed: int = 0) -> None:
        self.samples = samples
        self.classes = tuple(classes)
        self.size = size
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.samples, "set_epoch"):
            self.samples.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample: Sample = self.samples[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        height, width = sample.image.shape[:2]
        if sample.landmarks is not None:
            box = box_from_landmarks(sample.landmarks)
        elif sample.box is not None:
            box = sample.box
        else:
            box = box_for_full_crop(width, height)
        crop, points = make_crop(sample.image, box, self.size, sample.landmarks, self.augment, rng)
        has_landmarks = points is not None
        unit = (points + 0.5) / self.size if has_landmarks else np.zeros((68, 2), np.float32)
        has_emotion = sample.target is not None and len(sample.target) == len(self.classes)
        target = sample.target if has_emotion else np.zeros(len(self.classes), np.float32)
        return {
            "image": torch.from_numpy(crop).unsqueeze(0),
            "landmarks": torch.from_numpy(unit.astype(np.float32)),
            "landmark_mask": torch.tensor(has_landmarks),
            "target": torch.from_numpy(np.asarray(target, np.float32)),
            "emotion_mask": torch.tensor(has_emotion),
            "label": torch.tensor(sample.label if has_emotion else -1),
        }


def mean_shape_of(dataset: PtsDataset, size: int) -> torch.Tensor:
    """Mean of the training landmarks in unit crop coordinates (the canonical pose of later stages)."""
    shapes = []
    for index in range(len(dataset)):
        sample = dataset[index]
        box = box_from_landmarks(sample.landmarks)
        points = apply_affine(crop_matrix(box, size), sample.landmarks)
        shapes.append((points + 0.5) / size)
    return torch.tensor(np.mean(shapes, axis=0), dtype=torch.float32)
