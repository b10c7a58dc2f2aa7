"""`emodan bench`: our model next to the offline tools a user would pick instead, in one process run.

Every row sees the same images, so accuracy differences and speed ratios are comparable; absolute
times are only meaningful with the machine, which the report names.

- Emotion, on a FER+ folder (FER2013Valid, majority labels): our model (fp32, bf16, torch.compile),
  the paper-size model (untrained: speed only) and ``fer``'s shipped mini-Xception (tflite, run
  with LiteRT and ``fer``'s own preprocessing). ``fer`` has 7 classes and no *contempt*: accuracy
  is compared on images whose label is one of the shared classes, each model's argmax taken over
  the shared classes only.
- Landmarks, on 300-W folders (the training run's holdout when the checkpoint names it): our
  model and dlib's 68-point shape predictor, both started from the ground-truth landmark box
  (dlib gets it in its own detector's box convention, the inverse of the node's dlib calibration).
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
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from emodan_ros.faces.classes import FERPLUS_CLASSES, canonical_classes, class_mapping
from emodan_ros.faces.boxes import iou_matrix
from emodan_ros.faces.crop import box_from_landmarks
from emodan_ros.model.dan import PRESETS, DANConfig
from emodan_ros.data.landmarks import PtsDataset, list_pts_files
from emodan_ros.data.readers import FerPlusDataset, read_image
from emodan_ros.evaluation.metrics import nme
from emodan_ros.model.predictor import Predictor

FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer's output order
BATCHES = (1, 8)
TIME_BUDGET_S = 15.0  # per timing: stop early (after at least 3 calls) so slow rows stay bounded
NODE_FACES = (1, 2, 4, 8)
CUDA_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Skip(Exception):
    """A row cannot be measured here (peer not installed, no ROS, ...); the message says why."""


# ------------------------------------------------------------------ measuring ------

@dataclass
class Timing:
    """Milliseconds per call over repeated calls (median and interquartile range)."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    calls: int

    def to_dict(self) -> dict[str, float]:
        return {"median_ms": round(self.median_ms, 3), "p25_ms": round(self.p25_ms, 3),
                "p75_ms": round(self.p75_ms, 3), "calls": self.calls}


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 2,
               budget_s: float = TIME_BUDGET_S) -> Timing:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed calls (fewer, but >= 3, past the budget)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < end):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    q = np.percentile(times, [25, 50, 75])
    return Timing(float(q[1]), float(q[0]), float(q[2]), len(times))


