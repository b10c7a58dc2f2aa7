"""Dataset readers returning raw samples (before cropping and augmentation).

Every reader is a ``torch.utils.data.Dataset`` whose items are :class:`Sample`:
the image as stored (uint8 HxW grayscale or HxWx3 BGR), 68 landmarks when the
format has them, an emotion target over the reader's ``classes`` when it has one.
A missing part is ``None`` (``label`` -1) so that emotion-only data (FER+) and
landmark-only data (300-W) can be mixed with :class:`WeightedMix` and masked in
the loss. Cropping and augmentation live in ``crop.py``.

Unreadable files never stop an epoch: readers decode every image once when built
(``verify=True``) and list the failures in ``bad_files``; with ``verify=False`` a
file that fails at fetch time is added to ``bad_files`` and the next readable item
is returned instead (in DataLoader workers that list is per worker process).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from torch.utils.data import Dataset

from emodan_ros.faces.classes import (
    FER2013_CLASSES,
    FERPLUS_CLASSES,
    canonical_classes,
    canonical_name,
    class_mapping,
)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = FERPLUS_CLASSES + ("unknown", "NF")
FERPLUS_SCHEMES: tuple[str, ...] = ("majority", "multilabel", "probability", "crossentropy")
N_LANDMARKS = 68


@dataclass
class Sample:
    """One raw training/evaluation item.

    target: float32 over ``classes``: one-hot, a distribution (sums to 1) or, for
    the FER+ multi-label scheme, a 0/1 mask of acceptable classes; None if unknown.
    label: hard class index in ``classes`` (majority / drawn label), -1 if none.
    """

    image: np.ndarray
    landmarks: np.ndarray | None
    target: np.ndarray | None
    label: int
    path: str
    classes: tuple[str, ...] = ()
    box: np.ndarray | None = None  # face box (x1, y1, x2, y2) in the landmark-box convention, if known


def read_image(path: str | os.PathLike) -> np.ndarray | None:
    """Decode an image file as 8-bit grayscale or BGR (as stored); None if unreadable."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_ANYCOLOR) if data.size else None
    except (OSError, cv2.error):
        return None
    if image is None or image.dtype != np.uint8 or image.size == 0:
        return None
    return image


