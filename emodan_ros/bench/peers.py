"""`emodan bench`: our model next to the offline tools a user would pick instead, in one process run.

Every row sees the same images, so accuracy differences and speed ratios are comparable; absolute
times are only meaningful with the machine, which the report names.

- Emotion, on a FER+ folder (FER2013Valid, majority labels): our model (fp32, bf16, torch.compile),
  the paper-size model (untrained: speed only) and ``fer``'s shipped mini-Xception (tflite, run
  with LiteRT and ``fer``'s own preprocessing). ``fer`` has 7 classes and no *contempt*: accuracy
  is compared on images whose label is one of the shared classes, each model's argmax taken over
  the shared classes only.
- Landmarks, on any .pts folders (files the checkpoint trained on left out): our model from the
  node's detector, dlib's 68-point shape predictor from dlib's own HOG detector (``accuracy.py``).
- Emotion on photos (``--frames NAME=CSV``): ours through the frame path, ``fer`` on the same face box.
- Detection: every detector the node supports that can be created here, on the 300-W images.
- Node end to end: ``emodan_ros.bench.node`` for 1, 2, 4 and 8 faces per frame (needs ROS 2).
- CUDA (only when PyTorch sees a GPU): fp16, batch 1 to 256.

Peers are optional, a missing one gives a row that says why it was skipped. Install them with
``pip install -r requirements-bench.txt && pip install --no-deps fer`` (or ``pip install ".[bench]"``
and the same ``fer`` line); then ``emodan bench --model M.pt --ferplus FER2013Valid --landmarks
300w/afw 300w/helen_train --out bench/``. Memory is the peak resident set size (RSS) growth of this process
while a row runs (Linux ``/proc/self/clear_refs`` resets the peak), which covers PyTorch, dlib and
LiteRT alike; memory freed by earlier rows can be reused, so it is a lower bound.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from emodan_ros.faces.classes import FERPLUS_CLASSES, canonical_classes, class_mapping
from emodan_ros.faces.boxes import iou_matrix
from emodan_ros.faces.crop import box_from_landmarks
from emodan_ros.model.dan import PRESETS, DANConfig
from emodan_ros.bench import accuracy
from emodan_ros.bench.accuracy import LandmarkData
from emodan_ros.data.readers import FerPlusDataset
from emodan_ros.model.predictor import Predictor
from emodan_ros.bench.measure import Skip, machine_description, peak_rss_delta_mib, rss_kib, time_calls
from emodan_ros.bench.report import write_outputs

FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer's output order
BATCHES = (1, 8)
TIME_BUDGET_S = 15.0  # per timing: stop early (after at least 3 calls) so slow rows stay bounded
NODE_FACES = (1, 2, 4, 8)
CUDA_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# ------------------------------------------------------------------- data ------

@dataclass
class EmotionData:
    crops: list[np.ndarray]  # grey face images as stored (FER: 48x48)
    labels: np.ndarray  # FER+ class indices
    root: str


def load_emotion_data(root: str | Path, limit: int = 0) -> EmotionData:
    dataset = FerPlusDataset.evaluation(root)
    count = len(dataset) if limit <= 0 else min(limit, len(dataset))
    crops, labels = [], []
    for index in range(count):
        sample = dataset[index]
        crops.append(sample.image)
        labels.append(sample.label)
    return EmotionData(crops, np.asarray(labels, np.int64), str(root))


def shared_classes(*vocabularies: Sequence[str]) -> tuple[str, ...]:
    """Classes (FER+ names, FER+ order) every vocabulary has, matched by name."""
    names = [set(canonical_classes(v)) for v in vocabularies]
    return tuple(c for c in FERPLUS_CLASSES if all(c in n for n in names))


def emotion_scores(probs: np.ndarray, model_classes: Sequence[str], labels: np.ndarray,
                   shared: Sequence[str]) -> dict[str, Any]:
    """Accuracy on images labelled with a shared class (argmax over shared classes), and on all."""
    to_shared = class_mapping(model_classes, shared)
    shared_probs = np.full((len(probs), len(shared)), -1.0)
    for src, dst in enumerate(to_shared):
        if dst >= 0:
            shared_probs[:, dst] = probs[:, src]
    label_shared = class_mapping(FERPLUS_CLASSES, shared)[labels]
    keep = label_shared >= 0
    out: dict[str, Any] = {
        "accuracy_shared": float(np.mean(shared_probs[keep].argmax(1) == label_shared[keep])) if keep.any() else None,
        "n_shared": int(keep.sum()),
    }
    to_ferplus = class_mapping(model_classes, FERPLUS_CLASSES)
    if (to_ferplus >= 0).all() and len(set(to_ferplus)) == len(FERPLUS_CLASSES):
        out["accuracy_all"] = float(np.mean(to_ferplus[probs.argmax(1)] == labels))
        out["n_all"] = int(len(labels))
    return out


# ---------------------------------------------------------------- our model ------

def _predict_crops_all(predictor: Predictor, crops: list[np.ndarray], batch: int = 64) -> np.ndarray:
    starts = tqdm(range(0, len(crops), batch), desc="emotion crops", leave=False, dynamic_ncols=True)
    out = [predictor.predict_crops(np.stack(crops[i:i + batch])).probs for i in starts]
    return np.concatenate(out) if out else np.zeros((0, len(predictor.class_names)), np.float32)


def _speed(run_batch: Callable[[int], Any], repeats: int) -> dict[str, Any]:
    """Per-face latency at each batch size, faces/s at the largest, peak RSS growth at the largest."""
    out: dict[str, Any] = {}
    for batch in BATCHES:
        timing = time_calls(lambda b=batch: run_batch(b), repeats)
        out[f"batch{batch}"] = timing.to_dict()
        out[f"ms_per_face_b{batch}"] = round(timing.median_ms / batch, 3)
    largest = BATCHES[-1]
    out["faces_per_s"] = round(1000.0 * largest / out[f"batch{largest}"]["median_ms"], 1)
    out["peak_rss_mib"] = peak_rss_delta_mib(lambda: [run_batch(largest) for _ in range(3)])
    return out


def _our_rows(name: str, predictor: Predictor, emotion: EmotionData, landmarks: LandmarkData,
              shared: Sequence[str], repeats: int, landmark_scores: dict[str, Any] | None,
              note: str) -> tuple[dict, dict]:
    """Speed rows, with emotion accuracy and the given landmark scores when ``landmark_scores`` is set."""
    crops = [emotion.crops[i % len(emotion.crops)] for i in range(max(BATCHES))]
    image, gt = landmarks.images[0], landmarks.landmarks[0]
    box = box_from_landmarks(gt)
    emotion_row: dict[str, Any] = {"row": name, "kind": "ours", "precision": predictor.precision, "note": note}
    landmark_row: dict[str, Any] = dict(emotion_row)
    if landmark_scores is not None:
        emotion_row.update(emotion_scores(_predict_crops_all(predictor, emotion.crops), predictor.class_names,
                                          emotion.labels, shared))
        landmark_row.update(landmark_scores)
    emotion_row.update(_speed(lambda b: predictor.predict_crops(np.stack(crops[:b])), repeats))
    landmark_row.update(_speed(lambda b: predictor.predict(image, np.repeat(box[None], b, axis=0)), repeats))
    return emotion_row, landmark_row


def _compiled(predictor: Predictor) -> tuple[Predictor, float]:
    """The same predictor with a torch.compile'd network, and the compile+first-call seconds."""
    start = time.perf_counter()
    predictor.model = torch.compile(predictor.model, dynamic=False)
    probe = np.zeros((predictor.input_size, predictor.input_size), np.uint8)
    for batch in BATCHES:
        predictor.predict_crops(np.stack([probe] * batch))
    return predictor, time.perf_counter() - start


