"""The package's messages over real Fast DDS (loopback, isolated domain from conftest),
their documentation, and camera-size images between two processes with config/fastdds.xml."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_ros

REPO = Path(__file__).resolve().parent.parent
MSG_DIR = REPO / "msg"
FERPLUS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")



def _landmarks(seed: int):
    from emodan_ros.msg import FaceLandmarks
    from std_msgs.msg import Header

    rng = np.random.default_rng(seed)
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000 + seed, 123_456_789
    return FaceLandmarks(
        header=header, face_id=seed, box_x=10.5, box_y=20.25, box_width=100.0, box_height=120.0,
        detection_score=0.875, landmarks=rng.uniform(0, 640, 136).astype(np.float32),
        image_width=640, image_height=480, quality=0.5,
    )


def _state(seed: int, smoothed: bool = True):
    from emodan_ros.msg import EmotionState

    probs = np.random.default_rng(seed).dirichlet(np.ones(len(FERPLUS))).astype(np.float32)
    top = int(np.argmax(probs))
    return EmotionState(
        header=_landmarks(seed).header, face_id=seed, emotion=FERPLUS[top], probability=float(probs[top]),
        class_names=list(FERPLUS), probabilities=probs.tolist(), smoothed=smoothed,
    )


def _samples():
    from emodan_ros.msg import EmotionStateArray, FaceLandmarksArray

    header = _landmarks(0).header
    return {
        "FaceLandmarks": [_landmarks(1)],
        "EmotionState": [_state(2), _state(3, smoothed=False)],
        "FaceLandmarksArray": [
            FaceLandmarksArray(header=header, faces=[_landmarks(4), _landmarks(5)]),
            FaceLandmarksArray(header=header, faces=[]),  # "no face" is a message too
        ],
        "EmotionStateArray": [
            EmotionStateArray(header=header, states=[_state(6), _state(7)]),
            EmotionStateArray(header=header, states=[]),
        ],
    }


@needs_ros
@pytest.mark.parametrize("type_name", ["FaceLandmarks", "EmotionState", "FaceLandmarksArray", "EmotionStateArray"])
def test_message_roundtrips_over_dds(type_name: str, make_node, spin) -> None:
    import emodan_ros.msg as msgs
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    msg_cls = getattr(msgs, type_name)
    sent = _samples()[type_name]
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub_node, sub_node = make_node(f"pub_{type_name.lower()}"), make_node(f"sub_{type_name.lower()}")
    received: list = []
    sub_node.create_subscription(msg_cls, f"/test/{type_name}", received.append, qos)
    pub = pub_node.create_publisher(msg_cls, f"/test/{type_name}", qos)
    assert spin([pub_node, sub_node], lambda: pub.get_subscription_count() > 0, 10.0), "no DDS discovery"
    for msg in sent:
        pub.publish(msg)
    assert spin([pub_node, sub_node], lambda: len(received) >= len(sent), 10.0), f"got {len(received)}/{len(sent)}"
    assert received == sent
    assert received[0] is not sent[0]  # went through DDS, not handed over


@needs_ros
def test_image_over_dds_decodes(make_node, spin) -> None:
    """An rclpy Image received from DDS (array.array data) decodes to the sent pixels."""
    from emodan_ros.io.image_codec import decode_image, encode_image
    from sensor_msgs.msg import Image

    bgr = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    pub_node, sub_node = make_node("img_pub"), make_node("img_sub")
    received: list = []
    sub_node.create_subscription(Image, "/test/image", received.append, 10)
    pub = pub_node.create_publisher(Image, "/test/image", 10)
    assert spin([pub_node, sub_node], lambda: pub.get_subscription_count() > 0, 10.0)
    pub.publish(encode_image(bgr, "rgb8", Image, step=64 * 3 + 5))
    assert spin([pub_node, sub_node], lambda: bool(received), 10.0)
    np.testing.assert_array_equal(decode_image(received[0]), bgr)


@needs_ros
def test_landmarks_array_is_fixed_size() -> None:
    from emodan_ros.msg import FaceLandmarks

    landmarks = FaceLandmarks().landmarks
    assert landmarks.shape == (136,) and landmarks.dtype == np.float32


# --------------------------------------------------------------------------- documentation

def _fields(path: Path) -> list[tuple[str, str, str]]:
    """(type, name, documentation) for every field of a .msg file."""
    fields, pending = [], []
    for line in path.read_text().splitlines():
        code, _, comment = line.partition("#")
        if not code.strip():
            pending = pending + [comment.strip()] if comment.strip() else []
            continue
        type_, name = code.split()[:2]
        fields.append((type_, name, " ".join(pending + [comment.strip()])))
        pending = []
    return fields


def test_msg_files_are_the_designed_interface() -> None:
    names = {p.stem: [(t, n) for t, n, _ in _fields(p)] for p in MSG_DIR.glob("*.msg")}
    assert names == {
        "FaceLandmarks": [
            ("std_msgs/Header", "header"), ("uint32", "face_id"), ("float32", "box_x"), ("float32", "box_y"),
            ("float32", "box_width"), ("float32", "box_height"), ("float32", "detection_score"),
            ("float32[136]", "landmarks"), ("uint32", "image_width"), ("uint32", "image_height"),
            ("float32", "quality"),
            # 0.2.0, appended (subscribers reading only the fields above are unaffected):
            ("bool", "has_head_pose"), ("geometry_msgs/Pose", "head_pose"), ("float32", "yaw"), ("float32", "pitch"),
            ("float32", "roll"), ("float32", "gaze_angle"), ("bool", "looking_at_camera"),
        ],
        "EmotionState": [
            ("std_msgs/Header", "header"), ("uint32", "face_id"), ("string", "emotion"), ("float32", "probability"),
            ("string[]", "class_names"), ("float32[]", "probabilities"), ("bool", "smoothed"),
            ("float32", "valence"), ("float32", "arousal"),  # 0.2.0, appended
        ],
        "FaceLandmarksArray": [("std_msgs/Header", "header"), ("FaceLandmarks[]", "faces")],
        "EmotionStateArray": [("std_msgs/Header", "header"), ("EmotionState[]", "states")],
    }


@pytest.mark.parametrize("path", sorted(MSG_DIR.glob("*.msg")), ids=lambda p: p.stem)
def test_every_field_is_documented(path: Path) -> None:
    for type_, name, doc in _fields(path):
        assert len(doc) >= 15, f"{path.name}: field {name} has no real comment"
        if type_.startswith("float32") and name not in ("probability", "probabilities", "detection_score", "quality"):
            assert any(unit in doc for unit in ("[px]", "[deg]", "Unitless")), f"{path.name}: {name} has no unit"
    text = path.read_text()
    assert "frame" in text.lower()
    if path.stem == "EmotionState":
        assert all(name in text for name in FERPLUS)


# --------------------------------------------------------------------------- camera-size images

_PUBLISHER = textwrap.dedent(
    """
    import sys, time
    import numpy as np, rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from emodan_ros.io.image_codec import encode_image
    count, rate = int(sys.argv[1]), float(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("camera_like_publisher")
    pub = node.create_publisher(Image, "/test/camera", qos_profile_sensor_data)
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)  # let the subscriber finish matching
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    msg = encode_image(frame, "bgr8", Image)
    for i in range(count):
        msg.header.frame_id = str(i)
        pub.publish(msg)
        time.sleep(1.0 / rate)
    time.sleep(1.0)
    node.destroy_node(); rclpy.shutdown()
    """
)

_SUBSCRIBER = textwrap.dedent(
    """
    import json, sys, time
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from emodan_ros.io.image_codec import decode_image
    timeout = float(sys.argv[1])
    rclpy.init()
    node = rclpy.create_node("camera_like_subscriber")
    got, bad = set(), 0
    def on_image(msg):
        global bad
        image = decode_image(msg)
        if image.shape != (480, 640, 3):
            bad += 1
        got.add(int(msg.header.frame_id))
    node.create_subscription(Image, "/test/camera", on_image, qos_profile_sensor_data)
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and node.count_publishers("/test/camera") == 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    while time.monotonic() < deadline and node.count_publishers("/test/camera") > 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({"received": len(got), "bad": bad}), flush=True)
    node.destroy_node(); rclpy.shutdown()
    """
)


def _stream(count: int, rate: float, profile: Path | None) -> dict:
    env = dict(os.environ)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    sub = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, "60"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout.readline().strip() == "ready"
        pub = subprocess.run(
            [sys.executable, "-c", _PUBLISHER, str(count), str(rate)], env=env, timeout=90,
            capture_output=True, text=True,
        )
        assert pub.returncode == 0, pub.stderr[-2000:]
        out, _ = sub.communicate(timeout=60)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    return json.loads(out.strip().splitlines()[-1])


def _profile() -> Path:
    """The installed profile when the package is built, else the source one."""
    try:
        from ament_index_python.packages import get_package_share_directory

        path = Path(get_package_share_directory("emodan_ros")) / "config" / "fastdds.xml"
        if path.is_file():
            return path
    except Exception:
        pass
    return REPO / "config" / "fastdds.xml"


@needs_ros
@pytest.mark.timeout(240)
def test_camera_size_images_best_effort_between_processes(record_property) -> None:
    """640x480 bgr8 at 15 fps, best effort: with config/fastdds.xml most frames arrive.

    Without it Fast DDS sends the 0.9 MB samples as UDP fragments and best effort loses
    most of them on a loaded machine; that number is recorded, not asserted (it depends
    on the machine), see ../shared/ros2-wheels.md.
    """
    count = 60
    with_profile = _stream(count, 15.0, _profile())
    without_profile = _stream(count, 15.0, None)
    record_property("received_with_profile", with_profile["received"])
    record_property("received_without_profile", without_profile["received"])
    print(f"\n640x480 bgr8 best effort, {count} sent: with fastdds.xml {with_profile['received']}, "
          f"default transports {without_profile['received']}")
    assert with_profile["bad"] == 0
    assert with_profile["received"] >= math.ceil(0.9 * count), with_profile


def test_fastdds_profile_is_the_documented_one() -> None:
    text = (REPO / "config" / "fastdds.xml").read_text()
    assert re.search(r"<type>SHM</type>\s*<segment_size>16777216</segment_size>", text)
    assert "<type>UDPv4</type>" in text
    assert "<useBuiltinTransports>false</useBuiltinTransports>" in text
    assert 'is_default_profile="true"' in text
