"""The `emotion_node`: camera images in, per-face landmarks and emotions out.

Threading: the image callback only parks the message (newest frame wins; a frame replaced
before it was processed is counted as dropped), and one worker thread decodes, runs the
pipeline and publishes. The executor thread therefore stays free for parameters, the
diagnostics timer and new images, however slow the model is.

Coordinates in the published messages follow the message convention (origin at the top-left
corner of the top-left pixel); the pipeline works with OpenCV pixel centres, hence the +0.5.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emodan_ros.compat import DEFAULT_MODEL_NAME, default_model_path
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from emodan_ros.msg import EmotionState, EmotionStateArray, FaceLandmarks, FaceLandmarksArray

from emodan_ros.model.device import DEVICES, PRECISIONS
from emodan_ros.faces.detector import DETECTOR_NAMES, DetectorError, make_detector
from emodan_ros.io.image_codec import ImageDecodeError, decode_image, encode_image
from emodan_ros.faces.pipeline import EmotionPipeline, FaceResult

RELIABILITIES = ("best_effort", "reliable")
# Pipeline settings that may change while the node runs.
DYNAMIC_PIPELINE = ("redetect_every", "min_quality", "max_faces", "iou_threshold", "max_missed", "smoothing")


class ModelNotFoundError(RuntimeError):
    """No model file to load and random weights not allowed: the node must not start."""


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, description, range or choices, and whether it is fixed at start."""

    default: Any
    description: str
    read_only: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


PARAMS: dict[str, ParamSpec] = {
    "compressed": ParamSpec(False, "Subscribe to `image/compressed` (sensor_msgs/CompressedImage) "
                            "instead of `image` (sensor_msgs/Image).", read_only=True),
    "qos_reliability": ParamSpec("best_effort", "Reliability of the image subscription: best_effort "
                                 "(sensor-data profile, what cameras publish) or reliable.", read_only=True,
                                 choices=RELIABILITIES),
    "qos_depth": ParamSpec(5, "History depth of the image subscription (keep last).", read_only=True,
                           low=1, high=100),
    "model_path": ParamSpec("", "Model checkpoint (.pt). Empty: the package's default model "
                            "(share/emodan_ros/models/emodan_default.pt).", read_only=True),
    "allow_random_model": ParamSpec(False, "With no model file found, run an UNTRAINED random model "
                                    "instead of refusing to start. Outputs are meaningless: for plumbing "
                                    "tests and speed benchmarks only.", read_only=True),
    "device": ParamSpec("auto", "Inference device: auto (CUDA when available), cuda or cpu.",
                        read_only=True, choices=DEVICES),
    "precision": ParamSpec("auto", "Inference precision: auto (fp16 on CUDA, bf16 on CPU when faster), "
                           "fp32, bf16 or fp16 (CUDA only).", read_only=True, choices=PRECISIONS),
    "flip_average": ParamSpec(False, "Also run each face mirrored (in the same batch) and average both "
                              "answers: a face and its mirror image get the same emotion, accuracy +0.7 "
                              "points and landmark error -1% relative, for twice the network work (+5 ms per "
                              "frame with one face on a 2-core CPU, but 1 -> 8 faces grows 4.2x instead of "
                              "3x there).", read_only=True),
    "torch_threads": ParamSpec(1, "CPU threads for PyTorch (0 = PyTorch's default, all cores). One thread "
                               "is the default: the per-frame batch is small, and on a CPU shared with other "
                               "nodes a second thread made inference up to 50x slower here.", read_only=True,
                               low=0, high=256),
    "detector": ParamSpec("haar", "Face detector: haar (OpenCV cascade, built in), dlib (needs "
                          "`pip install dlib-bin`) or yunet (needs detector_model_path).", read_only=True,
                          choices=DETECTOR_NAMES),
    "detector_model_path": ParamSpec("", "Model file of the yunet detector (ONNX).", read_only=True),
    "detector_max_side": ParamSpec(320, "The detector sees the frame downscaled to this longer side [px] "
                                   "(0 = full size). Haar needs faces of about 40 px at that size.",
                                   read_only=True, low=0, high=8192),
    "detector_min_face_fraction": ParamSpec(0.08, "Smallest face the detector looks for, as a fraction of "
                                            "the shorter image side.", read_only=True, low=0.0, high=1.0),
    "redetect_every": ParamSpec(5, "Run the detector every N processed frames; faces are followed by "
                                "their landmarks in between (1 = detect every frame).", low=1, high=1000),
    "min_quality": ParamSpec(0.3, "Landmark quality below which a face is re-detected in the next frame.",
                             low=0.0, high=1.0),
    "max_faces": ParamSpec(8, "At most this many faces per frame (the largest are kept).", low=1, high=100),
    "iou_threshold": ParamSpec(0.3, "Box overlap (IoU) for a face to keep its id between frames.",
                               low=0.01, high=1.0),
    "max_missed": ParamSpec(5, "Frames a face may go unseen before its id is forgotten.", low=0, high=1000),
    "smoothing": ParamSpec(0.5, "Emotion smoothing per face: weight of the past in an exponential moving "
                           "average (0 = off, 0.9 = slow).", low=0.0, high=0.99),
    "publish_debug_image": ParamSpec(True, "Publish the annotated `debug_image` (only while it has "
                                     "subscribers)."),
    "max_image_pixels": ParamSpec(40_000_000, "Frames with more pixels than this are refused before any "
                                  "allocation (counted as bad input).", low=1, high=1_000_000_000),
    "diagnostics_period": ParamSpec(1.0, "Seconds between /diagnostics messages.", read_only=True,
                                    low=0.1, high=60.0),
    "latency_warn_ms": ParamSpec(250.0, "Diagnostics warn when the median latency (image stamp to "
                                 "publication) passes this [ms].", low=1.0, high=60_000.0),
    "drop_warn_ratio": ParamSpec(0.5, "Diagnostics warn when this fraction of incoming frames was "
                                 "dropped in a period.", low=0.0, high=1.0),
}


