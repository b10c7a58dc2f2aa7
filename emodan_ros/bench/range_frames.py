"""Range-test frames: faces with known landmark boxes pasted at controlled sizes into face-free photos.

Why synthetic frames: a detector's range (the smallest face it finds) needs faces at exact
sizes, rotations and exposures with exact truth boxes, which no photo collection gives.

- Backgrounds: scikit-image's face-free photos (``NEGATIVE_SOURCES``; ``camera`` and
  ``astronaut`` hold faces and are left out), randomly cropped, scaled, flipped and tinted.
- Faces: ``skimage.data.astronaut()`` (hand-set landmark box) with synthetic variations
  (mirror, in-plane rotation, a perspective squeeze standing in for yaw), so the bench runs on
  any machine; or real faces from folders of iBUG ``.pts`` files next to their images (e.g. 300-W:
  real frontal and three-quarter faces; the yaw class comes from the landmarks). Research data
  is only read: nothing derived from it is written except summary numbers.
- Each face: landmark-box width ``size`` px (before rotation), rotation uniform in +-``max_angle``,
  a feathered elliptic mask; per frame one exposure (normal, dim with sensor noise, bright).
- Truth box: the axis-aligned box of the transformed landmarks, clipped to the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

SIZES = (24, 32, 48, 64, 96, 160, 320)
FRAME_SIZES = ((640, 480), (1280, 720))
EXPOSURES = ("normal", "dim", "bright")
NEGATIVE_SOURCES = ("coffee", "chelsea", "rocket", "coins", "immunohistochemistry",
                    "hubble_deep_field", "page", "text", "grass", "gravel", "brick", "cell",
                    "colorwheel", "retina", "moon", "clock", "stereo_motorcycle")
ASTRONAUT_BOX = (182.0, 88.0, 268.0, 173.0)  # landmark box by hand (brows to chin, jaw to jaw)


@dataclass
class Face:
    """A face source: RGB image, points whose bounding box is the landmark box, yaw class."""

    image: np.ndarray
    pts: np.ndarray  # (K, 2) 0-based pixels
    yaw34: bool


@dataclass
class Frame:
    """A bench frame and its truth: one row per pasted face."""

    bgr: np.ndarray
    boxes: np.ndarray  # (F, 4) truth landmark boxes, xyxy
    sizes: np.ndarray  # (F,) nominal face width [px]
    yaw34: np.ndarray  # (F,) bool
    angles: np.ndarray  # (F,) in-plane rotation [deg]
    exposure: str
    background: str


def yaw_asymmetry(pts: np.ndarray) -> float:
    """Nose tip's offset between the jaw ends (68 points): 0 frontal, +-1 profile."""
    dl, dr = np.linalg.norm(pts[30] - pts[0]), np.linalg.norm(pts[30] - pts[16])
    return float((dl - dr) / max(dl + dr, 1e-6))


def _ellipse(box: Sequence[float], n: int = 24) -> np.ndarray:
    x0, y0, x1, y1 = box
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([(x0 + x1) / 2 + (x1 - x0) / 2 * np.cos(t),
                     (y0 + y1) / 2 + (y1 - y0) / 2 * np.sin(t)], 1).astype(np.float32)


def _squeezed(face: Face, near: float) -> Face:
    """A perspective squeeze of the face (one side ``near`` times as tall, narrower): a rough
    stand-in for a turned head where no real three-quarter faces are available."""
    h, w = face.image.shape[:2]
    x0, y0 = face.pts.min(0)
    x1, y1 = face.pts.max(0)
    cy, hh, squeeze = (y0 + y1) / 2, (y1 - y0) / 2, 0.7
    src = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    xr = x0 + squeeze * (x1 - x0)
    dst = np.float32([[x0, y0], [xr, cy - near * hh], [xr, cy + near * hh], [x0, y1]])
    m = cv2.getPerspectiveTransform(src, dst)
    image = cv2.warpPerspective(face.image, m, (w, h), flags=cv2.INTER_LINEAR)
    pts = cv2.perspectiveTransform(face.pts[None], m)[0]
    return Face(image, pts.astype(np.float32), True)


def synthetic_faces() -> list[Face]:
    """The astronaut, upright and with two perspective squeezes (the only face in skimage.data)."""
    from skimage import data

    frontal = Face(data.astronaut(), _ellipse(ASTRONAUT_BOX), False)
    return [frontal, _squeezed(frontal, 0.85), _squeezed(frontal, 0.7)]


