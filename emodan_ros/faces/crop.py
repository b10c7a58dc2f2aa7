"""The one face-crop convention shared by training, evaluation and the node.

A face crop is the square of side ``CROP_SCALE * max(w, h)`` whose centre is the face box's centre
moved by ``CROP_SHIFT * max(w, h)`` along y (negative: up), where the face box is the bounding box
of the 68 landmarks (or a detector box mapped onto that frame). FER images (48x48 faces that fill
the frame) already follow it: measured with the landmark model on 4,000 FER2013Train faces, their
landmark box is 0.80 of the image (scale 1.25) and its centre lies 0.077 box sides below the image
centre (FER frames keep the forehead and cut under the chin). The shift matters: crops centred on
the landmark box itself show FER's emotion head a lower face than it learned on, and the node's
tracking loop (this frame's landmarks frame the next crop) then drifts further down. Points use
OpenCV's convention: pixel centres at integer coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CROP_SCALE = 1.25
CROP_SHIFT = -0.075  # crop centre minus box centre, in box sides along y (negative: up)

# Left/right mirror of the 68-point 300-W order, used to re-index landmarks after a flip.
FLIP_INDEX = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]  # nose bridge, nostrils
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)


def box_from_landmarks(points: np.ndarray) -> np.ndarray:
    """Bounding box ``(x1, y1, x2, y2)`` of a (68, 2) landmark array."""
    points = np.asarray(points, dtype=np.float64)
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def box_for_full_crop(width: int, height: int, scale: float = CROP_SCALE, shift: float = CROP_SHIFT) -> np.ndarray:
    """The face box for which the whole image is the crop (images that are already face crops)."""
    side = max(width, height) / scale
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0 - shift * side
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def crop_matrix(
    box: np.ndarray,
    out_size: int,
    scale: float = CROP_SCALE,
    rotation_deg: float = 0.0,
    flip: bool = False,
    shift: float = CROP_SHIFT,
) -> np.ndarray:
    """2x3 affine matrix taking image pixels to crop pixels for a face box.

    The box centre moved by ``shift`` box sides along y goes to the crop centre; rotation
    (counter-clockwise in the image, degrees) and a horizontal flip are applied about that centre,
    which is how training augments without a second resampling.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    box_side = max(x2 - x1, y2 - y1, 1e-6)
    zoom = out_size / (scale * box_side)
    theta = np.deg2rad(rotation_deg)
    cos, sin = np.cos(theta) * zoom, np.sin(theta) * zoom
    linear = np.array([[cos, sin], [-sin, cos]])
    if flip:
        linear = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ linear
    centre_in = np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0 + shift * box_side])
    centre_out = np.full(2, (out_size - 1) / 2.0)
    offset = centre_out - linear @ centre_in
    return np.hstack([linear, offset[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (..., 2) points."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def to_gray(image: np.ndarray) -> np.ndarray:
    """Greyscale uint8 view of a BGR, BGRA or grey image (the network sees intensity only)."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code)


@dataclass(frozen=True)
class Augmentation:
    """Random perturbations for training crops; zeros everywhere give the evaluation crop."""

    shift: float = 0.06  # box centre jitter, fraction of the box side
    scale: float = 0.08  # box size jitter, relative
    rotation_deg: float = 12.0
    flip: bool = True
    brightness: float = 0.25  # additive, fraction of 255
    contrast: float = 0.25  # multiplicative, relative
    low_resolution: float = 0.0  # probability of shrinking the crop to 35-100% and back (soft, camera-like faces)
    # What robots' cameras add and web photos lack (each a probability per crop):
    blur: float = 0.0  # Gaussian blur, sigma 0.5-2 crop pixels (focus, motion)
    jpeg: float = 0.0  # JPEG re-encoding at quality 15-60 (compressed image transport)
    gamma: float = 0.0  # exposure curve, gamma 0.5-2 (dim rooms, back light)
    occlusion: float = 0.0  # a grey or noise rectangle over 10-30% of the face (hands, cups, hair)
    noise: float = 0.0  # Gaussian sensor noise, sigma 2-10 grey levels

    def __post_init__(self) -> None:
        for name in ("low_resolution", "blur", "jpeg", "gamma", "occlusion", "noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augmentation {name} is a probability in [0, 1], got {getattr(self, name)}")


NO_AUGMENTATION = Augmentation(0.0, 0.0, 0.0, False, 0.0, 0.0)


def camera_effects(crop: np.ndarray, augment: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Blur, exposure, occlusion, noise and JPEG on a grey uint8 crop, each drawn with its probability."""
    size = crop.shape[0]
    if augment.blur and rng.random() < augment.blur:
        crop = cv2.GaussianBlur(crop, (0, 0), float(rng.uniform(0.5, 2.0)))
    if augment.gamma and rng.random() < augment.gamma:
        gamma = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        crop = np.clip(np.rint(255.0 * (crop / 255.0) ** gamma), 0, 255).astype(np.uint8)
    if augment.occlusion and rng.random() < augment.occlusion:
        area = rng.uniform(0.1, 0.3) * size * size
        aspect = np.exp(rng.uniform(-0.7, 0.7))
        h = int(min(size, round(np.sqrt(area * aspect))))
        w = int(min(size, round(np.sqrt(area / aspect))))
        y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        crop = crop.copy()
        if rng.random() < 0.5:
            crop[y:y + h, x:x + w] = int(rng.integers(0, 256))
        else:
            crop[y:y + h, x:x + w] = rng.integers(0, 256, (h, w), dtype=np.uint8)
    if augment.noise and rng.random() < augment.noise:
        noisy = crop + rng.normal(0.0, rng.uniform(2.0, 10.0), crop.shape)
        crop = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if augment.jpeg and rng.random() < augment.jpeg:
        ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 61))])
        if ok:
            crop = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    return crop


