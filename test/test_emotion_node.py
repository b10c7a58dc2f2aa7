"""emotion_node over real DDS, in process (isolated domain from conftest), with an untrained model.

The model is random (Predictor.random()), so the tests check plumbing and geometry, not the
emotion: one face found on a real photo, 68 landmarks on it, probabilities that sum to 1, header
copied, empty arrays without a face, ids stable on a moving face, parameters validated, lifecycle
and process behaviour. Bad input: test_emotion_node_inputs.py; the harness: node_harness.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import cv2
import numpy as np
import pytest
from skimage import data

from conftest import HAS_MSGS
from node_harness import TEST_PARAMS, Harness, _check_one_astronaut, _make_node, astronaut_bgr, image_msg, jpeg_msg

pytestmark = pytest.mark.skipif(not HAS_MSGS, reason="needs rclpy and the colcon-built emodan_ros.msg: "
                                "run `make test` (or `make setup` and `. install/setup.sh`)")

if HAS_MSGS:
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus


def test_raw_image_of_a_face_gives_one_face_with_68_landmarks(raw: Harness) -> None:
    landmarks, emotions = raw.send_and_wait(image_msg(astronaut_bgr(), (101, 5)))
    _check_one_astronaut(landmarks, emotions, (101, 5))


def test_rgb8_and_mono8_encodings_are_accepted(raw: Harness) -> None:
    rgb = image_msg(data.astronaut()[:, :, ::-1].copy(), (102, 0))
    rgb.encoding = "rgb8"  # same pixels, declared RGB: decoded back to the astronaut
    landmarks, _ = raw.send_and_wait(rgb)
    assert len(landmarks.faces) == 1
    grey = cv2.cvtColor(astronaut_bgr(), cv2.COLOR_BGR2GRAY)
    mono = Image(height=512, width=512, encoding="mono8", step=512, data=grey.tobytes())
    mono.header.stamp.sec = 103
    landmarks, _ = raw.send_and_wait(mono)
    assert len(landmarks.faces) == 1


def test_compressed_image_of_a_face_gives_one_face(compressed: Harness) -> None:
    landmarks, emotions = compressed.send_and_wait(jpeg_msg(astronaut_bgr(), (200, 7)))
    _check_one_astronaut(landmarks, emotions, (200, 7))


def test_a_photo_without_a_face_gives_empty_arrays(raw: Harness) -> None:
    coffee = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)
    landmarks, emotions = raw.send_and_wait(image_msg(coffee, (300, 1)))
    assert landmarks.faces == [] and emotions.states == []
    assert landmarks.header.frame_id == "camera"


def test_face_id_is_stable_while_the_face_moves(raw: Harness) -> None:
    raw.node.pipeline.reset()
    canvas = np.full((512, 640, 3), 90, np.uint8)
    ids = []
    for k in range(6):
        frame = canvas.copy()
        frame[:, 10 * k:10 * k + 512] = astronaut_bgr()
        landmarks, _ = raw.send_and_wait(image_msg(frame, (400 + k, 0)))
        assert len(landmarks.faces) == 1
        ids.append(landmarks.faces[0].face_id)
    assert len(set(ids)) == 1


def test_faces_per_frame_are_capped(raw: Harness) -> None:
    small = cv2.resize(astronaut_bgr(), (256, 256), interpolation=cv2.INTER_AREA)
    grid = np.vstack([np.hstack([small, small]), np.hstack([small, small])])
    raw.node.set_parameters([Parameter("max_faces", value=8)])
    landmarks, _ = raw.send_and_wait(image_msg(grid, (700, 0)))
    assert len(landmarks.faces) == 4
    assert len({f.face_id for f in landmarks.faces}) == 4
    raw.node.set_parameters([Parameter("max_faces", value=2)])
    try:
        landmarks, emotions = raw.send_and_wait(image_msg(grid, (701, 0)))
        assert len(landmarks.faces) == 2 and len(emotions.states) == 2
        values = {kv.key: kv.value for kv in raw.node.diagnostics_status().values}
        assert int(values["faces_capped_total"]) >= 2 and int(values["capped_frames_total"]) >= 1
        assert {"faces_lost_total", "ids_forgotten_total", "tracking_resets_total"} <= set(values)
    finally:
        raw.node.set_parameters([Parameter("max_faces", value=8)])


def _idle(node: Any) -> bool:
    """Every received frame is accounted for (its counter is bumped after the frame's messages go out)."""
    c = node.counts
    return c["received"] == c["processed"] + c["dropped"] + c["bad_frames"] + c["errors"]


def test_newest_frame_only_drops_frames_that_wait(raw: Harness) -> None:
    assert raw.spin(lambda: _idle(raw.node))
    before = dict(raw.node.counts)
    for k in range(8):  # frames arrive faster than the model runs (no sleep between them)
        raw.pub.publish(image_msg(astronaut_bgr(), (800 + k, 0)))
        assert raw.spin(lambda: raw.node.counts["received"] - before["received"] == k + 1)
    # every frame is either processed or dropped, never queued: the last one always comes out
    assert raw.spin(lambda: any(m.header.stamp.sec == 807 for m in raw.emotions))
    assert raw.spin(lambda: _idle(raw.node))
    done = raw.node.counts["processed"] - before["processed"]
    dropped = raw.node.counts["dropped"] - before["dropped"]
    assert dropped >= 1 and done + dropped == 8


def test_diagnostics_are_published(raw: Harness) -> None:
    got: list[Any] = []
    raw.peer.create_subscription(DiagnosticArray, "/diagnostics", got.append, 10)
    assert raw.spin(lambda: any(s.name.startswith(raw.node.get_name()) for m in got for s in m.status))
    status = next(s for m in got for s in m.status if s.name.startswith(raw.node.get_name()))
    keys = {kv.key for kv in status.values}
    assert {"input_rate_hz", "processed_rate_hz", "latency_p50_ms", "dropped_in_period", "device", "model"} <= keys
    assert status.level in (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.STALE)


@pytest.mark.parametrize("name,value", [
    ("redetect_every", 0), ("smoothing", 1.5), ("min_quality", -0.1), ("max_faces", 0),
    ("max_faces", "many"), ("device", "cuda"), ("detector", "dlib"), ("model_path", "/x.pt"),
])
def test_invalid_parameter_changes_are_refused(raw: Harness, name: str, value: Any) -> None:
    before = raw.node.get_parameter(name).value
    result = raw.node.set_parameters([Parameter(name, value=value)])[0]
    assert not result.successful and result.reason
    assert raw.node.get_parameter(name).value == before


def test_valid_parameter_changes_reach_the_pipeline(raw: Harness) -> None:
    assert raw.node.set_parameters([Parameter("smoothing", value=0.8)])[0].successful
    try:
        raw.send_and_wait(image_msg(astronaut_bgr(), stamp=(130, 0)))
        assert raw.node.pipeline.tracker.smoothing == pytest.approx(0.8)
        assert raw.node.pipeline.config.smoothing == pytest.approx(0.8)
    finally:
        raw.node.set_parameters([Parameter("smoothing", value=0.0)])
        raw.send_and_wait(image_msg(astronaut_bgr(), stamp=(131, 0)))


class _SlowPredictor:
    """Wraps a predictor; records the pipeline settings seen at the start and end of each call."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.pipeline, self.seen = inner, None, []
        self.inside = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict(self, image: Any, boxes: Any) -> Any:
        before = self.pipeline.config.min_quality
        self.inside.set()
        time.sleep(0.5)
        self.seen.append((before, self.pipeline.config.min_quality))
        return self.inner.predict(image, boxes)


def test_parameter_changes_take_effect_between_frames(rclpy_context: Any) -> None:
    """A change made while the worker is inside a frame must not reach that frame half-way."""
    from emodan_ros.model.predictor import Predictor
    from emodan_ros.ros.node import EmotionNode

    slow = _SlowPredictor(Predictor.random())
    namespace = f"/t{os.getpid()}_between"
    values = {**TEST_PARAMS, "detector": "haar",
              f"qos_overrides.{namespace}/image.subscription.reliability": "reliable"}
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    node = EmotionNode("between", predictor=slow, context=rclpy_context, parameter_overrides=overrides,
                       namespace=namespace)
    slow.pipeline = node.pipeline
    harness = Harness(rclpy_context, node)
    try:
        harness.pub.publish(image_msg(astronaut_bgr(), stamp=(140, 0)))
        assert harness.spin(slow.inside.is_set, 20.0), "the worker never reached the model"
        assert node.set_parameters([Parameter("min_quality", value=0.7)])[0].successful
        assert harness.spin(lambda: len(slow.seen) >= 1, 20.0)
        harness.send_and_wait(image_msg(astronaut_bgr(), stamp=(141, 0)))
        assert slow.seen[0] == (0.3, 0.3), slow.seen  # the frame in flight kept its settings
        assert slow.seen[-1] == (0.7, 0.7), slow.seen  # the next frame has the new ones
    finally:
        harness.close()
        node.destroy_node()


@pytest.mark.parametrize("params,match", [({"detector": "mtcnn"}, "detector"),
                                          ({"device": "gpu"}, "device"),
                                          ({"detector": "yunet"}, "detector_model_path")])
def test_invalid_startup_parameters_refuse_to_start(rclpy_context: Any, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _make_node(rclpy_context, "bad_start", **params)


def test_no_model_refuses_to_start_unless_random_is_allowed(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from emodan_ros.ros import core as emotion_node

    monkeypatch.setattr(emotion_node, "default_model_path", lambda: None)
    with pytest.raises(emotion_node.ModelNotFoundError, match="model_path"):
        emotion_node.load_predictor("", False, "cpu", "fp32")
    with pytest.raises(emotion_node.ModelNotFoundError, match="does not exist"):
        emotion_node.load_predictor(str(tmp_path / "missing.pt"), True, "cpu", "fp32")
    predictor = emotion_node.load_predictor("", True, "auto", "auto")
    assert "random" in predictor.source


@pytest.mark.parametrize("flip", [True, False])
def test_the_model_is_loaded_with_the_flip_average_parameter(rclpy_context: Any, tmp_path, flip: bool) -> None:
    from emodan_ros.model.checkpoint import save_checkpoint
    from emodan_ros.model.dan import DANConfig, EmotionalDAN
    from emodan_ros.ros.node import EmotionNode

    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, EmotionalDAN(DANConfig(input_size=32, width=0.125, convs_per_block=1, fc_size=32)))
    overrides = [Parameter("model_path", value=str(checkpoint)), Parameter("flip_average", value=flip),
                 Parameter("precision", value="fp32")]
    node = EmotionNode("flip", context=rclpy_context, parameter_overrides=overrides,
                       namespace=f"/t{os.getpid()}_flip_{flip}")
    try:
        assert node.predictor.flip_average is flip and node.predictor.source == str(checkpoint)
    finally:
        node.destroy_node()


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "emodan_ros.ros.node", "--ros-args", *args],
                            cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_process_without_a_model_exits_with_a_clear_message(tmp_path) -> None:
    proc = _start(["-p", f"model_path:={tmp_path / 'missing.pt'}"])
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "missing.pt" in out and "cannot start" in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_process_shuts_down_cleanly_on_signals(sig: int) -> None:
    proc = _start(["-p", "allow_random_model:=true", "-r", f"__ns:=/sig{os.getpid()}"])
    lines: list[str] = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "emotion_node ready" in line:
            break
    assert any("emotion_node ready" in x for x in lines), "".join(lines)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, "".join(lines) + out
    assert "Traceback" not in out


def test_debug_image_is_published_only_while_someone_listens(raw: Harness) -> None:
    assert raw.node.debug_pub.get_subscription_count() == 0
    got: list[Any] = []
    sub = raw.peer.create_subscription(Image, "debug_image", got.append, qos_profile_sensor_data)
    try:
        assert raw.spin(lambda: raw.node.debug_pub.get_subscription_count() > 0)
        raw.send_and_wait(image_msg(astronaut_bgr(), (900, 3)))
        assert raw.spin(lambda: any(m.header.stamp.sec == 900 for m in got))
        debug = next(m for m in got if m.header.stamp.sec == 900)
        assert (debug.width, debug.height, debug.encoding) == (512, 512, "bgr8")
        pixels = np.frombuffer(bytes(debug.data), np.uint8).reshape(512, 512, 3)
        assert not np.array_equal(pixels, astronaut_bgr())  # annotated
    finally:
        raw.peer.destroy_subscription(sub)


def test_camera_qos_is_sensor_data_and_overridable_the_standard_way(rclpy_context: Any) -> None:
    from rclpy.qos import ReliabilityPolicy

    from emodan_ros.model.predictor import Predictor
    from emodan_ros.ros.node import EmotionNode

    default = EmotionNode("qos_default", predictor=Predictor.random(), context=rclpy_context,
                          namespace=f"/t{os.getpid()}_qos")
    try:
        assert default.image_sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        assert default.get_parameter(f"qos_overrides./t{os.getpid()}_qos/image.subscription.depth").value == 5
    finally:
        default.destroy_node()
    overridden = _make_node(rclpy_context, "qos_override")
    try:
        assert overridden.image_sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    finally:
        overridden.destroy_node()


def test_deprecated_aliases_still_work_for_one_release(rclpy_context: Any) -> None:
    from rclpy.qos import ReliabilityPolicy

    node = _make_node(rclpy_context, "aliases", compressed=True, qos_reliability="reliable", qos_depth=3)
    try:
        assert node.image_sub.topic_name.endswith("/image/compressed")
        assert node.image_sub.qos_profile.depth == 3
        assert node.image_sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    finally:
        node.destroy_node()


def test_lifecycle_transitions_load_subscribe_and_stop(rclpy_context: Any) -> None:
    """configure loads (no camera yet), activate answers frames, deactivate stops answering but keeps
    the model, activate again answers at once; a bad configure is a FAILURE that leaves nothing built."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter as P

    from emodan_ros.model.predictor import Predictor
    from emodan_ros.ros.lifecycle import EmotionLifecycleNode

    namespace = f"/t{os.getpid()}_life"
    overrides = [P(k, value=v) for k, v in {**TEST_PARAMS, "detector": "yunet",
                                             f"qos_overrides.{namespace}/image.subscription.reliability":
                                             "reliable"}.items()]
    node = EmotionLifecycleNode("life", predictor=Predictor.random(), context=rclpy_context,
                                parameter_overrides=overrides, namespace=namespace)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE  # yunet without its model file
        assert node.image_sub is None and getattr(node, "emotions_pub", None) is None
    finally:
        node.destroy_node()
    node = _make_node(rclpy_context, "life2", "lifecycle")
    harness = Harness(rclpy_context, node)
    try:
        predictor = node.predictor
        _, emotions = harness.send_and_wait(image_msg(astronaut_bgr(), stamp=(150, 0)))
        assert len(emotions.states) == 1
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.image_sub is None and node.predictor is predictor
        before = node.counts["received"]
        harness.pub.publish(image_msg(astronaut_bgr(), stamp=(151, 0)))
        harness.spin(lambda: False, 1.0)
        assert node.counts["received"] == before  # inactive: frames are not taken
        assert "inactive" in node.diagnostics_status().message
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert harness.spin(lambda: harness.pub.get_subscription_count() > 0, 10.0)
        _, emotions = harness.send_and_wait(image_msg(astronaut_bgr(), stamp=(152, 0)))
        assert len(emotions.states) == 1 and node.predictor is predictor
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.emotions_pub is None
    finally:
        harness.close()
        node.destroy_node()