def _rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_delta_mib(fn: Callable[[], Any]) -> float | None:
    """Peak RSS growth (MiB) while ``fn`` runs; None where /proc does not allow resetting the peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _rss_kib("VmRSS")
    fn()
    peak = _rss_kib("VmHWM")
    if before is None or peak is None:
        return None
    return round(max(peak - before, 0) / 1024.0, 1)


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "torch": torch.__version__, "python": platform.python_version(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


# ------------------------------------------------------------------- data ------

@dataclass
class EmotionData:
    crops: list[np.ndarray]  # grey face images as stored (FER: 48x48)
    labels: np.ndarray  # FER+ class indices
    root: str


@dataclass
class LandmarkData:
    images: list[np.ndarray]
    landmarks: np.ndarray  # (N, 68, 2) image pixels
    source: str  # which files: the checkpoint's holdout or every .pts file


def load_emotion_data(root: str | Path, limit: int = 0) -> EmotionData:
    dataset = FerPlusDataset.evaluation(root)
    count = len(dataset) if limit <= 0 else min(limit, len(dataset))
    crops, labels = [], []
    for index in range(count):
        sample = dataset[index]
        crops.append(sample.image)
        labels.append(sample.label)
    return EmotionData(crops, np.asarray(labels, np.int64), str(root))


def holdout_names(checkpoint: str | Path | None) -> list[str] | None:
    """The .pts names the training run kept apart, when the checkpoint records them."""
    if not checkpoint:
        return None
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    names = payload.get("data", {}).get("landmarks", {}).get("holdout_files")
    return list(names) if names else None


def load_landmark_data(dirs: Sequence[str | Path], names: Sequence[str] | None, limit: int = 0) -> LandmarkData:
    files = [f for d in dirs for f in list_pts_files(d)]
    if names is not None:
        wanted = set(names)
        files = [f for f in files if Path(f).name in wanted]
        source = f"training holdout from the checkpoint ({len(files)} of {len(wanted)} names found)"
    else:
        source = "every .pts file under the given folders (the checkpoint names no holdout)"
    if not files:
        raise ValueError(f"no .pts files to evaluate under {list(map(str, dirs))}")
    dataset = PtsDataset(files=files)
    count = len(dataset) if limit <= 0 else min(limit, len(dataset))
    images, points = [], []
    for index in range(count):
        image = read_image(dataset.paths[index])
        if image is None:
            continue
        images.append(image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2))
        points.append(dataset.landmarks[index])
    return LandmarkData(images, np.asarray(points, np.float32).reshape(-1, 68, 2), source)


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
    out = [predictor.predict_crops(np.stack(crops[i:i + batch])).probs for i in range(0, len(crops), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(predictor.class_names)), np.float32)


def _landmarks_all(predictor: Predictor, data: LandmarkData) -> np.ndarray:
    out = [predictor.predict(image, box_from_landmarks(gt)[None]).landmarks[0]
           for image, gt in zip(data.images, data.landmarks)]
    return np.asarray(out).reshape(-1, 68, 2)


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
              shared: Sequence[str], repeats: int, accuracy: bool, note: str) -> tuple[dict, dict]:
    crops = [emotion.crops[i % len(emotion.crops)] for i in range(max(BATCHES))]
    image, gt = landmarks.images[0], landmarks.landmarks[0]
    box = box_from_landmarks(gt)
    emotion_row: dict[str, Any] = {"row": name, "kind": "ours", "precision": predictor.precision, "note": note}
    landmark_row: dict[str, Any] = dict(emotion_row)
    if accuracy:
        emotion_row.update(emotion_scores(_predict_crops_all(predictor, emotion.crops), predictor.class_names,
                                          emotion.labels, shared))
        errors = nme(_landmarks_all(predictor, landmarks), landmarks.landmarks)
        landmark_row.update({"nme_inter_ocular": float(errors.mean()), "n": int(len(errors))})
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


def dlib_row(landmarks: LandmarkData, repeats: int) -> dict[str, Any]:
    try:
        peer = DlibPeer()
    except Skip as reason:
        return _skip_row("dlib 68-point shape predictor", "peer", str(reason))
    boxes = [box_from_landmarks(gt) for gt in landmarks.landmarks]
    pred = np.array([peer.predict(im, b) for im, b in zip(landmarks.images, boxes)]).reshape(-1, 68, 2)
    raw = np.array([peer.predict(im, b, convert=False) for im, b in zip(landmarks.images, boxes)]).reshape(-1, 68, 2)
    row: dict[str, Any] = {
        "row": "dlib 68-point shape predictor", "kind": "peer", "precision": "fp32",
        "note": "landmark box mapped to dlib's detector box convention; one face per call",
        "nme_inter_ocular": float(nme(pred, landmarks.landmarks).mean()), "n": len(pred),
        "nme_inter_ocular_raw_landmark_box": float(nme(raw, landmarks.landmarks).mean()),
    }
    image, box = landmarks.images[0], boxes[0]
    row.update(_speed(lambda b: [peer.predict(image, box) for _ in range(b)], repeats))
    return row


# ---------------------------------------------------------------- detection ------

def detection_rows(landmarks: LandmarkData, repeats: int, yunet_model: str) -> list[dict[str, Any]]:
    """Recall (IoU >= 0.5 with the landmark box, after each detector's calibration) and latency per image."""
    from emodan_ros.faces.detector import DETECTOR_NAMES, DetectorError, make_detector

    rows = []
    for name in DETECTOR_NAMES:
        label = f"detector {name}" + (" (node default)" if name == "haar" else "")
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
            # 480 px detection for every row: at the default 320 px the eight 75 px heads are too small for Haar.
            result = bench_node.run(faces, 15.0, duration, model, "cpu", ["-p", "detector_max_side:=480"])
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
    """fp16 on the GPU, batch 1..256 of FER crops (untested on the CPU-only development machine)."""
    if not torch.cuda.is_available():
        return [_skip_row("CUDA fp16", "cuda", "PyTorch sees no CUDA GPU")]
    rows = []
    for name, make in (("ours default", lambda: Predictor.from_checkpoint(model, "cuda", "fp16")),
                       ("paper-size 224 (untrained)", lambda: Predictor.random(PRESETS["paper224"], "cuda", "fp16"))):
        predictor = make()
        for batch in CUDA_BATCHES:
            crops = np.stack([emotion.crops[i % len(emotion.crops)] for i in range(batch)])
            torch.cuda.reset_peak_memory_stats()
            timing = time_calls(lambda: predictor.predict_crops(crops), repeats)  # .cpu() in predict syncs
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
              paper_config: DANConfig = PRESETS["paper224"]) -> dict[str, Any]:
    """Measure every row; returns the JSON-ready report (``paper_config``: tests use a tiny one)."""
    emotion = load_emotion_data(ferplus, limit)
    if not emotion.crops:
        raise ValueError(f"no labelled images in {ferplus}")
    landmarks = load_landmark_data(landmark_dirs, holdout_names(model), limit)
    if not len(landmarks.images):
        raise ValueError("no readable 300-W images")
    shared = shared_classes(FERPLUS_CLASSES, FER_LABELS)
    emotion_rows, landmark_rows = [], []
    our_config = {"ours fp32": "fp32", "ours bf16": "bf16"}
    for name, precision in our_config.items():
        rss = _rss_kib("VmRSS")
        predictor = Predictor.from_checkpoint(model, "cpu", precision)
        load_mib = round(((_rss_kib("VmRSS") or 0) - (rss or 0)) / 1024.0, 1)
        e, lm = _our_rows(name, predictor, emotion, landmarks, shared, repeats, True, "")
        e["model_load_rss_mib"] = lm["model_load_rss_mib"] = load_mib
        emotion_rows.append(e)
        landmark_rows.append(lm)
    if compile_model:
        try:
            predictor, seconds = _compiled(Predictor.from_checkpoint(model, "cpu", "fp32"))
            note = f"torch.compile (inductor), {seconds:.0f} s to compile; same weights and numbers as fp32"
            e, lm = _our_rows("ours fp32 compiled", predictor, emotion, landmarks, shared, repeats, False, note)
            emotion_rows.append(e)
            landmark_rows.append(lm)
        except Exception as error:  # a compile failure is a result to report, not a crash
            reason = f"torch.compile failed: {error!r}"[:300]
            emotion_rows.append(_skip_row("ours fp32 compiled", "ours", reason))
            landmark_rows.append(_skip_row("ours fp32 compiled", "ours", reason))
    paper = Predictor.random(paper_config, "cpu", "fp32")
    note = (f"paper-size ({paper_config.input_size} px, width {paper_config.width}), untrained random weights: "
            "speed only, accuracy n/a")
    e, lm = _our_rows("paper-size fp32 (untrained)", paper, emotion, landmarks, shared, repeats, False, note)
    emotion_rows.append(e)
    landmark_rows.append(lm)
    del paper
    fer = fer_row(emotion, shared, repeats)
    emotion_rows.append(fer)
    dlib = dlib_row(landmarks, repeats)
    landmark_rows.append(dlib)
    _ratios(emotion_rows, fer, "accuracy_shared", True)
    _ratios(landmark_rows, dlib, "nme_inter_ocular", False)
    return {
        "machine": machine_description(),
        "model": model,
        "data": {"ferplus": emotion.root, "n_emotion": len(emotion.crops), "landmarks": list(map(str, landmark_dirs)),
                 "n_landmarks": len(landmarks.images), "landmark_files": landmarks.source,
                 "shared_classes": list(shared)},
        "settings": {"repeats": repeats, "limit": limit, "time_budget_s": TIME_BUDGET_S, "batches": list(BATCHES)},
        "emotion": emotion_rows,
        "landmarks": landmark_rows,
        "detection": detection_rows(landmarks, repeats, yunet_model),
        "node": node_rows(model, node_duration),
        "cuda": cuda_rows(model, emotion, repeats),
    }


