"""`emodan eval`: how good is a model on an image dataset, with a report a person can read.

Dataset classes are matched to the model's classes by name (``classes.class_mapping``): an image
whose class the model does not know is kept in predictions.csv, counted in ``unknown_classes``,
and left out of the scores instead of being scored as wrong or silently dropped. With
``restrict_to_dataset_classes`` the argmax only chooses among the model classes the dataset has
(the usual cross-dataset protocol, e.g. a FER+ model on a 7-class set without contempt).

``input="crop"`` takes each image as the face crop (FER style); ``input="frame"`` sends each image
through the node's own path (detector, crop, model: :class:`EmotionPipeline`), one image at a time
with the tracker reset, and scores the largest face.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from emodan_ros.data.formats import load_dataset
from emodan_ros.evaluation.records import Record, json_safe, progress, write_predictions
from emodan_ros.faces.boxes import largest_face
from emodan_ros.faces.classes import canonical_classes, class_mapping
from emodan_ros.faces.crop import box_for_full_crop, box_from_landmarks
from emodan_ros.evaluation.metrics import summarize
from emodan_ros.compat import find_default_model
from emodan_ros.model.device import set_torch_threads

INPUTS = ("crop", "frame")


@dataclass
class Scored:
    """Metrics plus the per-record predicted index (-1: no face) under the chosen argmax rule."""

    metrics: dict[str, Any]
    pred: np.ndarray
    allowed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


class FullFrameDetector:
    """'Detector' for frames that are face crops: the whole image is the face crop.

    Lets crop datasets (and bags made from them) go through the node's pipeline unchanged.
    """

    name = "full"

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = image_bgr.shape[:2]
        return box_for_full_crop(width, height)[None].astype(np.float32), np.ones(1, np.float32)


def make_eval_detector(name: str, max_side: int = 0, model_path: str = "",
                       min_face_fraction: float = 0.08) -> Any:
    """The node's detectors plus ``full`` (whole image = face crop)."""
    if name == "full":
        return FullFrameDetector()
    from emodan_ros.faces.detector import make_detector

    return make_detector(name, max_side=max_side, model_path=model_path, min_face_fraction=min_face_fraction)


def allowed_classes(model_classes: Sequence[str], dataset_classes: Sequence[str], restrict: bool) -> np.ndarray:
    """Mask of the model classes the argmax may choose."""
    allowed = np.ones(len(model_classes), bool)
    if restrict and len(dataset_classes):
        mapping = class_mapping(dataset_classes, model_classes)
        allowed[:] = False
        allowed[mapping[mapping >= 0]] = True
        if not allowed.any():
            raise ValueError(f"no dataset class {list(dataset_classes)} is a model class {list(model_classes)}")
    return allowed


def predicted_index(probs: np.ndarray | None, allowed: np.ndarray) -> int:
    if probs is None:
        return -1
    return int(np.argmax(np.where(allowed, probs, -np.inf)))


def score(records: Sequence[Record], model_classes: Sequence[str], dataset_classes: Sequence[str],
          restrict: bool = False, threshold: float = 0.08) -> Scored:
    """Metrics over records whose true class the model knows and where a face was found.

    Besides :func:`metrics.summarize`: image counts, ``detection_rate`` (faces found / images
    that got an answer),
    ``accuracy_counting_misses`` (a missed face counts as wrong), ``unknown_classes`` {dataset
    class: images}, ``class_mapping`` and, with ``restrict``, ``restricted_to``.
    """
    model_classes = list(model_classes)
    allowed = allowed_classes(model_classes, dataset_classes, restrict)
    pred = np.array([predicted_index(r.probs, allowed) for r in records], np.int64)
    true = np.array([r.true for r in records], np.int64)
    found = pred >= 0
    labelled = true >= 0
    unknown: dict[str, int] = {}
    for r in records:
        if r.true_name is not None and r.true < 0:
            unknown[r.true_name] = unknown.get(r.true_name, 0) + 1
    use = found & labelled
    answered = np.array([not r.no_output for r in records], bool)
    lm_pred = [r.landmarks for r in records if r.landmarks is not None and r.gt_landmarks is not None]
    lm_gt = [r.gt_landmarks for r in records if r.landmarks is not None and r.gt_landmarks is not None]
    metrics: dict[str, Any] = {}
    if use.any():
        metrics.update(summarize(true[use], pred[use], model_classes))
    else:
        metrics.update({"n": 0, "accuracy": float("nan"), "macro_f1": float("nan")})
    if lm_pred:
        lm = summarize(pred_landmarks=np.stack(lm_pred), gt_landmarks=np.stack(lm_gt), threshold=threshold)
        lm.pop("n", None)
        metrics.update(lm)
    n_labelled_known = int(labelled.sum())
    metrics.update({
        "n_images": len(records),
        "n_faces_found": int(found.sum()),
        "detection_rate": float(found.sum() / answered.sum()) if answered.any() else float("nan"),
        "n_labelled_known_class": n_labelled_known,
        "n_unlabelled": sum(1 for r in records if r.true_name is None),
        "accuracy_counting_misses": float((pred[labelled] == true[labelled]).mean()) if n_labelled_known
        else float("nan"),
        "unknown_classes": unknown,
        "n_unknown_class": int(sum(unknown.values())),
        "class_mapping": {name: (model_classes[j] if j >= 0 else None)
                          for name, j in zip(dataset_classes, class_mapping(dataset_classes, model_classes))},
    })
    flips = [(predicted_index(r.probs, allowed), predicted_index(r.flipped_probs, allowed))
             for r in records if r.flipped_probs is not None]
    if flips:
        # A horizontally mirrored face shows the same emotion: how often the prediction agrees.
        metrics["flip_agreement"] = float(np.mean([a == b for a, b in flips]))
    if restrict:
        metrics["restricted_to"] = [c for c, ok in zip(model_classes, allowed) if ok]
    return Scored(metrics, pred, allowed)