def _image_next_to(pts_path: Path) -> Path | None:
    from emodan_ros.data.readers import IMAGE_EXTENSIONS

    return next((p for p in sorted(pts_path.parent.glob(pts_path.stem + ".*"))
                 if p.suffix.lower() in IMAGE_EXTENSIONS), None)


def folder_faces(folders: Sequence[str], limit: int, rng: np.random.Generator,
                 pts_offset: float = 1.0, max_asymmetry: float = 0.55) -> list[Face]:
    """Faces from ``.pts`` + image folders; near-profile faces (asymmetry >= ``max_asymmetry``)
    are left out (outside the target range); ``|asymmetry| >= 0.2`` counts as three-quarter."""
    from emodan_ros.data.landmarks import list_pts_files, read_pts

    paths = [p for f in folders for p in list_pts_files(f)]
    if not paths:
        raise FileNotFoundError(f"no .pts files under {', '.join(folders)}")
    order = rng.permutation(len(paths))
    faces: list[Face] = []
    for i in order[:limit]:
        image_path = _image_next_to(Path(paths[i]))
        image = cv2.imread(str(image_path)) if image_path else None
        if image is None:
            continue
        pts = read_pts(paths[i]) - pts_offset
        a = abs(yaw_asymmetry(pts))
        if a < max_asymmetry:
            faces.append(Face(np.ascontiguousarray(image[:, :, ::-1]), pts, a >= 0.2))
    if not faces:
        raise FileNotFoundError(f"no readable face images next to the .pts files under {', '.join(folders)}")
    return faces


def load_backgrounds() -> list[tuple[str, np.ndarray]]:
    """The face-free scikit-image photos as RGB uint8."""
    from skimage import data

    out = []
    for name in NEGATIVE_SOURCES:
        x = getattr(data, name)()
        x = np.asarray(x[0] if isinstance(x, tuple) else x)
        if x.dtype == bool:
            x = x.astype(np.uint8) * 255
        if x.ndim == 2:
            x = np.stack([x] * 3, -1)
        out.append((name, np.ascontiguousarray(x[:, :, :3])))
    return out


def _background(bgs: list[tuple[str, np.ndarray]], width: int, height: int,
                rng: np.random.Generator) -> tuple[np.ndarray, str]:
    name, src = bgs[int(rng.integers(len(bgs)))]
    h, w = src.shape[:2]
    s = rng.uniform(0.5, 1.0)
    cw, ch = max(8, int(w * s)), max(8, int(h * s))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = cv2.resize(src[y:y + ch, x:x + cw], (width, height), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    tint = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    return np.clip(img.astype(np.float32) * tint, 0, 255), name


def _mask(face: Face) -> np.ndarray:
    """Feathered ellipse over the face and forehead; black crop padding (300-W) masked out."""
    h, w = face.image.shape[:2]
    x0, y0 = face.pts.min(0)
    x1, y1 = face.pts.max(0)
    bw, bh = x1 - x0, y1 - y0
    m = np.zeros((h, w), np.float32)
    cv2.ellipse(m, (int((x0 + x1) / 2), int((y0 + y1) / 2 - 0.12 * bh)),
                (int(0.72 * bw), int(0.82 * bh)), 0, 0, 360, 1.0, -1)
    m *= cv2.erode((face.image.max(2) > 8).astype(np.float32), np.ones((5, 5), np.uint8))
    k = max(3, int(0.15 * bw) | 1)
    return cv2.GaussianBlur(m, (k, k), 0)


def paste(canvas: np.ndarray, face: Face, size: float, angle: float, cx: float, cy: float,
          flip: bool) -> np.ndarray:
    """Paste ``face`` (landmark width ``size``) centred at (cx, cy) into float RGB ``canvas``;
    returns its truth box."""
    img, pts, mask = face.image, face.pts.copy(), _mask(face)
    if flip:
        img, mask = img[:, ::-1], mask[:, ::-1]
        pts[:, 0] = img.shape[1] - 1 - pts[:, 0]
    s = size / float(pts[:, 0].max() - pts[:, 0].min())
    if s < 1:  # pre-shrink with area averaging (warpAffine alone would alias)
        img = cv2.resize(np.ascontiguousarray(img), None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(np.ascontiguousarray(mask), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)
        pts, s = pts * s, 1.0
    c = (pts.min(0) + pts.max(0)) / 2
    m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), angle, s)
    m[:, 2] += np.array([cx, cy]) - c
    height, width = canvas.shape[:2]
    warped = cv2.warpAffine(np.ascontiguousarray(img), m, (width, height), flags=cv2.INTER_LINEAR)
    a = cv2.warpAffine(np.ascontiguousarray(mask), m, (width, height), flags=cv2.INTER_LINEAR)[:, :, None]
    canvas *= 1 - a
    canvas += a * warped
    q = pts @ m[:, :2].T + m[:, 2]
    return np.array([q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()], np.float32)