def one_hot(index: int, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    out[index] = 1.0
    return out


class ImageDataset(Dataset):
    """Shared machinery: per-item paths, optional landmarks / targets / labels.

    Subclasses fill ``paths``, ``landmarks`` (list of (68,2) or None), ``targets``
    (list of vectors or None), ``labels`` and ``classes``, then call ``_verify``.
    """

    classes: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.landmarks: list[np.ndarray | None] = []
        self.targets: list[np.ndarray | None] = []
        self.labels: list[int] = []
        self.boxes: list[np.ndarray | None] = []  # filled by readers whose format has boxes (or set_boxes)
        self.bad_files: list[str] = []
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Tell the dataset which epoch runs (readers with random labels reseed on it)."""
        self.epoch = int(epoch)

    def _image(self, index: int) -> np.ndarray | None:
        return read_image(self.paths[index])

    def _target(self, index: int) -> tuple[np.ndarray | None, int]:
        return self.targets[index], self.labels[index]

    def box(self, index: int) -> np.ndarray | None:
        return self.boxes[index] if self.boxes else None

    def set_boxes(self, boxes: Sequence[np.ndarray | None]) -> None:
        """Face boxes per item (e.g. from the node's detector), so training crops frame faces as the node does."""
        if len(boxes) != len(self):
            raise ValueError(f"need one box (or None) per item: {len(boxes)} for {len(self)}")
        self.boxes = [None if b is None else np.asarray(b, np.float64) for b in boxes]

    def _verify(self, verify: bool) -> None:
        """Drop items whose image cannot be decoded, listing them in ``bad_files``."""
        keep = []
        for i, path in enumerate(self.paths):
            ok = self._image(i) is not None if verify else os.path.isfile(path)
            if ok:
                keep.append(i)
            else:
                self.bad_files.append(path)
        self.paths = [self.paths[i] for i in keep]
        self.landmarks = [self.landmarks[i] for i in keep]
        self.targets = [self.targets[i] for i in keep]
        self.labels = [self.labels[i] for i in keep]
        if self.boxes:
            self.boxes = [self.boxes[i] for i in keep]
        self._after_filter(keep)

    def _after_filter(self, keep: list[int]) -> None:
        """Hook for subclasses holding extra per-item arrays."""

    def __getitem__(self, index: int) -> Sample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(index)
        for k in range(n):
            j = (index + k) % n
            image = self._image(j)
            if image is not None:
                target, label = self._target(j)
                pts = self.landmarks[j]
                return Sample(image=image, landmarks=None if pts is None else pts.copy(),
                              target=None if target is None else target.copy(), label=int(label),
                              path=self.paths[j], classes=self.classes, box=self.box(j))
            if self.paths[j] not in self.bad_files:
                self.bad_files.append(self.paths[j])
        raise RuntimeError(f"no readable image left in {type(self).__name__}")


# ---------------------------------------------------------------- FER+ ----------

def clean_votes(votes: np.ndarray) -> np.ndarray:
    """FER+ outlier removal: a class with one vote or none gets 0 votes."""
    votes = np.asarray(votes, dtype=np.float32)
    return np.where(votes <= 1, 0.0, votes).astype(np.float32)


def ferplus_majority(clean: np.ndarray) -> np.ndarray:
    """Majority label per row of cleaned votes (N,10); -1 where there is none.

    Majority = the top class when it holds more than half of all remaining votes
    (unknown and NF included in the total), and it is one of the 8 emotions.
    """
    clean = np.atleast_2d(clean)
    top = clean.argmax(axis=1)
    top_votes = clean[np.arange(len(clean)), top]
    ok = (top < len(FERPLUS_CLASSES)) & (top_votes > 0.5 * clean.sum(axis=1))
    return np.where(ok, top, -1)


def ferplus_is_face(clean: np.ndarray) -> np.ndarray:
    """Rows usable at all: some emotion votes survive and the top vote is an emotion.

    Ties between an emotion and unknown/NF go to the emotion (column order), as in
    Microsoft's FERPlus reference code.
    """
    clean = np.atleast_2d(clean)
    emotion_votes = clean[:, : len(FERPLUS_CLASSES)].sum(axis=1)
    return (emotion_votes > 0) & (clean.argmax(axis=1) < len(FERPLUS_CLASSES))


def read_ferplus_labels(label_csv: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Parse a FER+ ``label.csv`` (no header): names and raw votes (N,10) float32."""
    names, votes = [], []
    with open(label_csv, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or not row[0].strip():
                continue
            if len(row) != 2 + len(FERPLUS_VOTE_COLUMNS):
                raise ValueError(f"{label_csv}:{lineno}: expected 12 columns, got {len(row)}")
            names.append(row[0].strip())
            votes.append([float(v) for v in row[2:]])
    return names, np.asarray(votes, dtype=np.float32).reshape(-1, len(FERPLUS_VOTE_COLUMNS))


class FerPlusDataset(ImageDataset):
    """FER+ folder (``label.csv`` + images) with one of the paper's label schemes.

    - ``majority``: one-hot of the majority class; images without one are dropped.
    - ``multilabel``: 0/1 mask of the classes that kept votes after clean-up
      (target of the -log max_k t_k q_k loss); label = majority or -1.
    - ``probability``: a one-hot drawn from the vote distribution at every fetch,
      from an rng seeded by (seed, epoch, item), so an epoch replays exactly
      whatever the fetch order or worker; call :meth:`set_epoch` each epoch.
    - ``crossentropy``: the vote distribution over the 8 emotions.
    Every scheme drops images whose cleaned top vote is unknown or not-a-face.
    Validation and test data use :meth:`evaluation` (majority labels).
    """

    classes = FERPLUS_CLASSES

    def __init__(self, root: str | os.PathLike, scheme: str = "majority", seed: int = 0,
                 verify: bool = True, label_file: str = "label.csv") -> None:
        super().__init__()
        if scheme not in FERPLUS_SCHEMES:
            raise ValueError(f"scheme {scheme!r} not in {FERPLUS_SCHEMES}")
        self.root = Path(root)
        self.scheme = scheme
        self.seed = int(seed)
        names, raw = read_ferplus_labels(self.root / label_file)
        clean = clean_votes(raw)
        majority = ferplus_majority(clean)
        keep = ferplus_is_face(clean)
        if scheme == "majority":
            keep &= majority >= 0
        n_cls = len(FERPLUS_CLASSES)
        self.votes = clean[keep]
        for name, votes, label in zip(np.asarray(names)[keep], self.votes, majority[keep]):
            emotion = votes[:n_cls]
            if scheme == "majority":
                target = one_hot(int(label), n_cls)
            elif scheme == "multilabel":
                target = (emotion > 0).astype(np.float32)
            else:
                target = emotion / emotion.sum()
            self.paths.append(str(self.root / name))
            self.landmarks.append(None)
            self.targets.append(target)
            self.labels.append(int(label))
        self.n_dropped = int((~keep).sum())
        self._verify(verify)

    @classmethod
    def evaluation(cls, root: str | os.PathLike, verify: bool = True,
                   label_file: str = "label.csv") -> "FerPlusDataset":
        """Validation/test reader: always majority labels, whatever trained the model."""
        return cls(root, scheme="majority", verify=verify, label_file=label_file)

    def _after_filter(self, keep: list[int]) -> None:
        self.votes = self.votes[keep]

    def _target(self, index: int) -> tuple[np.ndarray | None, int]:
        if self.scheme != "probability":
            return self.targets[index], self.labels[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        drawn = int(rng.choice(len(self.classes), p=self.targets[index]))
        return one_hot(drawn, len(self.classes)), drawn


# ------------------------------------------------------------- FER2013 csv ------

class Fer2013CsvDataset(ImageDataset):
    """The original ``fer2013.csv`` (emotion,pixels,Usage), 48x48 grayscale images.

    ``usage`` keeps rows whose Usage is one of the given values (Training,
    PublicTest, PrivateTest); None keeps all. Rows whose pixels do not form a
    square image are listed in ``bad_files`` as ``csv#row``. A csv without an
    emotion column gives unlabelled samples.
    """

    classes = FER2013_CLASSES

    def __init__(self, csv_path: str | os.PathLike,
                 usage: str | Sequence[str] | None = "Training") -> None:
        super().__init__()
        wanted = {usage} if isinstance(usage, str) else None if usage is None else set(usage)
        images = []
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            fields = {name.strip().lower(): name for name in reader.fieldnames or []}
            if "pixels" not in fields:
                raise ValueError(f"{csv_path}: no 'pixels' column")
            if wanted is not None and "usage" not in fields:
                raise ValueError(f"{csv_path}: no 'Usage' column to select {sorted(wanted)}")
            for row_index, row in enumerate(reader):
                if wanted is not None and row[fields["usage"]].strip() not in wanted:
                    continue
                path = f"{csv_path}#{row_index}"
                image = self._parse_pixels(row[fields["pixels"]])
                if image is None:
                    self.bad_files.append(path)
                    continue
                label = -1
                if "emotion" in fields and row[fields["emotion"]].strip():
                    label = int(row[fields["emotion"]])
                    if not 0 <= label < len(self.classes):
                        self.bad_files.append(path)
                        continue
                images.append(image)
                self.paths.append(path)
                self.landmarks.append(None)
                self.targets.append(None if label < 0 else one_hot(label, len(self.classes)))
                self.labels.append(label)
        self.images = images

    @staticmethod
    def _parse_pixels(text: str) -> np.ndarray | None:
        try:
            values = np.array(text.split(), dtype=np.int64)
        except ValueError:
            return None
        side = int(round(np.sqrt(values.size)))
        if values.size == 0 or side * side != values.size or values.min() < 0 or values.max() > 255:
            return None
        return values.astype(np.uint8).reshape(side, side)

    def _image(self, index: int) -> np.ndarray | None:
        return self.images[index]


# ------------------------------------------------------ folders and manifests ---

def _resolve_label(name: str, classes: tuple[str, ...]) -> int:
    """Index of ``name`` in ``classes`` by name (aliases and groups), -1 if absent."""
    return int(class_mapping([name], classes)[0])


class ImageFolderDataset(ImageDataset):
    """``root/<class name>/**/image`` with class names matched by name (aliases).

    ``classes`` None: the dataset's vocabulary is its sub-folder names (canonical,
    sorted). Given: folders are mapped onto it by name; images of folders it does
    not know are skipped and counted in ``unknown_classes`` so callers can report them.
    """

    def __init__(self, root: str | os.PathLike, classes: Sequence[str] | None = None,
                 verify: bool = True) -> None:
        super().__init__()
        self.root = Path(root)
        folders = sorted(p for p in self.root.iterdir() if p.is_dir())
        if not folders:
            raise ValueError(f"{root}: no class sub-folders")
        if classes is None:
            self.classes = canonical_classes(sorted(canonical_name(p.name) for p in folders))
        else:
            self.classes = canonical_classes(classes)
        self.unknown_classes: dict[str, int] = {}
        for folder in folders:
            files = sorted(p for p in folder.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            label = _resolve_label(folder.name, self.classes)
            if label < 0:
                self.unknown_classes[folder.name] = len(files)
                continue
            for path in files:
                self.paths.append(str(path))
                self.landmarks.append(None)
                self.targets.append(one_hot(label, len(self.classes)))
                self.labels.append(label)
        self._verify(verify)


class ManifestDataset(ImageDataset):
    """CSV with a header holding ``path`` and ``label`` columns (label = class name).

    Optional ``box_x0, box_y0, box_x1, box_y1`` columns give each face's box in image pixels.

    Relative paths are relative to the csv's folder. An empty label gives an
    unlabelled sample. ``classes`` works as in :class:`ImageFolderDataset`; rows
    with a label it does not know are counted in ``unknown_classes``.
    """

    def __init__(self, csv_path: str | os.PathLike, classes: Sequence[str] | None = None,
                 verify: bool = True) -> None:
        super().__init__()
        csv_path = Path(csv_path)
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            fields = {name.strip().lower(): name for name in reader.fieldnames or []}
            if "path" not in fields or "label" not in fields:
                raise ValueError(f"{csv_path}: header needs 'path' and 'label' columns")
            box_columns = [fields.get(k) for k in ("box_x0", "box_y0", "box_x1", "box_y1")]
            rows, boxes = [], []
            for r in reader:
                rows.append((r[fields["path"]].strip(), (r[fields["label"]] or "").strip()))
                if all(box_columns):
                    cells = [(r[k] or "").strip() for k in box_columns]
                    try:
                        boxes.append(np.array([float(c) for c in cells]) if all(cells) else None)
                    except ValueError as error:
                        raise ValueError(f"{csv_path}: row {len(rows)}: bad box {cells}") from error
        for _, name in rows:
            if name.lstrip("-").isdigit():
                raise ValueError(f"{csv_path}: label {name!r} is an index; labels must be class names")
        if classes is None:
            self.classes = canonical_classes(sorted({canonical_name(n) for _, n in rows if n}))
        else:
            self.classes = canonical_classes(classes)
        self.unknown_classes: dict[str, int] = {}
        for row, (rel, name) in enumerate(rows):
            label = _resolve_label(name, self.classes) if name else -1
            if name and label < 0:
                self.unknown_classes[name] = self.unknown_classes.get(name, 0) + 1
                continue
            if boxes:
                self.boxes.append(boxes[row])
            path = Path(rel) if Path(rel).is_absolute() else csv_path.parent / rel
            self.paths.append(str(path))
            self.landmarks.append(None)
            self.targets.append(None if label < 0 else one_hot(label, len(self.classes)))
            self.labels.append(label)
        self._verify(verify)
