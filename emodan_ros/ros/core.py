"""The emotion node's behaviour, shared by `emotion_node` and `emotion_lifecycle_node`.

Threading: the image callback only parks the message (newest frame wins; a frame replaced
before it was processed is counted as dropped), and one worker thread decodes, runs the
pipeline and publishes. The executor thread therefore stays free for parameters, the
diagnostics timer and new images, however slow the model is.

Coordinates in the published messages follow the message convention (origin at the top-left
corner of the top-left pixel); the pipeline works with OpenCV pixel centres; ``io.messages`` converts.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from pathlib import Path
import sys
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, Quaternion
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import MessageInfo, Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from emodan_ros.compat import DEFAULT_MODEL_NAME, default_model_path
from emodan_ros.faces.config import PipelineConfig
from emodan_ros.faces.detector import DetectorError, make_detector
from emodan_ros.faces.head_pose import estimate_head_pose
from emodan_ros.faces.latest import LatestSlot
from emodan_ros.faces.pipeline import EmotionPipeline, FaceResult, PredictorLike
from emodan_ros.io.image_codec import ImageDecodeError, decode_image, encode_image
from emodan_ros.io.messages import MessageTypes, emotions_message, landmarks_message, stamp_ns
from emodan_ros.model.checkpoint import CheckpointError
from emodan_ros.model.predictor import Predictor
from emodan_ros.msg import EmotionState, EmotionStateArray, FaceLandmarks, FaceLandmarksArray
from emodan_ros.ros.camera_model import CameraModel
from emodan_ros.ros.params import PARAMS, PIPELINE_PARAMS, descriptor, invalid_reason
from emodan_ros.ros.runtime import spin_until, stop_on_signals
from emodan_ros.ros.transport import SequenceGaps

if TYPE_CHECKING:
    from emodan_ros.ros.hri import HriOutput

MESSAGES = MessageTypes(FaceLandmarks, FaceLandmarksArray, EmotionState, EmotionStateArray, Pose, Point, Quaternion)
WARN_PERIOD_S = 5.0  # the same warning at most once per this many seconds


class ModelNotFoundError(RuntimeError):
    """No model file to load and random weights not allowed: the node must not start."""


def load_predictor(model_path: str, allow_random: bool, device: str, precision: str,
                   flip_average: bool = False) -> Predictor:
    """Predictor from the given path, else the package default, else (only if allowed) random weights."""
    if model_path:
        if Path(model_path).is_dir():
            raise ModelNotFoundError(f"model_path {model_path!r} is a directory, not a model checkpoint (.pt)")
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

    def __init__(self, detector_errors_before: int = 0) -> None:
        self.detector_errors_before = detector_errors_before
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.bad = 0
        self.lost = 0
        self.latency_ms: list[float] = []
        self.process_ms: list[float] = []
        self.start = time.monotonic()


class EmotionCore:
    """Faces, 68 landmarks and emotions for every processed camera frame: what the plain and the
    lifecycle node share (a mixin over rclpy's Node or LifecycleNode).

    Three steps, which the plain node takes at once and the lifecycle node per transition:
    :meth:`_declare` (parameters), :meth:`_build` (model, detector, publishers, worker: configure)
    and :meth:`_subscribe` / :meth:`_unsubscribe` (the camera: activate / deactivate).
    """

    def _declare(self) -> None:
        for name, spec in PARAMS.items():
            self.declare_parameter(name, spec.default, descriptor(name, spec))
        self.image_sub: Subscription | None = None
        self.camera_info_sub: Subscription | None = None

    def _build(self, predictor: PredictorLike | None = None) -> None:
        """Everything but the subscriptions; raises one of STARTUP_ERRORS with the reason."""
        p = {name: self.get_parameter(name).value for name in PARAMS}
        problem = invalid_reason(p)
        if problem:
            raise ValueError(problem)
        self._transport = image_transport(p)
        self._image_qos = image_qos(p)
        if p["torch_threads"] > 0:
            import torch

            torch.set_num_threads(int(p["torch_threads"]))
        self.predictor = predictor if predictor is not None else load_predictor(
            p["model_path"], p["allow_random_model"], p["device"], p["precision"], p["flip_average"])
        detector = make_detector(p["detector"], max_side=p["detector_max_side"],
                                 model_path=p["detector_model_path"],
                                 min_face_fraction=p["detector_min_face_fraction"])
        self.pipeline = EmotionPipeline(self.predictor, detector,
                                        PipelineConfig(**{k: p[k] for k in PIPELINE_PARAMS}))
        self._next_config: PipelineConfig | None = None  # a run-time change, applied between frames
        self.class_names = [str(c) for c in self.predictor.class_names]
        self._publish_debug = bool(p["publish_debug_image"])
        self._max_pixels = int(p["max_image_pixels"])
        self._latency_warn = float(p["latency_warn_ms"])
        self._drop_warn = float(p["drop_warn_ratio"])
        self._looking_threshold = float(p["looking_threshold_deg"])
        self.camera = CameraModel(p["assumed_hfov_deg"])
        self.hri = self._hri_output() if p["hri_output"] else None
        self._param_callback = self.add_on_set_parameters_callback(self._on_set_parameters)

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.landmarks_pub = self.create_publisher(FaceLandmarksArray, "landmarks", reliable)
        self.emotions_pub = self.create_publisher(EmotionStateArray, "emotions", reliable)
        self.debug_pub = self.create_publisher(Image, "debug_image", qos_profile_sensor_data)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Totals since start (read by diagnostics and tests).
        self.counts = {"received": 0, "processed": 0, "dropped": 0, "bad_frames": 0, "errors": 0, "faces": 0,
                       "lost_in_transport": 0}
        self._gaps = SequenceGaps()
        self._window = _Window()
        self._stats_lock = threading.Lock()
        self._frames: LatestSlot[Image | CompressedImage] = LatestSlot()
        self._config_lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="emotion_inference", daemon=True)
        self._worker.start()
        self._diag_timer = self.create_timer(float(p["diagnostics_period"]), self._publish_diagnostics)
        for old, new in (("compressed", "image_transport"), ("qos_reliability", "qos_overrides.<image>..."),
                         ("qos_depth", "qos_overrides.<image>...")):
            if p[old] != PARAMS[old].default:
                self.get_logger().warning(f"parameter {old} is deprecated (removed in 0.3): use {new}")

    def _subscribe(self) -> None:
        """Start taking camera frames (and camera_info): the node is live."""
        topic, msg_type = ("image/compressed", CompressedImage) if self._transport == "compressed" else ("image", Image)
        self.image_sub = self.create_subscription(
            msg_type, topic, self._on_image, self._image_qos,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self.camera_info_sub = self.create_subscription(CameraInfo, "camera_info", self.camera.on_camera_info,
                                                        qos_profile_sensor_data)
        self.get_logger().info(
            f"emotion_node ready: model {getattr(self.predictor, 'source', '?')} on "
            f"{getattr(self.predictor, 'device', '?')} ({getattr(self.predictor, 'precision', '?')}), "
            f"detector {self.pipeline.detector.name}, input {self.image_sub.topic_name} "
            f"({self.image_sub.qos_profile.reliability.name.lower()}, depth {self.image_sub.qos_profile.depth})")

    def _unsubscribe(self) -> None:
        """Stop taking frames; the frame in flight finishes, a parked one is dropped; the model stays."""
        for sub in (self.image_sub, self.camera_info_sub):
            if sub is not None:
                self.destroy_subscription(sub)
        self.image_sub = self.camera_info_sub = None
        if getattr(self, "_frames", None) is not None:  # built (a lifecycle shutdown may come before)
            self._frames.clear()

    # ----------------------------------------------------------------------------- parameters
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate a run-time change as a whole; apply it only when every value is acceptable."""
        # rclpy has already refused read-only parameters, wrong types and values out of range.
        changes = {prm.name: prm.value for prm in params}
        reason = invalid_reason(changes)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        pipeline_changes = {k: v for k, v in changes.items() if k in PIPELINE_PARAMS}
        if pipeline_changes:
            with self._config_lock:  # the worker may be inside pipeline.process: it applies the change next frame
                try:
                    self._next_config = (self._next_config or self.pipeline.config).replace(**pipeline_changes)
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        self._publish_debug = bool(changes.get("publish_debug_image", self._publish_debug))
        self._max_pixels = int(changes.get("max_image_pixels", self._max_pixels))
        self._latency_warn = float(changes.get("latency_warn_ms", self._latency_warn))
        self._drop_warn = float(changes.get("drop_warn_ratio", self._drop_warn))
        self._looking_threshold = float(changes.get("looking_threshold_deg", self._looking_threshold))
        self.camera.assumed_hfov_deg = float(changes.get("assumed_hfov_deg", self.camera.assumed_hfov_deg))
        return SetParametersResult(successful=True)

    # ----------------------------------------------------------------------------- input
    def _on_image(self, msg: Image | CompressedImage, info: MessageInfo) -> None:
        """Park the newest frame for the worker; a frame it replaces is dropped (and counted), and
        a gap in the publisher's sequence numbers counts as frames lost on the way."""
        lost = self._gaps.update(info)
        replaced = self._frames.put(msg)
        with self._stats_lock:
            self.counts["received"] += 1
            self.counts["lost_in_transport"] += lost
            self._window.received += 1
            self._window.lost += lost
            if replaced:
                self.counts["dropped"] += 1
                self._window.dropped += 1

    def _decode(self, msg: Image | CompressedImage) -> np.ndarray | None:
        """BGR pixels of the message, or None (logged, counted) when it is malformed."""
        try:
            return decode_image(msg, max_pixels=self._max_pixels)
        except ImageDecodeError as exc:
            with self._stats_lock:
                self.counts["bad_frames"] += 1
                self._window.bad += 1
                total = self.counts["bad_frames"]
            self.get_logger().warning(f"bad frame skipped: {exc} ({total} bad frames so far)",
                                      throttle_duration_sec=WARN_PERIOD_S)
            return None

    # ----------------------------------------------------------------------------- worker
    def _work(self) -> None:
        while (msg := self._frames.take()) is not None:
            with self._config_lock:
                config, self._next_config = self._next_config, None
            if config is not None:
                self.pipeline.configure(**dataclasses.asdict(config))
            try:
                self._process(msg)
            except Exception as exc:  # the node must survive anything one frame can do
                with self._stats_lock:
                    self.counts["errors"] += 1
                self.get_logger().warning(f"frame failed: {type(exc).__name__}: {exc}",
                                          throttle_duration_sec=WARN_PERIOD_S)

    def _process(self, msg: Image | CompressedImage) -> None:
        t0 = time.perf_counter()
        image = self._decode(msg)
        if image is None:
            return
        errors = self.pipeline.counters.detector_errors
        faces = self.pipeline.process(image)
        if self.pipeline.counters.detector_errors > errors:
            self.get_logger().error(f"face detector failed: {self.pipeline.detections.last_error}",
                                    throttle_duration_sec=WARN_PERIOD_S)
        height, width = image.shape[:2]
        intrinsics = self.camera.intrinsics(width, height)
        for face in faces:
            face.head_pose = estimate_head_pose(face.landmarks, intrinsics, self._looking_threshold)
        if self.hri is not None:
            self.hri.publish(msg.header, image, faces, {t.face_id for t in self.pipeline.tracker.tracks})
        self.landmarks_pub.publish(landmarks_message(MESSAGES, msg.header, faces, width, height))
        self.emotions_pub.publish(emotions_message(MESSAGES, msg.header, faces, self.class_names))
        latency = (self.get_clock().now().nanoseconds - stamp_ns(msg.header)) / 1e6
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
    def _debug_msg(self, header: Header, image: np.ndarray, faces: list[FaceResult]) -> Image:
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
            w, self._window = self._window, _Window(self.pipeline.counters.detector_errors)
            counts = dict(self.counts)
        span = max(time.monotonic() - w.start, 1e-6)
        lat = np.array(w.latency_ms) if w.latency_ms else np.array([math.nan])
        proc = np.array(w.process_ms) if w.process_ms else np.array([math.nan])
        p50 = float(np.median(lat))
        drop_ratio = w.dropped / w.received if w.received else 0.0
        level, message = DiagnosticStatus.OK, "ok"
        if self.image_sub is None:
            level, message = DiagnosticStatus.STALE, "inactive (not subscribed to the camera)"
        elif self.pipeline.counters.detector_errors > w.detector_errors_before:
            level, message = DiagnosticStatus.ERROR, (
                f"the face detector failed {self.pipeline.counters.detector_errors - w.detector_errors_before} "
                f"times: {self.pipeline.detections.last_error}")
        elif w.received == 0:
            level, message = DiagnosticStatus.STALE, "no images received"
            if counts["lost_in_transport"]:
                message += (f" ({counts['lost_in_transport']} lost in transport so far: the camera's process needs "
                            "the package's Fast DDS profile, README 'Camera-size images over DDS')")
        elif w.lost and w.lost >= 0.1 * (w.lost + w.received):
            level, message = DiagnosticStatus.WARN, (
                f"{w.lost} of {w.lost + w.received} frames lost in transport: the camera's process needs the "
                "package's Fast DDS profile (README, 'Camera-size images over DDS')")
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
            "lost_in_transport_in_period": str(w.lost),
            "bad_frames_in_period": str(w.bad),
            "device": str(getattr(self.predictor, "device", "?")),
            "precision": str(getattr(self.predictor, "precision", "?")),
            "model": str(getattr(self.predictor, "source", "?")),
            "detector": self.pipeline.detector.name,
            "head_pose_intrinsics": self.camera.source,
            "detector_calls_total": str(self.pipeline.counters.detector_calls),
            # faces found but not processed (max_faces), followed faces whose box no longer showed
            # them, ids forgotten after max_missed frames, tracking reset by a frame-size change
            "faces_capped_total": str(self.pipeline.counters.capped_faces),
            "capped_frames_total": str(self.pipeline.counters.capped_frames),
            "faces_lost_total": str(self.pipeline.counters.rejected_follows),
            "ids_forgotten_total": str(self.pipeline.tracker.forgotten),
            "tracking_resets_total": str(self.pipeline.counters.resets),
            "detector_errors_total": str(self.pipeline.counters.detector_errors),
            "detector_last_error": self.pipeline.detections.last_error or "",
            "stale_detections_total": str(self.pipeline.counters.stale_detections),
            "idle_frames_unsearched_total": str(self.pipeline.counters.idle_unsearched),
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
        """Stop the worker (the frame in flight finishes first); a node that failed half-way has none."""
        if not hasattr(self, "_worker"):
            return
        self._frames.close()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=10.0)
        self.pipeline.close()  # the detector's thread

    def _release(self) -> None:
        """Undo :meth:`_build` (lifecycle cleanup, node destruction); safe on a half-built node."""
        self.close()
        if getattr(self, "hri", None) is not None:
            self.hri.close()
            self.hri = None
        for name in ("landmarks_pub", "emotions_pub", "debug_pub", "diag_pub"):
            if getattr(self, name, None) is not None:
                self.destroy_publisher(getattr(self, name))
                setattr(self, name, None)
        if getattr(self, "_diag_timer", None) is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if getattr(self, "_param_callback", None) is not None:
            self.remove_on_set_parameters_callback(self._param_callback)
            self._param_callback = None

    def _hri_output(self) -> HriOutput:
        """The REP-155 publisher, or a clear error when hri_msgs is not installed."""
        try:
            from emodan_ros.ros.hri import HriOutput
        except ImportError as exc:
            raise ValueError(f"hri_output needs hri_msgs ({exc}): install ros-<distro>-hri-msgs, or run "
                             "`make setup` beside ../shared/ros2-extra") from exc
        return HriOutput(self, self.class_names, self.predictor.aligned_face)