def _crop_batches(dataset: Any, limit: int | None, batch_size: int) -> Iterable[list[tuple[int, Any]]]:
    """Consecutive samples of equal image size (predict_crops needs one size per batch)."""
    batch: list[tuple[int, Any]] = []
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        sample = dataset[index]
        if batch and (len(batch) >= batch_size or batch[0][1].image.shape[:2] != sample.image.shape[:2]):
            yield batch
            batch = []
        batch.append((index, sample))
    if batch:
        yield batch


def _true_of(sample: Any, dataset_classes: Sequence[str], mapping: np.ndarray) -> tuple[str | None, int]:
    if sample.label < 0:
        return None, -1
    return dataset_classes[sample.label], int(mapping[sample.label])


def run_crops(predictor: Any, dataset: Any, limit: int | None = None, batch_size: int = 64) -> list[Record]:
    """Each image is the face crop: batched predict_crops."""
    dataset_classes = canonical_classes(dataset.classes) if dataset.classes else ()
    mapping = class_mapping(dataset_classes, predictor.class_names)
    records: list[Record] = []
    total = len(dataset) if limit is None else min(limit, len(dataset))
    bar = progress(range(total), total, "eval (crop)")
    counter = iter(bar)
    for batch in _crop_batches(dataset, limit, batch_size):
        images = np.stack([s.image for _, s in batch])
        if all(s.landmarks is not None for _, s in batch):
            # 300-W protocol: the face is given by the box of its true landmarks.
            boxes = np.stack([box_from_landmarks(s.landmarks) for _, s in batch])
            out = predictor.predict_images(images, boxes)
            flipped = None
        else:
            boxes = np.stack([box_for_full_crop(s.image.shape[1], s.image.shape[0]) for _, s in batch])
            out = predictor.predict_crops(images)
            flipped = None
            if not getattr(predictor, "flip_average", False):  # averaged answers agree by construction
                flipped = predictor.predict_crops(np.ascontiguousarray(images[:, :, ::-1])).probs
        for k, (_, sample) in enumerate(batch):
            name, true = _true_of(sample, dataset_classes, mapping)
            records.append(Record(key=sample.path, true_name=name, true=true, probs=out.probs[k],
                                  landmarks=out.landmarks[k], gt_landmarks=sample.landmarks, box=boxes[k],
                                  flipped_probs=None if flipped is None else flipped[k]))
            next(counter, None)
    return records


def run_frames(pipeline: Any, dataset: Any, limit: int | None = None) -> list[Record]:
    """Each image through the node's pipeline (tracker reset per image); the largest face is scored."""
    import cv2

    dataset_classes = canonical_classes(dataset.classes) if dataset.classes else ()
    mapping = class_mapping(dataset_classes, pipeline.class_names)
    total = len(dataset) if limit is None else min(limit, len(dataset))
    records: list[Record] = []
    for index in progress(range(total), total, "eval (frame)"):
        sample = dataset[index]
        image = sample.image
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        pipeline.reset()
        faces = pipeline.process(np.ascontiguousarray(image))
        name, true = _true_of(sample, dataset_classes, mapping)
        record = Record(key=sample.path, true_name=name, true=true, gt_landmarks=sample.landmarks)
        if faces:
            face = largest_face(faces)
            record.probs, record.landmarks, record.box = face.probs, face.landmarks, face.box
        records.append(record)
    return records


