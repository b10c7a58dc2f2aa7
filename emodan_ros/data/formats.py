"""Dataset formats by name: one list for the CLI's choices and one way to open each.

Kept free of heavy imports (the CLI parser reads ``FORMATS`` on every call); the readers load
when a dataset is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FORMATS = ("ferplus", "fer2013csv", "imagefolder", "manifest", "pts")


def load_dataset(data: str | Path, fmt: str, usage: str | None = None, pts_offset: float = 0.0) -> Any:
    """A dataset reader in its own vocabulary (mapping to the model happens by name later)."""
    from emodan_ros.data import landmarks, readers

    if fmt == "ferplus":
        return readers.FerPlusDataset.evaluation(data)
    if fmt == "fer2013csv":
        return readers.Fer2013CsvDataset(data, usage=usage)
    if fmt == "imagefolder":
        return readers.ImageFolderDataset(data)
    if fmt == "manifest":
        return readers.ManifestDataset(data)
    if fmt == "pts":
        return landmarks.PtsDataset(data, offset=pts_offset)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
