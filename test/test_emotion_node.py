"""emotion_node over real DDS, in process (isolated domain from conftest), with an untrained model.

The model is random (Predictor.random()), so the tests check plumbing and geometry, not the
emotion: one face found on a real photo, 68 landmarks on it, probabilities that sum to 1, header
copied, empty arrays without a face, bad frames counted while the node keeps going, ids stable
on a moving face, parameters validated.
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

from conftest import HAS_MSGS, spin_until

pytestmark = pytest.mark.skipif(not HAS_MSGS, reason="needs rclpy and the colcon-built emodan_ros.msg: "
                                "run `make test` (or `make setup` and `. install/setup.sh`)")

if HAS_MSGS:
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from emodan_ros.msg import EmotionStateArray, FaceLandmarksArray

# Around the astronaut's face in skimage.data.astronaut() (512x512): forehead to chin, ear to ear,
# widened by the model's crop margin (an untrained model's points stay inside its crop).
ASTRONAUT_REGION = (150.0, 50.0, 300.0, 215.0)
TEST_PARAMS = {"redetect_every": 1, "detector_max_side": 512, "smoothing": 0.0, "diagnostics_period": 0.2}
# Every behaviour test runs on the plain node and on the lifecycle node (configured and activated).
NODE_KINDS = ("plain", "lifecycle")


def astronaut_bgr() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def image_msg(bgr: np.ndarray, stamp: tuple[int, int] = (100, 0), frame_id: str = "camera") -> Any:
    msg = Image(height=bgr.shape[0], width=bgr.shape[1], encoding="bgr8", is_bigendian=0, step=bgr.shape[1] * 3)
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    msg.data = np.ascontiguousarray(bgr).tobytes()
    return msg


def jpeg_msg(bgr: np.ndarray, stamp: tuple[int, int] = (100, 0)) -> Any:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    msg = CompressedImage(format="jpeg")
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = "camera"
    msg.data = buf.tobytes()
    return msg


class Harness:
    """Camera side and consumer side of one emotion node."""

    def __init__(self, context: Any, node: Any, compressed: bool = False) -> None:
        import rclpy

        self.node = node
        self.peer = rclpy.create_node(f"harness_{node.get_name()}", context=context,
                                      namespace=node.get_namespace())
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        topic = "image/compressed" if compressed else "image"
        self.pub = self.peer.create_publisher(CompressedImage if compressed else Image, topic, qos)
        self.landmarks: list[Any] = []
        self.emotions: list[Any] = []
        self.peer.create_subscription(FaceLandmarksArray, "landmarks", self.landmarks.append, 10)
        self.peer.create_subscription(EmotionStateArray, "emotions", self.emotions.append, 10)
        assert self.spin(lambda: self.pub.get_subscription_count() > 0 and
                         self.peer.count_publishers("emotions") > 0, 10.0), "no DDS discovery"

    def spin(self, condition: Any, timeout: float = 20.0) -> bool:
        return spin_until([self.node, self.peer], condition, timeout)

    def send_and_wait(self, msg: Any, timeout: float = 30.0) -> tuple[Any, Any]:
        """Publish one frame and wait for both results stamped with it."""
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)

        def find(items: list[Any]) -> Any:
            return next((m for m in items if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp), None)

        self.pub.publish(msg)
        assert self.spin(lambda: find(self.landmarks) is not None and find(self.emotions) is not None,
                         timeout), f"no result for the frame stamped {stamp}"
        return find(self.landmarks), find(self.emotions)

    def send_bad_and_wait(self, msg: Any, timeout: float = 20.0) -> None:
        before = self.node.counts["bad_frames"] + self.node.counts["errors"]
        self.pub.publish(msg)
        assert self.spin(lambda: self.node.counts["bad_frames"] + self.node.counts["errors"] > before, timeout)

    def close(self) -> None:
        self.peer.destroy_node()


def _make_node(context: Any, name: str, kind: str = "plain", **params: Any) -> Any:
    """A node with an untrained model; its camera subscription made reliable the standard way
    (``qos_overrides``), since the test publisher is reliable."""
    from emodan_ros.model.predictor import Predictor
    from emodan_ros.ros.lifecycle import EmotionLifecycleNode
    from emodan_ros.ros.node import EmotionNode
    from rclpy.lifecycle import TransitionCallbackReturn

    namespace = f"/t{os.getpid()}_{name}_{kind}"
    compressed = params.get("image_transport") == "compressed" or params.get("compressed")
    topic = f"{namespace}/image/compressed" if compressed else f"{namespace}/image"
    values = {**TEST_PARAMS, f"qos_overrides.{topic}.subscription.reliability": "reliable", **params}
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    cls = EmotionNode if kind == "plain" else EmotionLifecycleNode
    node = cls(name, predictor=Predictor.random(), context=context, parameter_overrides=overrides,
               namespace=namespace)
    if kind == "lifecycle":
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    return node


@pytest.fixture(scope="module", params=NODE_KINDS)
def raw(rclpy_context: Any, request: pytest.FixtureRequest) -> Any:
    node = _make_node(rclpy_context, "raw", request.param)
    harness = Harness(rclpy_context, node)
    yield harness
    harness.close()
    node.destroy_node()


@pytest.fixture(scope="module", params=NODE_KINDS)
def compressed(rclpy_context: Any, request: pytest.FixtureRequest) -> Any:
    node = _make_node(rclpy_context, "compressed", request.param, image_transport="compressed")
    harness = Harness(rclpy_context, node, compressed=True)
    yield harness
    harness.close()
    node.destroy_node()


def _check_one_astronaut(landmarks: Any, emotions: Any, stamp: tuple[int, int]) -> None:
    assert len(landmarks.faces) == 1 and len(emotions.states) == 1
    face, state = landmarks.faces[0], emotions.states[0]
    assert (face.header.stamp.sec, face.header.stamp.nanosec) == stamp
    assert landmarks.header.frame_id == "camera" == state.header.frame_id
    assert (face.image_width, face.image_height) == (512, 512)
    pts = np.asarray(face.landmarks, np.float64).reshape(68, 2)
    assert np.isfinite(pts).all()
    x0, y0, x1, y1 = ASTRONAUT_REGION
    assert ((pts[:, 0] > x0) & (pts[:, 0] < x1) & (pts[:, 1] > y0) & (pts[:, 1] < y1)).all()
    bx, by = face.box_x, face.box_y
    assert face.box_width > 20 and face.box_height > 20
    assert (pts[:, 0] >= bx - 1).all() and (pts[:, 0] <= bx + face.box_width + 1).all()
    assert (pts[:, 1] >= by - 1).all() and (pts[:, 1] <= by + face.box_height + 1).all()
    assert 0.0 <= face.quality <= 1.0 and 0.0 < face.detection_score <= 1.0
    assert face.face_id == state.face_id
    probs = np.asarray(state.probabilities)
    assert len(state.class_names) == len(probs) == 8
    assert abs(probs.sum() - 1.0) < 1e-4
    assert state.emotion == state.class_names[int(np.argmax(probs))]
    assert abs(state.probability - probs.max()) < 1e-6


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


def _bad_raw_images() -> list[tuple[str, Any]]:
    good = image_msg(astronaut_bgr())
    bad_encoding = image_msg(astronaut_bgr())
    bad_encoding.encoding = "not_an_encoding"
    zero = Image(height=0, width=0, encoding="bgr8", step=0)
    truncated = image_msg(astronaut_bgr())
    truncated.data = bytes(good.data[: len(good.data) // 3])
    absurd = Image(height=100_000, width=100_000, encoding="bgr8", step=300_000, data=b"\x00" * 16)
    wrong_step = image_msg(astronaut_bgr())
    wrong_step.step = 7
    return [("bad encoding", bad_encoding), ("zero size", zero), ("truncated", truncated),
            ("absurd size", absurd), ("wrong step", wrong_step)]


def test_bad_raw_frames_are_counted_and_the_node_keeps_working(raw: Harness) -> None:
    for _, msg in _bad_raw_images():
        raw.send_bad_and_wait(msg)
    assert raw.node.counts["bad_frames"] + raw.node.counts["errors"] >= 5
    landmarks, _ = raw.send_and_wait(image_msg(astronaut_bgr(), (500, 0)))
    assert len(landmarks.faces) == 1
    status = raw.node.diagnostics_status()
    assert int(dict((kv.key, kv.value) for kv in status.values)["bad_frames_total"]) >= 5


def test_corrupt_compressed_frames_are_counted_and_the_node_keeps_working(compressed: Harness) -> None:
    good = jpeg_msg(astronaut_bgr())
    corrupt = jpeg_msg(astronaut_bgr())
    corrupt.data = bytes(good.data[:200]) + b"\x00" * 100
    empty = jpeg_msg(astronaut_bgr())
    empty.data = b""
    garbage = jpeg_msg(astronaut_bgr())
    garbage.data = os.urandom(5000)
    for msg in (corrupt, empty, garbage):
        compressed.send_bad_and_wait(msg)
    landmarks, _ = compressed.send_and_wait(jpeg_msg(astronaut_bgr(), (600, 0)))
    assert len(landmarks.faces) == 1


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


def test_decode_bombs_and_cut_jpegs_are_bad_frames_and_the_next_good_one_is_answered(compressed: Harness) -> None:
    import struct

    good = jpeg_msg(astronaut_bgr())
    bomb = jpeg_msg(astronaut_bgr())
    data = bytearray(good.data)
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 5773, 5773)  # 68 KB claiming 33 Mpx
    bomb.data = bytes(data)
    cut = jpeg_msg(astronaut_bgr())
    cut.data = bytes(good.data[: len(good.data) // 2]) + b"\xff\xd9"
    for k, msg in enumerate((bomb, cut)):
        before = compressed.node.counts["bad_frames"]
        compressed.send_bad_and_wait(msg)
        assert compressed.node.counts["bad_frames"] == before + 1
        landmarks, _ = compressed.send_and_wait(jpeg_msg(astronaut_bgr(), (610 + k, 0)))
        assert len(landmarks.faces) == 1


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


def test_frames_lost_in_transport_are_reported(raw: Harness) -> None:
    """A gap in the camera's DDS sequence numbers means frames lost on the way (no Fast DDS profile)."""
    node = raw.node
    node.diagnostics_status()  # a fresh period
    info = {"publisher_gid": {"data": b"cam"}, "publication_sequence_number": 1}
    msg = image_msg(np.zeros((8, 8, 3), np.uint8), stamp=(160, 0))
    for sequence in (1, 2, 10):
        node._on_image(msg, {**info, "publication_sequence_number": sequence})
    status = node.diagnostics_status()
    values = {kv.key: kv.value for kv in status.values}
    assert values["lost_in_transport_in_period"] == "7"
    assert "lost in transport" in status.message and "Fast DDS profile" in status.message