# -------------------------------------------------------------------- peers ------

def _fer_model_path() -> str:
    try:
        from importlib.resources import files

        path = files("fer") / "data" / "emotion_model_quantized.tflite"
    except ModuleNotFoundError as error:
        raise Skip("fer not installed (pip install --no-deps fer; see requirements-bench.txt)") from error
    if not path.is_file():
        raise Skip(f"fer installed but its classifier {path} is missing")
    return str(path)


class FerPeer:
    """``fer``'s shipped mini-Xception (FER2013, 7 classes) with ``fer``'s preprocessing.

    ``fer.FER`` itself imports TensorFlow at import time; the same tflite file runs here through
    LiteRT (or TensorFlow's interpreter when that is what is installed), one face per invoke as
    ``fer`` does. FER images are already whole faces: they go in whole, resized to 64x64 (the
    input the classifier was trained on), which is the most favourable input for ``fer``.
    """

    classes = canonical_classes(FER_LABELS)

    def __init__(self, threads: int) -> None:
        path = _fer_model_path()
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ModuleNotFoundError:
            try:
                from tensorflow.lite import Interpreter  # type: ignore[import-not-found,no-redef]
            except ModuleNotFoundError as error:
                raise Skip("fer's tflite classifier needs ai-edge-litert or tensorflow-cpu") from error
        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        import cv2

        out = []
        for crop in crops:
            grey = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
            face = cv2.resize(grey, (64, 64)).astype(np.float32) / 255.0
            self.interpreter.set_tensor(self.input_index, ((face - 0.5) * 2.0)[None, :, :, None])
            self.interpreter.invoke()
            out.append(self.interpreter.get_tensor(self.output_index)[0].copy())
        return np.asarray(out, np.float32).reshape(-1, len(self.classes))