def _descriptor(name: str, spec: ParamSpec) -> ParameterDescriptor:
    text = spec.description
    if spec.choices:
        text += f" One of: {', '.join(spec.choices)}."
    d = ParameterDescriptor(name=name, description=text, read_only=spec.read_only)
    if spec.low is not None and not isinstance(spec.default, bool):
        if isinstance(spec.default, int):
            d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
        elif isinstance(spec.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                         to_value=float(spec.high), step=0.0)]
    return d


def load_predictor(model_path: str, allow_random: bool, device: str, precision: str,
                   flip_average: bool = False) -> Any:
    """Predictor from the given path, else the package default, else (only if allowed) random weights."""
    from emodan_ros.model.predictor import Predictor

    if model_path:
        if not Path(model_path).is_file():
            raise ModelNotFoundError(f"model_path {model_path!r} does not exist")
        return Predictor.from_checkpoint(model_path, device=device, precision=precision, flip_average=flip_average)
    found = default_model_path()
    if found is not None:
        return Predictor.from_checkpoint(found, device=device, precision=precision, flip_average=flip_average)
    if allow_random:
        return Predictor.random(device=device, precision=precision, flip_average=flip_average)
    raise ModelNotFoundError(
        "no model: set the parameter model_path to a checkpoint (.pt), or install the package's default "
        f"model ({DEFAULT_MODEL_NAME} in share/emodan_ros/models or the repository's models/); "
        "allow_random_model:=true runs an untrained model for plumbing tests only")


class _Window:
    """Events and values of the current diagnostics period."""

    def __init__(self) -> None:
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.bad = 0
        self.latency_ms: list[float] = []
        self.process_ms: list[float] = []
        self.start = time.monotonic()