def aligned_face(image: np.ndarray, landmarks: np.ndarray, mean_shape_px: np.ndarray, size: int) -> np.ndarray:
    """The grey face warped so its landmarks fall on ``mean_shape_px`` (a ``size`` px square): the
    canonical pose DAN's later stages see, for people who want to look at what the model looked at."""
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32).reshape(-1, 2),
                                            np.asarray(mean_shape_px, np.float32).reshape(-1, 2))
    if matrix is None:  # degenerate landmarks: no similarity fits
        return np.zeros((size, size), np.uint8)
    return cv2.warpAffine(to_gray(image), matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def make_crop(
    image: np.ndarray,
    box: np.ndarray,
    out_size: int,
    landmarks: np.ndarray | None = None,
    augment: Augmentation = NO_AUGMENTATION,
    rng: np.random.Generator | None = None,
    scale: float = CROP_SCALE,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Cut the (augmented) grey face crop and move the landmarks into it.

    Returns the ``out_size`` square uint8 crop and the landmarks in crop pixels (or None).
    """
    rng = rng if rng is not None else np.random.default_rng()
    gray = to_gray(image)
    box = np.asarray(box, dtype=np.float64)
    side = max(box[2] - box[0], box[3] - box[1])
    centre = (box[:2] + box[2:]) / 2 + rng.uniform(-augment.shift, augment.shift, 2) * side
    half = side * (1.0 + rng.uniform(-augment.scale, augment.scale)) / 2
    jittered = np.concatenate([centre - half, centre + half])
    rotation = rng.uniform(-augment.rotation_deg, augment.rotation_deg)
    flip = bool(augment.flip and rng.random() < 0.5)

    # Shrink big images first so the bilinear warp does not alias (the node does the same).
    shrink = out_size / (scale * side)
    if shrink < 0.5:
        factor = 2.0 * shrink
        gray = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        jittered = (jittered + 0.5) * factor - 0.5
        if landmarks is not None:
            landmarks = (np.asarray(landmarks) + 0.5) * factor - 0.5
    matrix = crop_matrix(jittered, out_size, scale, rotation, flip)
    crop = cv2.warpAffine(gray, matrix, (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    if augment.low_resolution and rng.random() < augment.low_resolution:
        # FER faces are soft 48 px web images, 300-W crops are sharp photos: mixing resolutions keeps
        # the emotion head from keying on sharpness.
        small = max(8, int(round(out_size * rng.uniform(0.35, 1.0))))
        crop = cv2.resize(cv2.resize(crop, (small, small), interpolation=cv2.INTER_AREA), (out_size, out_size),
                          interpolation=cv2.INTER_LINEAR)
    if augment.brightness or augment.contrast:
        gain = 1.0 + rng.uniform(-augment.contrast, augment.contrast)
        bias = rng.uniform(-augment.brightness, augment.brightness) * 255.0
        mean = crop.mean()
        crop = np.clip((crop - mean) * gain + mean + bias, 0, 255).astype(np.uint8)
    crop = camera_effects(crop, augment, rng)
    moved = None
    if landmarks is not None:
        moved = apply_affine(matrix, landmarks)
        if flip:
            moved = moved[FLIP_INDEX]
    return crop, None if moved is None else moved.astype(np.float32)
