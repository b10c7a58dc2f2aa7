"""Teacher landmarks: dlib's 68-point predictor run once on emotion photos, cached per dataset.

300-W gives this project 1,086 landmark faces, nearly all neutral or smiling; the emotion photos
(ExpW, the LFW-style set) show thousands of faces in the poses, expressions and light the node
meets but carry no landmarks. dlib's predictor (trained on 300-W's training sets, 2.9% NME here)
labels them as its users run it: from its own HOG detector. A face keeps its teacher landmarks only
where dlib's detection is the dataset's face (it overlaps the node-detector box the sample already
has) and the 68 points span about the detection, so the teacher adds no faces the node would not
crop. The images are enlarged 2x before dlib sees them: its HOG window needs ~80 px faces, and its
points are whole pixels, so half-pixel steps in the original image.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from tqdm import tqdm

from emodan_ros.data.readers import read_image
from emodan_ros.faces.boxes import box_area, iou_matrix
from emodan_ros.faces.crop import box_for_full_crop, box_from_landmarks

TEACHERS = ("dlib",)
UPSCALE = 2
MATCH_IOU = 0.4  # dlib's calibrated box against the sample's box: the same face
SPAN_IOU = 0.5  # the landmarks' own box against dlib's calibrated box: not a degenerate fit


class TeacherError(RuntimeError):
    """The teacher cannot run (dlib or its model file missing)."""


class DlibTeacher:
    """dlib's HOG detector and 68-point predictor (``face-recognition-models``' file) as a labeller."""

    name = "dlib"

    def __init__(self) -> None:
        try:
            import dlib  # type: ignore[import-not-found]
            import face_recognition_models  # type: ignore[import-not-found]
        except ModuleNotFoundError as error:
            raise TeacherError("landmark_teacher 'dlib' needs `pip install dlib-bin face-recognition-models` "
                               "(requirements-bench.txt)") from error
        path = face_recognition_models.pose_predictor_model_location()
        if not Path(path).is_file():
            raise TeacherError(f"dlib's 68-point model file {path} is missing")
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(path)

    def __call__(self, image_bgr: np.ndarray, prior: np.ndarray | None) -> np.ndarray | None:
        """(68, 2) 0-based points of the face dlib finds at ``prior`` (landmark-box convention), or None."""
        from emodan_ros.faces.detector import _DLIB_CAL

        big = cv2.resize(image_bgr, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_LINEAR)
        rgb = np.ascontiguousarray(big[:, :, ::-1])
        rects = self._detector(rgb, 0)
        if len(rects) == 0:
            return None
        raw = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)
        boxes = _DLIB_CAL.apply(raw) / UPSCALE
        if prior is not None:
            overlap = iou_matrix(np.asarray(prior, np.float32)[None], boxes)[0]
            best = int(overlap.argmax())
            if overlap[best] < MATCH_IOU:
                return None
        else:
            best = int(box_area(boxes).argmax())
        shape = self._predictor(rgb, rects[best])
        # pixel centres: x_big = UPSCALE * x + (UPSCALE - 1) / 2 under cv2's linear resize
        points = (np.array([[p.x, p.y] for p in shape.parts()], np.float32) - (UPSCALE - 1) / 2) / UPSCALE
        span = box_from_landmarks(points)[None].astype(np.float32)
        if iou_matrix(span, boxes[best:best + 1])[0, 0] < SPAN_IOU:
            return None
        return points


Teacher = Callable[[np.ndarray, "np.ndarray | None"], "np.ndarray | None"]


def teacher_landmarks(dataset: Any, cache_dir: str | Path | None = None,
                      teacher: str | Teacher = "dlib", full_crop_prior: bool = False) -> dict[str, int]:
    """Give ``dataset``'s items the teacher's landmarks where it finds their face; returns counts.

    Run after :func:`~emodan_ros.data.face_boxes.detect_boxes` (the boxes say which face is the
    sample's). ``full_crop_prior``: an item without a box is the face its whole image frames (FER+'s
    crops: the box :func:`box_for_full_crop` implies), so dlib's face must overlap that box; else the
    largest face dlib finds. ``teacher``: a name in ``TEACHERS`` or a callable ``(image, box) -> points
    | None`` with a ``name``. Cached like the boxes, keyed by the image paths, the boxes and the teacher's name.
    """
    if isinstance(teacher, str) and teacher not in TEACHERS:
        raise TeacherError(f"landmark_teacher must be one of {TEACHERS}, got {teacher!r}")
    name = teacher if isinstance(teacher, str) else teacher.name
    priors = [dataset.box(i) for i in range(len(dataset))]
    text = "".join(repr(None if b is None else np.round(b, 3).tolist()) for b in priors)
    rule = "full-crop" if full_crop_prior else ""
    key = hashlib.sha1(("\n".join(dataset.paths) + name + text + rule).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"teacher_{key}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        stored = np.load(cache)
        points, found = stored["points"], stored["found"]
    else:
        label = DlibTeacher() if isinstance(teacher, str) else teacher
        points = np.zeros((len(dataset), 68, 2), np.float32)
        found = np.zeros(len(dataset), bool)
        for index in tqdm(range(len(dataset)), desc=f"{name} landmarks", leave=False, dynamic_ncols=True):
            image = read_image(dataset.paths[index])
            if image is None:
                continue
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            prior = priors[index]
            if prior is None and full_crop_prior:
                prior = box_for_full_crop(image.shape[1], image.shape[0])
            result = label(image, prior)
            if result is not None:
                points[index], found[index] = result, True
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, points=points, found=found)
    dataset.landmarks = [points[i].copy() if found[i] else dataset.landmarks[i] for i in range(len(dataset))]
    return {"labelled": int(found.sum()), "unlabelled": int((~found).sum())}