def _raw_matrix() -> dict[str, Any]:
    """Twelve kinds of malformed raw frames, each refused by the decoder with its own reason."""
    def with_(**fields: Any) -> Any:
        msg = image_msg(np.full((48, 64, 3), 100, np.uint8))
        for key, value in fields.items():
            setattr(msg, key, value)
        return msg

    row = 64 * 3
    return {
        "unknown encoding": with_(encoding="nonsense"), "empty encoding": with_(encoding=""),
        "zero size": with_(height=0, width=0, step=0, data=b""), "zero width": with_(width=0, step=0),
        "truncated": with_(data=b"\x00" * 1000), "no data": with_(data=b""),
        "absurd size": with_(height=100_000, width=100_000, step=300_000, data=b"\x00" * 16),
        "step shorter than a row": with_(step=7), "step needs more data": with_(step=row + 1),
        "mono16 odd length": with_(encoding="mono16", step=128, data=b"\x00" * (128 * 48 - 1)),
        "depth image": with_(encoding="32FC1", step=256, data=b"\x00" * (256 * 48)),
        "yuv422 odd width": with_(encoding="yuv422", width=63, step=126, data=b"\x00" * (126 * 48)),
    }


def _compressed_matrix() -> dict[str, Any]:
    """Eight kinds of broken compressed frames."""
    import struct

    good = jpeg_msg(astronaut_bgr())

    def with_data(data: bytes, fmt: str = "jpeg") -> Any:
        msg = jpeg_msg(astronaut_bgr())
        msg.data, msg.format = data, fmt
        return msg

    bomb = bytearray(good.data)
    sof = bomb.find(b"\xff\xc0")
    bomb[sof + 5:sof + 9] = struct.pack(">HH", 5773, 5773)
    ok, png = cv2.imencode(".png", astronaut_bgr()[:64, :64])
    png_bomb = bytearray(png.tobytes())
    png_bomb[16:24] = struct.pack(">II", 5000, 5000)
    return {
        "empty": with_data(b""), "garbage": with_data(os.urandom(5000)),
        "cut, no end marker": with_data(bytes(good.data[: len(good.data) // 2])),
        "cut, end marker re-added": with_data(bytes(good.data[: len(good.data) // 2]) + b"\xff\xd9"),
        "header only": with_data(bytes(good.data[:200]) + b"\x00" * 100),
        "decode bomb (jpeg)": with_data(bytes(bomb)), "decode bomb (png)": with_data(bytes(png_bomb), "png"),
        "cut png": with_data(png.tobytes()[: len(png) // 2], "png"),
    }


@pytest.mark.parametrize("kind", list(_raw_matrix()))
def test_bad_input_matrix_raw(raw: Harness, kind: str) -> None:
    """Each malformed raw frame is one bad frame (not an error), and the next good frame is answered."""
    before = dict(raw.node.counts)
    raw.send_bad_and_wait(_raw_matrix()[kind])
    counts = raw.node.counts
    assert counts["bad_frames"] == before["bad_frames"] + 1 and counts["errors"] == before["errors"], kind
    landmarks, _ = raw.send_and_wait(image_msg(astronaut_bgr(), (1700 + list(_raw_matrix()).index(kind), 0)))
    assert len(landmarks.faces) == 1


@pytest.mark.parametrize("kind", list(_compressed_matrix()))
def test_bad_input_matrix_compressed(compressed: Harness, kind: str) -> None:
    before = dict(compressed.node.counts)
    compressed.send_bad_and_wait(_compressed_matrix()[kind])
    counts = compressed.node.counts
    assert counts["bad_frames"] == before["bad_frames"] + 1 and counts["errors"] == before["errors"], kind
    stamp = (1800 + list(_compressed_matrix()).index(kind), 0)
    landmarks, _ = compressed.send_and_wait(jpeg_msg(astronaut_bgr(), stamp))
    assert len(landmarks.faces) == 1


def test_a_failing_detector_shows_in_diagnostics_and_the_node_keeps_answering(raw: Harness) -> None:
    """Errors on the detector's thread must not vanish: diagnostics name them, frames still get answers."""
    node = raw.node
    detector = node.pipeline.detections
    real = detector.detector

    class Broken:
        name = real.name

        def detect(self, image: Any) -> Any:
            raise RuntimeError("detector exploded")

    node.diagnostics_status()
    node.pipeline.tracker.reset()
    detector.detector = Broken()
    try:
        raw.send_and_wait(image_msg(astronaut_bgr(), stamp=(1900, 0)))
        status = node.diagnostics_status()
        values = {kv.key: kv.value for kv in status.values}
        assert int(values["detector_errors_total"]) >= 1 and "detector exploded" in values["detector_last_error"]
        # the period's message (ERROR "face detector failed ...") is not asserted here: this node's
        # own diagnostics timer may already have closed the period in which the error happened
    finally:
        detector.detector = real
    landmarks, _ = raw.send_and_wait(image_msg(astronaut_bgr(), stamp=(1901, 0)))
    assert len(landmarks.faces) == 1
    node.diagnostics_status()  # a fresh period (no spinning from here on: the node's timer cannot run)
    node.pipeline.counters.detector_errors += 1
    assert "face detector failed 1 times" in node.diagnostics_status().message