def image_reader(dataset: Any) -> Any:
    """Record -> its image, re-read from the dataset by path (for the saliency figure)."""
    index = {p: i for i, p in enumerate(dataset.paths)}

    def image_of(record: Record) -> np.ndarray | None:
        i = index.get(record.key)
        return None if i is None else dataset[i].image

    return image_of


def evaluate(model: str | None, data: str, fmt: str, out: str, input_kind: str = "crop",
             restrict: bool = False, usage: str | None = None, detector: str = "blaze",
             detector_model: str = "", detector_max_side: int = 0, device: str = "auto",
             precision: str = "fp32", batch_size: int = 64, limit: int | None = None,
             saliency_per_class: int = 2, pts_offset: float = 0.0, predictor: Any = None,
             flip_average: bool = False) -> dict[str, Any]:
    """Run the evaluation and write metrics.json, predictions.csv, report.md and plots into ``out``."""
    from emodan_ros.evaluation.report import write_report

    if input_kind not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}, got {input_kind!r}")
    if predictor is None:
        from emodan_ros.model.predictor import Predictor

        model_path = Path(model) if model else find_default_model()
        predictor = Predictor.from_checkpoint(model_path, device=device, precision=precision,
                                              flip_average=flip_average)
    dataset = load_dataset(data, fmt, usage=usage, pts_offset=pts_offset)
    if len(dataset) == 0:
        raise ValueError(f"{data}: no readable {fmt} samples")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if input_kind == "crop":
        records = run_crops(predictor, dataset, limit, batch_size)
    else:
        from emodan_ros.faces.config import PipelineConfig
        from emodan_ros.faces.pipeline import EmotionPipeline

        pipeline = EmotionPipeline(predictor, make_eval_detector(detector, detector_max_side, detector_model),
                                   PipelineConfig(redetect_every=1, smoothing=0.0, detect_async=False))
        records = run_frames(pipeline, dataset, limit)
    dataset_classes = canonical_classes(dataset.classes) if dataset.classes else ()
    scored = score(records, predictor.class_names, dataset_classes, restrict)
    metrics = scored.metrics
    unknown = dict(getattr(dataset, "unknown_classes", {}) or {})
    for name, count in unknown.items():  # readers that skip unknown folders already counted them
        metrics["unknown_classes"][name] = metrics["unknown_classes"].get(name, 0) + count
    metrics["n_unknown_class"] = int(sum(metrics["unknown_classes"].values()))
    metrics.update({
        "input": input_kind, "format": fmt, "data": str(data),
        "model": str(getattr(predictor, "source", "")), "model_classes": list(predictor.class_names),
        "flip_average": bool(getattr(predictor, "flip_average", False)),
        "precision": str(getattr(predictor, "precision", "")),
        "dataset_classes": list(dataset_classes),
        "n_unreadable": len(dataset.bad_files), "unreadable": list(dataset.bad_files[:100]),
    })
    if input_kind == "frame":
        metrics["detector"] = detector
    write_predictions(out_dir / "predictions.csv", records, scored.pred, predictor.class_names)
    (out_dir / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
    write_report(out_dir, metrics, records, scored.pred, predictor,
                 image_of=image_reader(dataset), title=f"Evaluation on {data}",
                 saliency_per_class=saliency_per_class)
    return metrics


def main(args: Any) -> int:
    set_torch_threads(args.torch_threads)
    metrics = evaluate(args.model, args.data, args.format, args.out, args.input,
                       restrict=args.restrict_to_dataset_classes, usage=args.usage, detector=args.detector,
                       detector_model=args.detector_model, detector_max_side=args.detector_max_side,
                       device=args.device, precision=args.precision, batch_size=args.batch_size,
                       limit=args.limit, saliency_per_class=args.saliency_per_class, pts_offset=args.pts_offset,
                       flip_average=args.flip_average)
    print(json.dumps({k: json_safe(metrics[k]) for k in ("n", "accuracy", "macro_f1", "detection_rate",
                                                         "n_unknown_class", "n_unreadable") if k in metrics}))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0
