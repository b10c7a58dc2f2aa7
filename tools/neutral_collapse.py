"""Why strong expressions come out "neutral": one model, several inputs and read-outs, per-class recall.

    python tools/neutral_collapse.py --model M.pt --ferplus-train FER2013Train \
        --set taiwanese=../shared/data/taiwanese_posed/labels.csv --set expw=../shared/data/expw/val.csv

Rows per set (argmax over the set's classes, every image counted, no face = wrong):
- ``frame``: the node's frame path (detector, crop, model);
- ``frame / FER+ prior``: the same probabilities divided by FER+'s training class frequencies (how
  much of the collapse is the label prior the model learnt);
- ``whole image``: the photo as the face crop (is it the detector's framing?);
- ``frame at 48 px``: the face shrunk to FER's 48 px and back before the crop (is it resolution?).
Prints a Markdown table and writes it as JSON next to ``--out``. Evaluation only: nothing is tuned.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from emodan_ros.bench.accuracy import parse_frame_sets, restricted_accuracy
from emodan_ros.data.readers import FerPlusDataset
from emodan_ros.faces.boxes import largest_face
from emodan_ros.faces.classes import canonical_classes
from emodan_ros.faces.config import PipelineConfig
from emodan_ros.faces.crop import to_gray
from emodan_ros.faces.detector import make_detector
from emodan_ros.faces.pipeline import EmotionPipeline
from emodan_ros.model.predictor import Predictor


def ferplus_prior(root: str, classes: tuple[str, ...]) -> np.ndarray:
    """Majority-label class frequencies of a FER+ training folder, in ``classes`` order."""
    labels = np.asarray(FerPlusDataset(root, scheme="majority", verify=False).labels)
    counts = np.bincount(labels, minlength=len(classes)).astype(np.float64)
    return np.maximum(counts, 1.0) / counts.sum()


def soften(image: np.ndarray, box: np.ndarray, side: int = 48) -> np.ndarray:
    """The frame with its face resampled to ``side`` px wide and back (a FER-resolution face)."""
    width = max(float(box[2] - box[0]), 1.0)
    factor = min(1.0, side / width)
    small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)


def analyse(model: str, sets: list[str], ferplus_train: str) -> list[dict]:
    predictor = Predictor.from_checkpoint(model, "cpu", "fp32")
    prior = ferplus_prior(ferplus_train, predictor.class_names)
    pipeline = EmotionPipeline(predictor, make_detector("blaze"),
                               PipelineConfig(redetect_every=1, smoothing=0.0, detect_async=False))
    n_classes = len(predictor.class_names)
    rows = []
    for frame_set in parse_frame_sets(sets):
        dataset = frame_set.dataset
        classes = canonical_classes(dataset.classes)
        variants = {k: np.full((len(dataset), n_classes), np.nan, np.float32)
                    for k in ("frame", "frame / FER+ prior", "whole image", "frame at 48 px")}
        truth = np.empty(len(dataset), np.int64)
        for i in tqdm(range(len(dataset)), desc=frame_set.name, dynamic_ncols=True):
            sample = dataset[i]
            image = sample.image if sample.image.ndim == 3 else cv2.cvtColor(sample.image, cv2.COLOR_GRAY2BGR)
            image = np.ascontiguousarray(image)
            truth[i] = sample.label
            side = predictor.input_size
            variants["whole image"][i] = predictor.predict_crops(
                cv2.resize(to_gray(image), (side, side), interpolation=cv2.INTER_AREA)[None]).probs[0]
            pipeline.reset()
            faces = pipeline.process(image)
            if not faces:
                continue
            face = largest_face(faces)
            variants["frame"][i] = face.probs
            corrected = face.probs / prior
            variants["frame / FER+ prior"][i] = corrected / corrected.sum()
            pipeline.reset()
            soft = pipeline.process(soften(image, face.box))
            if soft:
                variants["frame at 48 px"][i] = largest_face(soft).probs
        for name, probs in variants.items():
            rows.append({"set": frame_set.name, "input": name,
                         **restricted_accuracy(probs, predictor.class_names, truth, classes)})
    return rows


def table(rows: list[dict]) -> str:
    classes = list(rows[0]["per_class_recall"]) if rows else []
    lines = []
    for set_name in dict.fromkeys(r["set"] for r in rows):
        subset = [r for r in rows if r["set"] == set_name]
        classes = list(subset[0]["per_class_recall"])
        lines += [f"### {set_name}", "", "| input | accuracy % | called neutral % | " + " | ".join(classes) + " |",
                  "|---" * (len(classes) + 3) + "|"]
        for r in subset:
            recall = " | ".join(f"{100 * r['per_class_recall'][c]:.0f}" for c in classes)
            neutral = 100 * r["predicted_share"].get("neutral", 0.0)
            lines.append(f"| {r['input']} | {100 * r['accuracy']:.1f} | {neutral:.0f} | {recall} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--ferplus-train", required=True, help="FER+ training folder (for its class prior)")
    parser.add_argument("--set", action="append", required=True, metavar="NAME=CSV")
    parser.add_argument("--out", default="neutral_collapse.json")
    args = parser.parse_args()
    rows = analyse(args.model, args.set, args.ferplus_train)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
