"""The package's structure and its single sources of truth: where ROS may be imported, module size,
the pipeline settings in config/emotion.yaml, and the one message conversion (round trip)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import HAS_MSGS
from emodan_ros.faces.config import DetectorConfig, PipelineConfig, check_setting, settings_of
from emodan_ros.faces.pipeline import FaceResult
from emodan_ros.io import bag_io
from emodan_ros.io.messages import HALF_PIXEL, MessageTypes, decode_faces, emotions_message, landmarks_message

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "emodan_ros"
ROS_IMPORT = re.compile(r"^\s*(import rclpy|from rclpy[ .]|from emodan_ros\.msg |import emodan_ros\.msg)", re.M)


def test_only_the_ros_subpackage_imports_rclpy_or_the_messages() -> None:
    offenders = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py")
                 if ROS_IMPORT.search(p.read_text()) and p.parent.name != "ros"]
    assert offenders == []
    assert ROS_IMPORT.search((PACKAGE / "ros" / "node.py").read_text())  # the pattern does match imports


def test_no_module_over_500_lines() -> None:
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > 500} == {}


def test_emotion_yaml_holds_the_pipeline_and_detector_defaults() -> None:
    params = yaml.safe_load((REPO / "config" / "emotion.yaml").read_text())["/**"]["ros__parameters"]
    for cls in (PipelineConfig, DetectorConfig):
        for name, (default, _) in settings_of(cls).items():
            assert params[name] == default and type(params[name]) is type(default), name


@pytest.mark.parametrize("name,value", [("smoothing", 1.0), ("smoothing", -0.1), ("iou_threshold", 0.0),
                                        ("redetect_every", 0), ("max_faces", 2.5), ("min_quality", "high"),
                                        ("max_missed", True)])
def test_settings_outside_their_range_or_type_are_refused(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        PipelineConfig().replace(**{name: value})
    with pytest.raises(ValueError, match=name):
        PipelineConfig(**{name: value})


def test_detector_choices_and_ranges_come_from_one_place() -> None:
    with pytest.raises(ValueError, match="detector must be one of"):
        DetectorConfig(detector="mtcnn")
    assert check_setting(PipelineConfig, "smoothing", 0.99) == pytest.approx(0.99)
    assert isinstance(check_setting(PipelineConfig, "smoothing", 0), float)


def _faces(rng: np.random.Generator) -> list[FaceResult]:
    faces = []
    for face_id in (3, 7):
        landmarks = rng.uniform(50, 300, (68, 2)).astype(np.float32)
        lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
        probs = rng.dirichlet(np.ones(8)).astype(np.float32)
        faces.append(FaceResult(face_id=face_id, box=np.concatenate([lo, hi]), score=0.75, landmarks=landmarks,
                                quality=0.5, probs=probs, smoothed=face_id == 7))
    return faces


def _round_trip(types: MessageTypes, header: object) -> None:
    names = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
    faces = _faces(np.random.default_rng(0))
    lm_msg = landmarks_message(types, header, faces, 640, 480)
    em_msg = emotions_message(types, header, faces, names)
    # the message convention: pixel corners, the pipeline's: pixel centres
    assert lm_msg.faces[0].box_x == pytest.approx(faces[0].box[0] + HALF_PIXEL)
    assert em_msg.states[1].emotion == names[int(np.argmax(faces[1].probs))] and em_msg.states[1].smoothed
    back, got_names = decode_faces(em_msg, lm_msg, names[::-1])  # another class order: mapped by name
    assert got_names == names[::-1]
    for face, decoded in zip(faces, back):
        assert decoded.face_id == face.face_id
        np.testing.assert_allclose(decoded.landmarks, face.landmarks, atol=1e-4)
        np.testing.assert_allclose(decoded.box, face.box, atol=1e-4)
        np.testing.assert_allclose(decoded.probs, face.probs[::-1], atol=1e-6)
        assert decoded.score == pytest.approx(0.75) and decoded.quality == pytest.approx(0.5)


def test_messages_round_trip_with_rosbags_classes() -> None:
    types = bag_io.typestore().types
    header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=5, nanosec=7), frame_id="c")
    _round_trip(MessageTypes.from_typestore(types), header)


@pytest.mark.skipif(not HAS_MSGS, reason="needs rclpy and the built emodan_ros.msg: run `make test`")
def test_messages_round_trip_with_rclpy_classes() -> None:
    from std_msgs.msg import Header

    from emodan_ros.ros.node import MESSAGES

    _round_trip(MESSAGES, Header(frame_id="c"))
