"""The in-process emotion_node harness shared by test_emotion_node.py and test_emotion_node_inputs.py.

A node (plain or lifecycle) with an untrained model in an isolated DDS domain (conftest), a camera
publisher and a consumer of its results; the module-scoped fixtures ``raw`` and ``compressed`` give one
per test module and node kind (defined in conftest.py from :func:`harness_fixture`).
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Iterator

import cv2
import numpy as np
from skimage import data

from conftest import HAS_MSGS, spin_until

if HAS_MSGS:
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    from emodan_ros.msg import EmotionStateArray, FaceLandmarksArray

# Around the astronaut's face in skimage.data.astronaut() (512x512): forehead to chin, ear to ear,
# widened by the model's crop margin (an untrained model's points stay inside its crop).
ASTRONAUT_REGION = (150.0, 50.0, 300.0, 215.0)
_HARNESSES = itertools.count()
# idle_detector_share 1: these tests send a frame, wait for its answer and send the next at once, faster than
# any camera, and expect an empty scene's next frame searched (the share's own tests: test_async_detect.py).
TEST_PARAMS = {"redetect_every": 1, "detector_max_side": 512, "smoothing": 0.0, "diagnostics_period": 0.2,
               "idle_detector_share": 1.0}


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


def harness_fixture(context: Any, kind: str, compressed: bool) -> Iterator[Harness]:
    """A node of ``kind`` on raw or compressed frames and its harness, torn down after the module."""
    params = {"image_transport": "compressed"} if compressed else {}
    # a namespace of its own per module: a node of an earlier module may linger in DDS discovery
    name = f"{'compressed' if compressed else 'raw'}{next(_HARNESSES)}"
    node = _make_node(context, name, kind, **params)
    harness = Harness(context, node, compressed=compressed)
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