class EmotionNode(Node):
    """Faces, 68 landmarks and emotions for every processed camera frame.

    ``predictor`` (keyword, for in-process use and tests) skips model loading and uses the given
    object (anything with the Predictor interface).
    """

    def __init__(self, node_name: str = "emotion_node", *, predictor: Any = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, spec in PARAMS.items():
            self.declare_parameter(name, spec.default, _descriptor(name, spec))
        p = {name: self.get_parameter(name).value for name in PARAMS}
        problem = self._validate(p)
        if problem:
            raise ValueError(problem)
        if p["torch_threads"] > 0:
            import torch

            torch.set_num_threads(int(p["torch_threads"]))
        self.predictor = predictor if predictor is not None else load_predictor(
            p["model_path"], p["allow_random_model"], p["device"], p["precision"], p["flip_average"])
        detector = make_detector(p["detector"], max_side=p["detector_max_side"],
                                 model_path=p["detector_model_path"],
                                 min_face_fraction=p["detector_min_face_fraction"])
        self.pipeline = EmotionPipeline(self.predictor, detector,
                                        **{k: p[k] for k in DYNAMIC_PIPELINE})
        self.class_names = [str(c) for c in self.predictor.class_names]
        self._publish_debug = bool(p["publish_debug_image"])
        self._max_pixels = int(p["max_image_pixels"])
        self._latency_warn = float(p["latency_warn_ms"])
        self._drop_warn = float(p["drop_warn_ratio"])
        self.add_on_set_parameters_callback(self._on_set_parameters)

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.landmarks_pub = self.create_publisher(FaceLandmarksArray, "landmarks", reliable)
        self.emotions_pub = self.create_publisher(EmotionStateArray, "emotions", reliable)
        self.debug_pub = self.create_publisher(Image, "debug_image", qos_profile_sensor_data)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        image_qos = QoSProfile(
            depth=int(p["qos_depth"]), history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.BEST_EFFORT if p["qos_reliability"] == "best_effort"
            else ReliabilityPolicy.RELIABLE,
            durability=qos_profile_sensor_data.durability)
        if p["compressed"]:
            self.image_sub = self.create_subscription(CompressedImage, "image/compressed", self._on_image, image_qos)
        else:
            self.image_sub = self.create_subscription(Image, "image", self._on_image, image_qos)

        # Totals since start (read by diagnostics and tests).
        self.counts = {"received": 0, "processed": 0, "dropped": 0, "bad_frames": 0, "errors": 0, "faces": 0}
        self._window = _Window()
        self._stats_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: Any = None
        self._stop = False
        self._last_warn: dict[str, float] = {}
        self._worker = threading.Thread(target=self._work, name="emotion_inference", daemon=True)
        self._worker.start()
        self._diag_timer = self.create_timer(float(p["diagnostics_period"]), self._publish_diagnostics)
        self.get_logger().info(
            f"emotion_node ready: model {getattr(self.predictor, 'source', '?')} on "
            f"{getattr(self.predictor, 'device', '?')} ({getattr(self.predictor, 'precision', '?')}), "
            f"detector {p['detector']}, input {self.image_sub.topic_name}")

    # ----------------------------------------------------------------------------- parameters
    @staticmethod
    def _validate(p: dict[str, Any]) -> str:
        """Reason why this parameter set is unusable, '' when fine (ranges are checked by rclpy)."""
        for name, spec in PARAMS.items():
            if spec.choices and name in p and p[name] not in spec.choices:
                return f"{name} must be one of {', '.join(spec.choices)}, got {p[name]!r}"
        if p.get("detector") == "yunet" and not p.get("detector_model_path"):
            return "detector 'yunet' needs detector_model_path (its ONNX file)"
        return ""

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate a run-time change as a whole; apply it only when every value is acceptable."""
        # rclpy has already refused read-only parameters, wrong types and values out of range.
        changes = {prm.name: prm.value for prm in params}
        reason = self._validate(changes)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        pipeline_changes = {k: v for k, v in changes.items() if k in DYNAMIC_PIPELINE}
        try:
            self.pipeline.configure(**pipeline_changes)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._publish_debug = bool(changes.get("publish_debug_image", self._publish_debug))
        self._max_pixels = int(changes.get("max_image_pixels", self._max_pixels))
        self._latency_warn = float(changes.get("latency_warn_ms", self._latency_warn))
        self._drop_warn = float(changes.get("drop_warn_ratio", self._drop_warn))
        return SetParametersResult(successful=True)

    # ----------------------------------------------------------------------------- input
    def _on_image(self, msg: Any) -> None:
        """Park the newest frame for the worker; a frame it replaces is dropped (and counted)."""
        with self._cond:
            replaced = self._pending is not None
            self._pending = msg
            self._cond.notify()
        with self._stats_lock:
            self.counts["received"] += 1
            self._window.received += 1
            if replaced:
                self.counts["dropped"] += 1
                self._window.dropped += 1

    def _warn_throttled(self, key: str, text: str, period: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._last_warn.get(key, -math.inf) >= period:
            self._last_warn[key] = now
            self.get_logger().warning(text)

    def _decode(self, msg: Any) -> np.ndarray | None:
        """BGR pixels of the message, or None (logged, counted) when it is malformed."""
        try:
            return decode_image(msg, max_pixels=self._max_pixels)
        except ImageDecodeError as exc:
            with self._stats_lock:
                self.counts["bad_frames"] += 1
                self._window.bad += 1
                total = self.counts["bad_frames"]
            self._warn_throttled("bad_frame", f"bad frame skipped: {exc} ({total} bad frames so far)")
            return None

    # ----------------------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                msg, self._pending = self._pending, None
            try:
                self._process(msg)
            except Exception as exc:  # the node must survive anything one frame can do
                with self._stats_lock:
                    self.counts["errors"] += 1
                self._warn_throttled("error", f"frame failed: {type(exc).__name__}: {exc}")

    def _process(self, msg: Any) -> None:
        t0 = time.perf_counter()
        image = self._decode(msg)
        if image is None:
            return
        faces = self.pipeline.process(image)
        height, width = image.shape[:2]
        self.landmarks_pub.publish(self._landmarks_msg(msg.header, faces, width, height))
        self.emotions_pub.publish(self._emotions_msg(msg.header, faces))
        stamp = msg.header.stamp
        latency = (self.get_clock().now().nanoseconds - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e6
        process_ms = (time.perf_counter() - t0) * 1000.0
        if self._publish_debug and self.debug_pub.get_subscription_count() > 0:
            self.debug_pub.publish(self._debug_msg(msg.header, image, faces))
        with self._stats_lock:
            self.counts["processed"] += 1
            self.counts["faces"] += len(faces)
            self._window.processed += 1
            self._window.latency_ms.append(latency)
            self._window.process_ms.append(process_ms)

    # ----------------------------------------------------------------------------- output
    def _landmarks_msg(self, header: Any, faces: list[FaceResult], width: int, height: int) -> FaceLandmarksArray:
        out = FaceLandmarksArray(header=header)
        for f in faces:
            box = f.box.astype(np.float64) + 0.5
            lm = (f.landmarks.astype(np.float64) + 0.5).reshape(-1)
            out.faces.append(FaceLandmarks(
                header=header, face_id=f.face_id, box_x=float(box[0]), box_y=float(box[1]),
                box_width=float(max(box[2] - box[0], 0.0)), box_height=float(max(box[3] - box[1], 0.0)),
                detection_score=float(f.score), landmarks=lm.astype(np.float32).tolist(),
                image_width=width, image_height=height, quality=float(f.quality)))
        return out

    def _emotions_msg(self, header: Any, faces: list[FaceResult]) -> EmotionStateArray:
        out = EmotionStateArray(header=header)
        for f in faces:
            top = int(np.argmax(f.probs))
            out.states.append(EmotionState(
                header=header, face_id=f.face_id, emotion=self.class_names[top],
                probability=float(f.probs[top]), class_names=self.class_names,
                probabilities=[float(v) for v in f.probs], smoothed=bool(f.smoothed)))
        return out

    def _debug_msg(self, header: Any, image: np.ndarray, faces: list[FaceResult]) -> Image:
        import cv2

        canvas = image.copy()
        for f in faces:
            x0, y0, x1, y1 = (int(round(v)) for v in f.box)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 255, 0), 2)
            for x, y in f.landmarks:
                cv2.circle(canvas, (int(round(x)), int(round(y))), 1, (0, 255, 255), -1)
            top = int(np.argmax(f.probs))
            label = f"#{f.face_id} {self.class_names[top]} {f.probs[top]:.2f}"
            cv2.putText(canvas, label, (x0, max(y0 - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1,
                        cv2.LINE_AA)
        return encode_image(canvas, "bgr8", Image, header=header)

    # ----------------------------------------------------------------------------- diagnostics
    def diagnostics_status(self) -> DiagnosticStatus:
        """Summary of the last period (and totals); resets the period."""
        with self._stats_lock:
            w, self._window = self._window, _Window()
            counts = dict(self.counts)
        span = max(time.monotonic() - w.start, 1e-6)
        lat = np.array(w.latency_ms) if w.latency_ms else np.array([math.nan])
        proc = np.array(w.process_ms) if w.process_ms else np.array([math.nan])
        p50 = float(np.median(lat))
        drop_ratio = w.dropped / w.received if w.received else 0.0
        level, message = DiagnosticStatus.OK, "ok"
        if w.received == 0:
            level, message = DiagnosticStatus.STALE, "no images received"
        elif p50 > self._latency_warn:
            level, message = DiagnosticStatus.WARN, f"median latency {p50:.0f} ms > {self._latency_warn:.0f} ms"
        elif drop_ratio > self._drop_warn:
            level, message = DiagnosticStatus.WARN, f"{drop_ratio:.0%} of frames dropped (processing too slow)"
        elif w.bad:
            level, message = DiagnosticStatus.WARN, f"{w.bad} bad frames"
        values = {
            "input_rate_hz": f"{w.received / span:.2f}",
            "processed_rate_hz": f"{w.processed / span:.2f}",
            "latency_p50_ms": f"{p50:.1f}",
            "latency_max_ms": f"{float(np.max(lat)):.1f}",
            "processing_p50_ms": f"{float(np.median(proc)):.1f}",
            "dropped_in_period": str(w.dropped),
            "bad_frames_in_period": str(w.bad),
            "device": str(getattr(self.predictor, "device", "?")),
            "precision": str(getattr(self.predictor, "precision", "?")),
            "model": str(getattr(self.predictor, "source", "?")),
            "detector": self.pipeline.detector.name,
            "detector_calls_total": str(self.pipeline.counters.detector_calls),
            **{f"{k}_total": str(v) for k, v in counts.items()},
        }
        return DiagnosticStatus(
            level=level, name=f"{self.get_name()}: emotion pipeline", message=message,
            hardware_id=values["device"], values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics_status()]
        self.diag_pub.publish(msg)

    # ----------------------------------------------------------------------------- shutdown
    def close(self) -> None:
        """Stop the worker (the frame in flight finishes first)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=10.0)

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