def _expose(img: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    if mode == "dim":
        img = img * 0.3 + rng.normal(0, 2.5, img.shape)
    elif mode == "bright":
        img = img * 1.45 + 15
    return np.clip(img, 0, 255).astype(np.uint8)


def make_frame(width: int, height: int, faces: list[Face], bgs: list[tuple[str, np.ndarray]],
               rng: np.random.Generator, k: int, sizes: Sequence[int] = SIZES,
               max_angle: float = 30.0, exposures: Sequence[str] = EXPOSURES) -> Frame:
    """One frame with one try per size (placed without overlap; sizes over 0.75 of the height
    skipped), the order of sizes rotated by ``k`` so no size always gets the free space."""
    canvas, bg = _background(bgs, width, height, rng)
    order = list(sizes)[::-1]
    if order:
        order = order[k % len(order):] + order[:k % len(order)]
    placed: list[tuple[float, float, float]] = []
    boxes, fsz, yaw, ang = [], [], [], []
    for size in order:
        if size > 0.75 * height:
            continue
        r, margin = 0.95 * size, 0.62 * size
        for _ in range(30):
            cx, cy = rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)
            if all((cx - x) ** 2 + (cy - y) ** 2 > (r + rr) ** 2 for x, y, rr in placed):
                break
        else:
            continue
        face = faces[int(rng.integers(len(faces)))]
        angle = float(rng.uniform(-max_angle, max_angle))
        boxes.append(paste(canvas, face, size, angle, cx, cy, bool(rng.random() < 0.5)))
        placed.append((cx, cy, r))
        fsz.append(size)
        yaw.append(face.yaw34)
        ang.append(angle)
    mode = exposures[int(rng.integers(len(exposures)))]
    bgr = np.ascontiguousarray(_expose(canvas, mode, rng)[:, :, ::-1])
    truth = np.asarray(boxes, np.float32).reshape(-1, 4)
    truth[:, [0, 2]] = np.clip(truth[:, [0, 2]], 0, width)
    truth[:, [1, 3]] = np.clip(truth[:, [1, 3]], 0, height)
    return Frame(bgr, truth, np.asarray(fsz, int), np.asarray(yaw, bool), np.asarray(ang, np.float32), mode, bg)


def match(truth: np.ndarray, dets: np.ndarray) -> tuple[np.ndarray, int]:
    """(hit flag per truth box, detections that hit nothing), greedy one-to-one by IoU.

    A hit: IoU >= 0.4, or each box's centre inside the other and sizes (sqrt area) within 1.6x;
    the second rule is for rotated faces, whose axis-aligned landmark box grows.
    """
    from emodan_ros.faces.boxes import iou_matrix

    hit = np.zeros(len(truth), bool)
    if len(dets) == 0 or len(truth) == 0:
        return hit, len(dets)
    iou = iou_matrix(truth, dets)
    ct, cd = (truth[:, :2] + truth[:, 2:]) / 2, (dets[:, :2] + dets[:, 2:]) / 2
    in_t = ((cd[None, :, 0] > truth[:, None, 0]) & (cd[None, :, 0] < truth[:, None, 2])
            & (cd[None, :, 1] > truth[:, None, 1]) & (cd[None, :, 1] < truth[:, None, 3]))
    in_d = ((ct[:, None, 0] > dets[None, :, 0]) & (ct[:, None, 0] < dets[None, :, 2])
            & (ct[:, None, 1] > dets[None, :, 1]) & (ct[:, None, 1] < dets[None, :, 3]))
    st = np.sqrt(np.clip(np.prod(truth[:, 2:] - truth[:, :2], 1), 1e-6, None))
    sd = np.sqrt(np.clip(np.prod(dets[:, 2:] - dets[:, :2], 1), 1e-6, None))
    ratio = np.maximum(st[:, None] / sd[None, :], sd[None, :] / st[:, None])
    ok = (iou >= 0.4) | (in_t & in_d & (ratio <= 1.6))
    used = np.zeros(len(dets), bool)
    for ti, di in sorted(zip(*np.nonzero(ok)), key=lambda p: -iou[p[0], p[1]]):
        if not hit[ti] and not used[di]:
            hit[ti] = used[di] = True
    return hit, int((~used).sum())