class DlibPeer:
    """dlib's 68-point shape predictor (``face-recognition-models``' model file), one face per call."""

    def __init__(self) -> None:
        try:
            import dlib  # type: ignore[import-not-found]
        except ModuleNotFoundError as error:
            raise Skip("dlib not installed (pip install dlib-bin)") from error
        try:
            import face_recognition_models  # type: ignore[import-not-found]
        except ModuleNotFoundError as error:
            raise Skip("dlib's 68-point model not installed (pip install face-recognition-models)") from error
        path = face_recognition_models.pose_predictor_model_location()
        if not os.path.isfile(path):
            raise Skip(f"dlib model file {path} missing")
        from emodan_ros.faces.detector import _DLIB_CAL

        self.dlib = dlib
        self.predictor = dlib.shape_predictor(path)
        self.calibration = _DLIB_CAL

    def to_dlib_box(self, box: np.ndarray) -> np.ndarray:
        """Landmark box -> the box dlib's detector would give (inverse of the node's dlib calibration)."""
        c = self.calibration
        w, h = (box[2] - box[0]) / c.sw, (box[3] - box[1]) / c.sh
        cx = (box[0] + box[2]) / 2 - c.dx * w
        cy = (box[1] + box[3]) / 2 - c.dy * h
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])

    def predict(self, image_bgr: np.ndarray, box: np.ndarray, convert: bool = True) -> np.ndarray:
        x0, y0, x1, y1 = self.to_dlib_box(box) if convert else box
        rect = self.dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
        shape = self.predictor(np.ascontiguousarray(image_bgr[:, :, ::-1]), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


def _skip_row(name: str, kind: str, reason: str) -> dict[str, Any]:
    return {"row": name, "kind": kind, "skipped": reason}


def fer_row(emotion: EmotionData, shared: Sequence[str], repeats: int) -> dict[str, Any]:
    try:
        peer = FerPeer(torch.get_num_threads())
    except Skip as reason:
        return _skip_row("fer mini-Xception (tflite)", "peer", str(reason))
    row: dict[str, Any] = {"row": "fer mini-Xception (tflite)", "kind": "peer", "precision": "int8 weights",
                           "note": "whole FER image resized to 64x64; one invoke per face, as fer does"}
    row.update(emotion_scores(peer.predict(emotion.crops), peer.classes, emotion.labels, shared))
    crops = [emotion.crops[i % len(emotion.crops)] for i in range(max(BATCHES))]
    row.update(_speed(lambda b: peer.predict(crops[:b]), repeats))
    return row


def dlib_row(landmarks: LandmarkData, repeats: int, predicted: np.ndarray | None,
             common: np.ndarray) -> dict[str, Any]:
    """dlib's accuracy from its own HOG detector (``predicted``: see accuracy.dlib_from_own_detector)."""
    try:
        peer = DlibPeer()
    except Skip as reason:
        return _skip_row("dlib 68-point shape predictor", "peer", str(reason))
    row: dict[str, Any] = {
        "row": "dlib 68-point shape predictor", "kind": "peer", "precision": "fp32",
        "note": "from dlib's own HOG detector (upsample 1); one face per call",
        **accuracy.landmark_scores(predicted, landmarks.landmarks, common),
    }
    image, box = landmarks.images[0], box_from_landmarks(landmarks.landmarks[0])
    row.update(_speed(lambda b: [peer.predict(image, box) for _ in range(b)], repeats))
    return row


# ---------------------------------------------------------------- detection ------

def detection_rows(landmarks: LandmarkData, repeats: int, yunet_model: str) -> list[dict[str, Any]]:
    """Recall (IoU >= 0.5 with the landmark box, after each detector's calibration) and latency per image."""
    from emodan_ros.faces.config import DetectorConfig
    from emodan_ros.faces.detector import DETECTOR_NAMES, DetectorError, make_detector

    rows = []
    for name in DETECTOR_NAMES:
        label = f"detector {name}" + (" (node default)" if name == DetectorConfig().detector else "")
        try:
            detector = make_detector(name, model_path=yunet_model if name == "yunet" else "")
        except DetectorError as error:
            rows.append(_skip_row(label, "detector", str(error)))
            continue
        hits, extra = 0, 0
        for image, gt in zip(landmarks.images, landmarks.landmarks):
            boxes, _ = detector.detect(image)
            iou = iou_matrix(boxes, box_from_landmarks(gt))[:, 0]
            hits += int((iou >= 0.5).any())
            extra += int((iou < 0.5).sum())
        sizes = [max(im.shape[:2]) for im in landmarks.images]
        timing = time_calls(lambda: detector.detect(landmarks.images[0]), repeats)
        rows.append({"row": label, "kind": "detector", "recall_iou50": hits / max(len(landmarks.images), 1),
                     "other_boxes_per_image": extra / max(len(landmarks.images), 1), "n": len(landmarks.images),
                     "ms_per_image": timing.to_dict(), "median_image_side_px": int(np.median(sizes))})
    return rows


# --------------------------------------------------------------------- node ------

def node_rows(model: str, duration: float) -> list[dict[str, Any]]:
    """The node's end-to-end cost as faces per frame grow, through ``bench_node`` (own process, DDS)."""
    if duration <= 0:
        return [_skip_row(f"node, {n} face(s)/frame", "node", "disabled (--node-duration 0)") for n in NODE_FACES]
    try:
        import emodan_ros.ros.camera  # noqa: F401  (ROS 2 and the built messages)
        from emodan_ros.bench import node as bench_node
    except ImportError as error:
        return [_skip_row(f"node, {n} face(s)/frame", "node", f"needs ROS 2: {error}") for n in NODE_FACES]
    rows = []
    for faces in NODE_FACES:
        label = f"node, {faces} face(s)/frame"
        try:
            result = bench_node.run(faces, 15.0, duration, model, "cpu", [])  # the node's defaults, as users run it
        except ValueError as error:
            rows.append(_skip_row(label, "node", f"bench_node: {error}"))
            continue
        result.pop("node_log_tail", None)
        rows.append({"row": label, "kind": "node", **result})
    base = next((r for r in rows if r.get("faces_in_frame") == 1), None)
    for row in rows:
        if base and "latency_ms" in row and base["latency_ms"]["p50"]:
            row["growth_vs_1_face"] = round(row["latency_ms"]["p50"] / base["latency_ms"]["p50"], 2)
    return rows


# --------------------------------------------------------------------- CUDA ------

def cuda_rows(model: str, emotion: EmotionData, repeats: int) -> list[dict[str, Any]]:
    """fp16 on the GPU, batch 1..256 of FER crops (a row per batch size; skipped without CUDA)."""
    if not torch.cuda.is_available():
        return [_skip_row("CUDA fp16", "cuda", "PyTorch sees no CUDA GPU")]
    rows = []
    for name, make in (("ours default", lambda: Predictor.from_checkpoint(model, "cuda", "fp16")),
                       ("paper-size 224 (untrained)", lambda: Predictor.random(PRESETS["paper224"], "cuda", "fp16"))):
        predictor = make()
        for batch in CUDA_BATCHES:
            crops = np.stack([emotion.crops[i % len(emotion.crops)] for i in range(batch)])
            torch.cuda.reset_peak_memory_stats()
            timing = time_calls(functools.partial(predictor.predict_crops, crops), repeats)  # .cpu() syncs
            rows.append({"row": f"CUDA fp16 {name}", "kind": "cuda", "batch": batch, "batch_ms": timing.to_dict(),
                         "ms_per_face": round(timing.median_ms / batch, 4),
                         "faces_per_s": round(1000.0 * batch / timing.median_ms, 1),
                         "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)})
        del predictor
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------- run ------

def _ratios(rows: list[dict[str, Any]], peer: dict[str, Any], metric: str, higher_better: bool) -> None:
    """Latency ratio (ours / peer; > 1 = slower than the peer) and metric difference to the peer."""
    if "skipped" in peer:
        return
    for row in rows:
        if row is peer or "skipped" in row:
            continue
        for b in BATCHES:
            row[f"latency_ratio_b{b}"] = round(row[f"ms_per_face_b{b}"] / peer[f"ms_per_face_b{b}"], 2)
        if row.get(metric) is not None and peer.get(metric) is not None:
            key = "accuracy_points_vs_peer" if higher_better else "nme_ratio_vs_peer"
            row[key] = (round(100 * (row[metric] - peer[metric]), 1) if higher_better
                        else round(row[metric] / peer[metric], 3))


def run_bench(model: str, ferplus: str, landmark_dirs: Sequence[str], repeats: int = 20, limit: int = 0,
              compile_model: bool = True, node_duration: float = 10.0, yunet_model: str = "",
              paper_config: DANConfig = PRESETS["paper224"], frame_sets: Sequence[str] = (),
              pts_offset: float = 0.0) -> dict[str, Any]:
    """Measure every row; returns the JSON-ready report (``paper_config``: tests use a tiny one)."""
    emotion = load_emotion_data(ferplus, limit)
    if not emotion.crops:
        raise ValueError(f"no labelled images in {ferplus}")
    landmarks = accuracy.load_landmark_data(landmark_dirs, model, limit, pts_offset)
    if not len(landmarks.images):
        raise ValueError("no readable 300-W images")
    from emodan_ros.faces.detector import make_detector

    detector = make_detector("blaze")
    ours_lm = accuracy.landmarks_from_detector(Predictor.from_checkpoint(model, "cpu", "fp32"), landmarks, detector)
    try:
        dlib_lm = accuracy.dlib_from_own_detector(DlibPeer(), landmarks)
    except Skip:
        dlib_lm = np.full_like(ours_lm, np.nan)
    found = [~np.isnan(x).any(axis=(1, 2)) for x in (ours_lm, dlib_lm)]
    common = found[0] & found[1] if found[1].any() else found[0]
    ours_scores = accuracy.landmark_scores(ours_lm, landmarks.landmarks, common)
    try:
        fer_peer = FerPeer(torch.get_num_threads())
    except Skip:
        fer_peer = None
    frames = accuracy.frame_emotion_rows(Predictor.from_checkpoint(model, "cpu", "fp32"), fer_peer,
                                         accuracy.parse_frame_sets(frame_sets), detector)
    shared = shared_classes(FERPLUS_CLASSES, FER_LABELS)
    emotion_rows, landmark_rows = [], []
    our_config = {"ours fp32": "fp32", "ours bf16": "bf16"}
    for name, precision in our_config.items():
        rss = rss_kib("VmRSS")
        predictor = Predictor.from_checkpoint(model, "cpu", precision)
        load_mib = round(((rss_kib("VmRSS") or 0) - (rss or 0)) / 1024.0, 1)
        e, lm = _our_rows(name, predictor, emotion, landmarks, shared, repeats, ours_scores,
                          "landmarks from the node's detector (BlazeFace)")
        e["model_load_rss_mib"] = lm["model_load_rss_mib"] = load_mib
        emotion_rows.append(e)
        landmark_rows.append(lm)
    if compile_model:
        try:
            predictor, seconds = _compiled(Predictor.from_checkpoint(model, "cpu", "fp32"))
            note = f"torch.compile (inductor), {seconds:.0f} s to compile; same weights and numbers as fp32"
            e, lm = _our_rows("ours fp32 compiled", predictor, emotion, landmarks, shared, repeats, None, note)
            emotion_rows.append(e)
            landmark_rows.append(lm)
        except Exception as error:  # a compile failure is a result to report, not a crash
            reason = f"torch.compile failed: {error!r}"[:300]
            emotion_rows.append(_skip_row("ours fp32 compiled", "ours", reason))
            landmark_rows.append(_skip_row("ours fp32 compiled", "ours", reason))
    paper = Predictor.random(paper_config, "cpu", "fp32")
    note = (f"paper-size ({paper_config.input_size} px, width {paper_config.width}), untrained random weights: "
            "speed only, accuracy n/a")
    e, lm = _our_rows("paper-size fp32 (untrained)", paper, emotion, landmarks, shared, repeats, None, note)
    emotion_rows.append(e)
    landmark_rows.append(lm)
    del paper
    fer = fer_row(emotion, shared, repeats)
    emotion_rows.append(fer)
    dlib = dlib_row(landmarks, repeats, dlib_lm, common)
    landmark_rows.append(dlib)
    _ratios(emotion_rows, fer, "accuracy_shared", True)
    _ratios(landmark_rows, dlib, "nme_inter_ocular", False)
    return {
        "machine": machine_description(),
        "model": model,
        "data": {"ferplus": emotion.root, "n_emotion": len(emotion.crops), "landmarks": list(map(str, landmark_dirs)),
                 "n_landmarks": len(landmarks.images), "landmark_files": landmarks.source,
                 "pts_offset": pts_offset, "frame_sets": list(frame_sets),
                 "shared_classes": list(shared)},
        "settings": {"repeats": repeats, "limit": limit, "time_budget_s": TIME_BUDGET_S, "batches": list(BATCHES)},
        "emotion": emotion_rows,
        "landmarks": landmark_rows,
        "frames": frames,
        "detection": detection_rows(landmarks, repeats, yunet_model),
        "node": node_rows(model, node_duration),
        "cuda": cuda_rows(model, emotion, repeats),
    }


def main(args: argparse.Namespace) -> int:
    if args.repeats < 3:
        raise ValueError("--repeats must be at least 3 (median and quartiles)")
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    report = run_bench(args.model, args.ferplus, args.landmarks, args.repeats, args.limit, args.compile,
                       args.node_duration, args.yunet_model, frame_sets=args.frames, pts_offset=args.pts_offset)
    paths = write_outputs(report, args.out)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