def stop_on_signals() -> threading.Event:
    """An event that SIGINT and SIGTERM set (install it before building the node: no signal is lost).

    rclpy's own signal handling (the rclpy.init default) left about one run in ten hanging in
    ``executor.spin()`` after SIGTERM on these machines, so the nodes take the signals themselves
    (``rclpy.init(signal_handler_options=SignalHandlerOptions.NO)``) and spin in short waits.
    """
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def spin_until(executor: Any, stop: threading.Event, poll_s: float = 0.1) -> None:
    """Spin until ``stop`` is set or the context is shut down."""
    while not stop.is_set() and executor.context.ok():
        executor.spin_once(timeout_sec=poll_s)


def main(args: list[str] | None = None) -> None:
    """Run the node until SIGINT/SIGTERM; exit code 1 (with the reason logged) when it cannot start."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_on_signals()
    executor = SingleThreadedExecutor()
    node = None
    failed = False
    try:
        node = EmotionNode()
        executor.add_node(node)
        spin_until(executor, stop)
    except ExternalShutdownException:
        pass
    except (ModelNotFoundError, DetectorError, ValueError, OSError) as exc:
        rclpy.logging.get_logger("emotion_node").fatal(f"cannot start: {exc}")
        failed = True
    except Exception:
        if rclpy.ok():
            raise  # a real failure; otherwise a signal stopped the start-up half-way
    finally:
        if node is not None:
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