# ------------------------------------------------------------------ reports ------

def _f(value: Any, digits: int = 2, scale: float = 1.0) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _latency(row: dict[str, Any], batch: int) -> str:
    t = row[f"batch{batch}"]
    return f"{t['median_ms'] / batch:.2f} [{t['p25_ms'] / batch:.2f}-{t['p75_ms'] / batch:.2f}]"


def _model_table(rows: list[dict[str, Any]], metric: str, label: str, scale: float, ratio_key: str) -> list[str]:
    lines = [f"| row | {label} | vs peer | ms/face b1 [IQR] | ms/face b8 [IQR] | faces/s (b8) "
             "| latency ratio b1 / b8 | peak RSS MiB | note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['row']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        ratio = (f"{r['latency_ratio_b1']}x / {r['latency_ratio_b8']}x" if "latency_ratio_b1" in r
                 else ("peer (1x)" if r["kind"] == "peer" else "n/a"))
        lines.append(f"| {r['row']} | {_f(r.get(metric), 2 if scale > 1 else 4, scale)} "
                     f"| {r.get(ratio_key, 'n/a') if r['kind'] != 'peer' else '-'} | {_latency(r, 1)} | {_latency(r, 8)} "
                     f"| {r['faces_per_s']} | {ratio} | {_f(r['peak_rss_mib'], 1)} | {r.get('note', '')} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    m, d = report["machine"], report["data"]
    lines = [
        "# emodan bench", "",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']} with {m['torch_threads']} threads, "
        f"GPU: {m['gpu'] or 'none'}; 1-min load average at the end {m['load_average_1min']}.",
        f"Model: `{report['model']}`. Latency: median [25th-75th percentile] over up to "
        f"{report['settings']['repeats']} calls ({report['settings']['time_budget_s']:.0f} s budget per "
        "measurement), divided by the batch size. Latency ratio = ours / peer (> 1: slower than the peer). "
        "Peak RSS: growth of the process's peak resident memory while running batch 8 three times.", "",
        f"## Emotion: {d['ferplus']} ({d['n_emotion']} images, majority labels)", "",
        f"Accuracy on the {', '.join(d['shared_classes'])} images (fer has no contempt; argmax over these "
        "classes only); ours on all 8 FER+ classes in the JSON (`accuracy_all`). vs peer: accuracy points.", "",
        *_model_table(report["emotion"], "accuracy_shared", "accuracy % (shared classes)", 100.0,
                      "accuracy_points_vs_peer"), "",
        f"## Landmarks: {d['n_landmarks']} 300-W faces ({d['landmark_files']})", "",
        "Inter-ocular NME (lower is better), every row started from the ground-truth landmark box; "
        "vs peer: NME ratio ours / dlib. Batch 8 = 8 faces in one frame (dlib: 8 calls).", "",
        *_model_table(report["landmarks"], "nme_inter_ocular", "NME", 1.0, "nme_ratio_vs_peer"), "",
        "## Detection (on the same 300-W images)", "",
        "| detector | recall (IoU>=0.5) | other boxes/image | ms/image [IQR] | median image side px |",
        "|---|---|---|---|---|",
    ]
    for r in report["detection"]:
        if "skipped" in r:
            lines.append(f"| {r['row']} | skipped: {r['skipped']} | | | |")
        else:
            t = r["ms_per_image"]
            lines.append(f"| {r['row']} | {r['recall_iou50']:.3f} | {r['other_boxes_per_image']:.3f} "
                         f"| {t['median_ms']:.1f} [{t['p25_ms']:.1f}-{t['p75_ms']:.1f}] | {r['median_image_side_px']} |")
    lines += ["", "## Node end to end (emodan_ros.bench.node: 640x480 frames at 15 fps over DDS)", "",
              "| faces/frame | latency p50 / p90 ms | growth vs 1 face | results/s | processed share "
              "| node CPU % of one core | node RSS max MiB |", "|---|---|---|---|---|---|---|"]
    for r in report["node"]:
        if "skipped" in r:
            lines.append(f"| {r['row']} | skipped: {r['skipped']} | | | | | |")
        else:
            lat = r["latency_ms"]
            lines.append(f"| {r['faces_in_frame']} | {lat['p50']} / {lat['p90']} | {r.get('growth_vs_1_face', 'n/a')} "
                         f"| {r['throughput_hz']} | {r['processed_share']} | {r['node_cpu_percent_of_one_core']} "
                         f"| {r['node_rss_mib']['max']} |")
    lines += ["", "## CUDA", ""]
    if report["cuda"] and "skipped" in report["cuda"][0]:
        lines.append(f"Skipped: {report['cuda'][0]['skipped']}.")
    else:
        lines += ["| row | batch | ms/face | faces/s | peak CUDA MiB |", "|---|---|---|---|---|"]
        lines += [f"| {r['row']} | {r['batch']} | {r['ms_per_face']} | {r['faces_per_s']} | {r['peak_cuda_mib']} |"
                  for r in report["cuda"]]
    return "\n".join(lines) + "\n"


def plot_frontier(report: dict[str, Any], path: str | Path) -> None:
    """Accuracy (emotion) and NME (landmarks) against per-face latency at batch 1, one point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = ((axes[0], report["emotion"], "accuracy_shared", 100.0, "emotion accuracy % (shared classes)"),
              (axes[1], report["landmarks"], "nme_inter_ocular", 1.0, "landmark NME, inter-ocular (lower is better)"))
    for ax, rows, metric, scale, ylabel in panels:
        for k, row in enumerate(rows):
            if "skipped" in row:
                continue
            x = row["ms_per_face_b1"]
            color = "tab:red" if row["kind"] == "peer" else "tab:blue"
            if row.get(metric) is None:
                ax.axvline(x, color=color, linestyle=":", alpha=0.6)
                ax.annotate(f"{row['row']} (speed only)", (x, 0.5), xycoords=("data", "axes fraction"),
                            rotation=90, fontsize=7, va="center")
                continue
            ax.scatter([x], [row[metric] * scale], color=color)
            ax.annotate(row["row"], (x, row[metric] * scale), fontsize=7, xytext=(4, 4 - 10 * (k % 3)),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"ms per face, batch 1 ({report['machine']['cpu']})", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle("emodan bench: speed/accuracy (blue: ours, red: peers)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "png": out / "frontier.png"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(markdown(report))
    plot_frontier(report, paths["png"])
    return paths


def main(args: argparse.Namespace) -> int:
    if args.repeats < 3:
        raise ValueError("--repeats must be at least 3 (median and quartiles)")
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    report = run_bench(args.model, args.ferplus, args.landmarks, args.repeats, args.limit, args.compile,
                       args.node_duration, args.yunet_model)
    paths = write_outputs(report, args.out)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
