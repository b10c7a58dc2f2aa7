"""Face boxes for training images found by the node's own detector, cached per dataset.

Emotion sets other than FER+ are photos or loose crops: training on the whole image would show the
network faces framed unlike the node's crops (detector box -> landmark-box calibration -> crop). Running
the node's detector once per image, and cropping as the node does, makes training and the frame path
agree. An image where the detector finds nothing keeps the box its dataset gives (or the whole image).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from emodan_ros.data.readers import read_image
from emodan_ros.faces.boxes import best_overlap, box_area
from emodan_ros.faces.detector import FaceDetector, make_detector


PRIOR_IOU = 0.3  # a detection is the dataset's face when it overlaps the dataset's box this much


def _choose(boxes: np.ndarray, prior: np.ndarray | None) -> np.ndarray | None:
    """The detection that is the dataset's face: best overlap with its own box, else the largest."""
    if len(boxes) == 0:
        return None
    if prior is not None:
        best = best_overlap(boxes, prior, PRIOR_IOU)
        return None if best is None else boxes[best]
    return boxes[int(box_area(boxes).argmax())]


def detect_boxes(dataset: Any, cache_dir: str | Path | None = None,
                 detector: str | FaceDetector = "blaze") -> dict[str, int]:
    """Replace ``dataset``'s boxes by the node's detections where it finds the face; returns counts.

    ``detector``: a name for :func:`make_detector` or a detector object. The cache file is keyed by
    the image paths and the detector's name, so a resumed run skips the pass.
    """
    name = detector if isinstance(detector, str) else detector.name
    priors = "".join(repr(None if b is None else np.round(b, 3).tolist()) for b in map(dataset.box, range(len(dataset))))
    key = hashlib.sha1(("\n".join(dataset.paths) + name + priors).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"boxes_{key}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        stored = np.load(cache)
        found = stored["found"]
        boxes = stored["boxes"]
    else:
        finder = make_detector(detector) if isinstance(detector, str) else detector
        boxes = np.zeros((len(dataset), 4), np.float64)
        found = np.zeros(len(dataset), bool)
        for index in tqdm(range(len(dataset)), desc=f"{name} boxes", leave=False, dynamic_ncols=True):
            image = read_image(dataset.paths[index])  # not dataset[index]: that skips to the next readable one
            if image is None:
                continue
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            detected, _ = finder.detect(np.ascontiguousarray(image))
            box = _choose(np.asarray(detected), dataset.box(index))
            if box is not None:
                boxes[index], found[index] = box, True
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, boxes=boxes, found=found)
    dataset.set_boxes([boxes[i] if found[i] else dataset.box(i) for i in range(len(dataset))])
    return {"detected": int(found.sum()), "kept_dataset_box": int((~found).sum())}
