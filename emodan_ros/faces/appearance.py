"""Is the face we follow still there? A cheap look at the pixels around a followed box.

Following a face by its own landmarks trusts the model to say when the face is gone, and it does
not: on noise or a flat frame right after a face it still returns a plausible shape (quality 0.4
to 0.7, above ``min_quality``), so the track follows nothing until the next detector run. The
check here keeps a small grey patch of each face where it was last seen and looks for it around
the face's new box (normalised cross-correlation, best over shifts of up to a quarter of the box,
so a face that moved or whose box lags still matches; insensitive to brightness and contrast).
Noise, a new scene or a flat frame (no contrast at all: lens cap, the person left a plain wall)
do not match. It costs two resizes to 16-24 px and one 9x9 template match per face (well under a
millisecond).
"""

from __future__ import annotations

import cv2
import numpy as np

PATCH_SIZE = 16
# The region searched around a box is this many times the box (centred on it): shifts up to 25%.
SEARCH = 1.5
# Grey-level standard deviation below which a patch holds no face (flat or nearly flat).
MIN_STD = 4.0


def _grey(image_bgr: np.ndarray, box: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray | None:
    """The box's pixels (clipped to the image) resized by the given scales, grey float32; None if empty."""
    height, width = image_bgr.shape[:2]
    x0, y0 = max(int(round(box[0])), 0), max(int(round(box[1])), 0)
    x1, y1 = min(int(round(box[2])) + 1, width), min(int(round(box[3])) + 1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    size = (max(1, round((x1 - x0) * scale_x)), max(1, round((y1 - y0) * scale_y)))
    small = cv2.resize(image_bgr[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
    return (cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small).astype(np.float32)


def _scales(box: np.ndarray) -> tuple[float, float]:
    return PATCH_SIZE / max(float(box[2] - box[0]), 1.0), PATCH_SIZE / max(float(box[3] - box[1]), 1.0)


def patch(image_bgr: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """The grey patch of ``box`` (xyxy) at about PATCH_SIZE px; None when it has no contrast (no face)."""
    grey = _grey(image_bgr, np.asarray(box, np.float64), *_scales(box))
    if grey is None or float(grey.std()) < MIN_STD:
        return None
    return grey


def similarity(before: np.ndarray | None, image_bgr: np.ndarray, box: np.ndarray) -> float:
    """How well the patch ``before`` matches the frame around ``box``: best NCC in [-1, 1]; 0 for no contrast."""
    if before is None:
        return 0.0
    box = np.asarray(box, np.float64)
    centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) * SEARCH / 2
    region = _grey(image_bgr, np.concatenate([centre - half, centre + half]), *_scales(box))
    if region is None or region.shape[0] < before.shape[0] or region.shape[1] < before.shape[1] \
            or float(region.std()) < MIN_STD:
        return 0.0
    scores = cv2.matchTemplate(region, before, cv2.TM_CCOEFF_NORMED)
    return float(np.clip(np.nan_to_num(scores.max()), -1.0, 1.0))
