"""`emodan bench`'s accuracy rows, each tool used the way its users run it.

- Landmarks: our model from the node's detector (BlazeFace, calibrated onto the landmark box), dlib's
  68-point predictor from dlib's own HOG detector (upsampled once, as dlib's examples do). A face a
  detector misses counts as missed; NME is given over the faces each found and over the faces both
  found. Files the checkpoint trained on are left out (they would favour us); dlib's predictor was
  trained on 300-W's training sets (AFW, HELEN train), so on those files the comparison favours dlib.
- Emotion on photos (``--frames NAME=CSV``, path,label manifests): our model through the node's
  frame path (detector, crop, model); ``fer``'s classifier on the same detector's face box crop, resized
  to its 64x64 grey input. Each image's largest face is scored; an image without a face is wrong
  for both. The argmax is taken over the dataset's classes that a model has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from emodan_ros.data.landmarks import PtsDataset, list_pts_files
from emodan_ros.data.readers import ManifestDataset, read_image
from emodan_ros.evaluation.metrics import nme
from emodan_ros.faces.boxes import best_overlap, largest_face
from emodan_ros.faces.classes import canonical_classes, class_mapping
from emodan_ros.faces.crop import box_from_landmarks

MATCH_IOU = 0.3  # a detection is the annotated face when it overlaps the landmark box this much


@dataclass
class LandmarkData:
    images: list[np.ndarray]
    landmarks: np.ndarray  # (N, 68, 2) image pixels, 0-based after the offset
    source: str  # which files were scored and why others were left out
    n_left_out: int = 0


def _recorded_folder(recorded: str, folders: Sequence[str | Path]) -> Path | None:
    """Where a run's landmark folder is now: its recorded path if that exists from here, else the
    bench folder whose path ends with the same two folders (``300w/afw``). A run records paths as it
    was given them (often relative: ``../shared/data/300w/afw``), so from another working directory
    the recorded path misses."""
    if Path(recorded).is_dir():
        return Path(recorded)
    tail = tuple(part for part in Path(recorded).parts if part not in ("..", ".", "/"))[-2:]
    for folder in folders:
        if len(tail) == 2 and Path(folder).resolve().parts[-2:] == tail:
            return Path(folder)
    return None


def trained_names(checkpoint: str | Path | None, folders: Sequence[str | Path] = ()) -> set[str]:
    """Names of the .pts files the checkpoint's run trained on (its folders minus its holdout).

    Raises ValueError when a training folder can be found neither as recorded nor among ``folders``
    while a bench folder has its name: its files could not be left out, and would favour us."""
    if not checkpoint:
        return set()
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    info = payload.get("data", {}).get("landmarks", {})
    held = set(info.get("holdout_files") or [])
    names: set[str] = set()
    for recorded in info.get("dirs", []):
        found = _recorded_folder(recorded, folders)
        if found is not None:
            names |= {Path(f).name for f in list_pts_files(found)}
        elif any(Path(folder).resolve().name == Path(recorded).name for folder in folders):
            raise ValueError(f"the checkpoint trained on {recorded}, which is not found from here and "
                             f"does not match the bench folders {list(map(str, folders))}: give the folder "
                             "by a path that ends in the same two folders, or run from where the model was "
                             "trained")
    return names - held


def load_landmark_data(dirs: Sequence[str | Path], checkpoint: str | Path | None, limit: int = 0,
                       offset: float = 0.0) -> LandmarkData:
    """Every .pts file under ``dirs`` except those the checkpoint trained on."""
    files = [f for d in dirs for f in list_pts_files(d)]
    if not files:
        raise ValueError(f"no .pts files under {list(map(str, dirs))}")
    trained = trained_names(checkpoint, dirs)
    kept = [f for f in files if Path(f).name not in trained]
    if not kept:
        raise ValueError(f"every .pts file under {list(map(str, dirs))} was in the model's training set")
    source = (f"{len(kept)} of {len(files)} .pts files; {len(files) - len(kept)} left out because the "
              "checkpoint trained on them" if len(kept) < len(files) else f"all {len(files)} .pts files")
    dataset = PtsDataset(files=kept, offset=offset)
    count = len(dataset) if limit <= 0 else min(limit, len(dataset))
    images, points = [], []
    for index in range(count):
        image = read_image(dataset.paths[index])
        if image is None:
            continue
        images.append(image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
        points.append(dataset.landmarks[index])
    return LandmarkData(images, np.asarray(points, np.float32).reshape(-1, 68, 2), source,
                        len(files) - len(kept))


def matching_box(boxes: np.ndarray, truth: np.ndarray) -> np.ndarray | None:
    """The detection that is the annotated face (best IoU with its landmark box), or None."""
    best = best_overlap(boxes, box_from_landmarks(truth), MATCH_IOU)
    return None if best is None else np.asarray(boxes[best], np.float64)


def landmarks_from_detector(predictor: Any, data: LandmarkData, detector: Any) -> np.ndarray:
    """Our landmarks from the node's detector; NaN rows where it missed the face."""
    out = np.full(data.landmarks.shape, np.nan, np.float32)
    for k, (image, truth) in enumerate(tqdm(list(zip(data.images, data.landmarks)), desc="landmarks ours",
                                            leave=False, dynamic_ncols=True)):
        boxes, _ = detector.detect(image)
        box = matching_box(np.asarray(boxes), truth)
        if box is not None:
            out[k] = predictor.predict(image, box[None]).landmarks[0]
    return out