def image_transport(p: dict[str, Any]) -> str:
    """raw or compressed, as image_transport names them; the deprecated ``compressed`` flag still wins."""
    return "compressed" if p["compressed"] else p["image_transport"]


def image_qos(p: dict[str, Any]) -> QoSProfile:
    """The camera subscription's default QoS (sensor data), before the standard ``qos_overrides``."""
    return QoSProfile(
        depth=int(p["qos_depth"]), history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.BEST_EFFORT if p["qos_reliability"] == "best_effort"
        else ReliabilityPolicy.RELIABLE,
        durability=qos_profile_sensor_data.durability)


# What a bad parameter, model file or detector raises while the node is built: one FATAL line, exit 1.
STARTUP_ERRORS = (ModelNotFoundError, DetectorError, CheckpointError, ParameterException,
                  NameValidationException, ValueError, OSError)


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> None:
    """Run the node ``factory`` builds until SIGINT/SIGTERM; exit code 1, with the reason in one FATAL
    line, when it cannot start (both executables: the plain and the lifecycle node)."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_on_signals()
    executor = SingleThreadedExecutor()
    node = None
    failed = False
    try:
        node = factory()
        executor.add_node(node)
        spin_until(executor, stop)
    except ExternalShutdownException:
        pass
    except STARTUP_ERRORS as exc:
        if node is not None:
            raise  # after start-up these are bugs: show them whole
        reason = " ".join(str(exc).split())  # one line, whatever the exception's text looks like
        rclpy.logging.get_logger("emotion_node").fatal(f"cannot start: {reason}")
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
