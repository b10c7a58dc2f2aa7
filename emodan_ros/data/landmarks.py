"""300-W style landmark data: iBUG ``.pts`` files next to their images.

The shared 300-W files are 1-based (Matlab convention); readers take an ``offset`` to bring them
to the package's 0-based pixel convention.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from emodan_ros.data.readers import IMAGE_EXTENSIONS, N_LANDMARKS, ImageDataset

def read_pts(path: str | os.PathLike) -> np.ndarray:
    """Parse an iBUG ``.pts`` file (version: 1 / n_points: 68 / { x y ... }) -> (68,2).

    Coordinates are returned as written; see :class:`PtsDataset` for the offset.
    """
    text = Path(path).read_text()
    header, sep, rest = text.partition("{")
    body, sep2, _ = rest.partition("}")
    if not sep or not sep2:
        raise ValueError(f"{path}: no '{{ ... }}' point block")
    n_points = None
    for line in header.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "n_points":
            n_points = int(value)
    points = np.array(body.split(), dtype=np.float32).reshape(-1, 2)
    if n_points is not None and n_points != len(points):
        raise ValueError(f"{path}: n_points {n_points} but {len(points)} points")
    if len(points) != N_LANDMARKS:
        raise ValueError(f"{path}: {len(points)} points, expected {N_LANDMARKS}")
    return points


def list_pts_files(root: str | os.PathLike) -> list[str]:
    """Sorted ``.pts`` files under ``root`` (recursively)."""
    return sorted(str(p) for p in Path(root).rglob("*.pts"))


def split_holdout(files: Sequence[str], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic split into (kept, held out) with round(fraction*n) held out.

    Depends only on the set of names and the seed, not on their order.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} not in [0, 1]")
    files = sorted(set(map(str, files)))
    order = np.random.default_rng(seed).permutation(len(files))
    held = set(order[: int(round(fraction * len(files)))].tolist())
    return ([f for i, f in enumerate(files) if i not in held],
            [f for i, f in enumerate(files) if i in held])


def _image_for(pts_path: Path) -> Path | None:
    for candidate in pts_path.parent.glob(pts_path.stem + ".*"):
        if candidate.suffix.lower() in IMAGE_EXTENSIONS:
            return candidate
    return None


class PtsDataset(ImageDataset):
    """iBUG 300-W folder: ``NAME.pts`` next to ``NAME.jpg``/``.png``; landmarks only.

    Landmarks are 0-based pixel coordinates: ``offset`` is subtracted from the
    file's values. Original iBUG files are 1-based (Matlab): use ``offset=1``.
    The shared 300w crops kept that 1-based convention through their shift and
    resize, so their exact 0-based offset is 1 original pixel times the crop's
    scale, which the crop alone does not reveal; they are read with the default
    ``offset=0`` and carry that sub-pixel bias (the same in training and test).
    Pass ``files`` (e.g. one side of :func:`split_holdout`) to read a subset.
    """

    def __init__(self, root: str | os.PathLike | None = None, files: Sequence[str] | None = None,
                 offset: float = 0.0, verify: bool = True) -> None:
        super().__init__()
        if (root is None) == (files is None):
            raise ValueError("give exactly one of root or files")
        pts_files = list_pts_files(root) if files is None else sorted(map(str, files))
        for pts_path in map(Path, pts_files):
            image_path = _image_for(pts_path)
            try:
                points = read_pts(pts_path) - np.float32(offset)
            except (OSError, ValueError):
                self.bad_files.append(str(pts_path))
                continue
            if image_path is None:
                self.bad_files.append(str(pts_path))
                continue
            self.paths.append(str(image_path))
            self.landmarks.append(points)
            self.targets.append(None)
            self.labels.append(-1)
        self._verify(verify)