def dlib_from_own_detector(peer: Any, data: LandmarkData) -> np.ndarray:
    """dlib's landmarks from dlib's own HOG detector; NaN rows where it found no matching face."""
    hog = peer.dlib.get_frontal_face_detector()
    out = np.full(data.landmarks.shape, np.nan, np.float32)
    for k, (image, truth) in enumerate(tqdm(list(zip(data.images, data.landmarks)), desc="landmarks dlib",
                                            leave=False, dynamic_ncols=True)):
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        rects = hog(rgb, 1)
        raw = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)
        # Matched after the node's dlib calibration (dlib's box is not the landmark box); dlib gets its raw box.
        best = best_overlap(peer.calibration.apply(raw), box_from_landmarks(truth), MATCH_IOU)
        if best is not None:
            out[k] = peer.predict(image, raw[best], convert=False)
    return out


def landmark_scores(predicted: np.ndarray, truth: np.ndarray, both: np.ndarray) -> dict[str, Any]:
    """Found fraction, NME over the faces found and over the faces every compared tool found."""
    found = ~np.isnan(predicted).any(axis=(1, 2))
    result: dict[str, Any] = {"found": float(found.mean()) if len(found) else 0.0, "n": int(len(found)),
                              "n_found": int(found.sum())}
    if found.any():
        result["nme_inter_ocular_found"] = float(nme(predicted[found], truth[found]).mean())
    if both.any():
        errors = nme(predicted[both], truth[both])
        result |= {"nme_inter_ocular": float(errors.mean()), "n_common": int(both.sum()),
                   "failure_rate_0.08": float((errors > 0.08).mean())}
    return result


# -------------------------------------------------------------- emotion ------

@dataclass
class FrameSet:
    name: str
    dataset: ManifestDataset


def parse_frame_sets(items: Sequence[str]) -> list[FrameSet]:
    """``NAME=CSV`` arguments -> manifests (path,label; extra columns ignored)."""
    sets = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--frames expects NAME=CSV, got {item!r}")
        dataset = ManifestDataset(path)
        if len(dataset) == 0:
            raise ValueError(f"{path}: no readable labelled images")
        sets.append(FrameSet(name, dataset))
    return sets


def restricted_accuracy(probs: np.ndarray, model_classes: Sequence[str], truth: np.ndarray,
                        dataset_classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy and per-class recall with the argmax over the dataset's classes the model has.

    ``probs`` rows of NaN (no face found) count as wrong. ``truth``: indices into ``dataset_classes``.
    """
    to_dataset = class_mapping(model_classes, dataset_classes)
    scores = np.full((len(probs), len(dataset_classes)), -np.inf)
    for src, dst in enumerate(to_dataset):
        if dst >= 0:
            scores[:, dst] = np.maximum(scores[:, dst], np.nan_to_num(probs[:, src], nan=-np.inf))
    found = ~np.isnan(probs).any(axis=1)
    predicted = np.where(found, scores.argmax(axis=1), -1)
    correct = predicted == truth
    recall = {c: float(correct[truth == k].mean()) for k, c in enumerate(dataset_classes) if (truth == k).any()}
    return {"accuracy": float(correct.mean()), "n": int(len(truth)), "face_found": float(found.mean()),
            "per_class_recall": recall, "min_class_recall": min(recall.values()) if recall else None,
            "predicted_share": {c: float((predicted == k).mean()) for k, c in enumerate(dataset_classes)}}


def frame_emotion_rows(predictor: Any, fer: Any, frame_sets: Sequence[FrameSet], detector: Any) -> list[dict]:
    """Ours through the frame path and fer on the same face boxes, per manifest."""
    from emodan_ros.faces.config import PipelineConfig
    from emodan_ros.faces.pipeline import EmotionPipeline

    pipeline = EmotionPipeline(predictor, detector, PipelineConfig(redetect_every=1, smoothing=0.0,
                                                                   detect_async=False))
    rows = []
    for frame_set in frame_sets:
        dataset = frame_set.dataset
        classes = canonical_classes(dataset.classes)
        ours = np.full((len(dataset), len(predictor.class_names)), np.nan, np.float32)
        theirs = None if fer is None else np.full((len(dataset), len(fer.classes)), np.nan, np.float32)
        truth = np.empty(len(dataset), np.int64)
        for index in tqdm(range(len(dataset)), desc=f"emotion {frame_set.name}", leave=False, dynamic_ncols=True):
            sample = dataset[index]
            image = sample.image if sample.image.ndim == 3 else cv2.cvtColor(sample.image, cv2.COLOR_GRAY2BGR)
            truth[index] = sample.label
            pipeline.reset()
            faces = pipeline.process(np.ascontiguousarray(image))
            if not faces:
                continue
            ours[index] = largest_face(faces).probs
            if theirs is not None:
                # the detector's own box (largest first), not ours refined by our landmarks: fer's crop must
                # not depend on the model it is compared with
                boxes, _ = detector.detect(np.ascontiguousarray(image))
                if len(boxes) == 0:
                    continue
                x0, y0, x1, y1 = np.clip(np.round(boxes[0]), 0, [image.shape[1], image.shape[0]] * 2).astype(int)
                if x1 > x0 and y1 > y0:
                    theirs[index] = fer.predict([image[y0:y1, x0:x1]])[0]
        base = {"set": frame_set.name, "dataset_classes": list(classes)}
        rows.append({"row": "ours, frame path", "kind": "ours", **base,
                     **restricted_accuracy(ours, predictor.class_names, truth, classes)})
        if theirs is not None:
            rows.append({"row": "fer mini-Xception, face box crop", "kind": "peer", **base,
                         **restricted_accuracy(theirs, fer.classes, truth, classes)})
    return rows
