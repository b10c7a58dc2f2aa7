"""The behaviour helper: stable emotions per face, change callbacks, the example behaviour node."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from conftest import HAS_MSGS, spin_until
from emodan_ros.ros.behavior import EmotionChange, EmotionMemory

HAPPY = {"neutral": 0.1, "happiness": 0.8, "sadness": 0.1}
SAD = {"neutral": 0.2, "happiness": 0.1, "sadness": 0.7}
NEUTRAL = {"neutral": 0.7, "happiness": 0.2, "sadness": 0.1}
UNSURE = {"neutral": 0.4, "happiness": 0.35, "sadness": 0.25}


def test_an_emotion_becomes_stable_only_after_min_duration() -> None:
    changes: list[EmotionChange] = []
    memory = EmotionMemory(min_confidence=0.5, min_duration=0.5, on_change=changes.append)
    for k in range(5):  # 0.0 .. 0.4 s of happiness: not yet
        memory.update(k * 0.1, [(1, HAPPY)])
    assert memory.get(1).emotion == "" and changes == []
    memory.update(0.5, [(1, HAPPY)])
    assert memory.get(1).emotion == "happiness"
    assert changes == [EmotionChange(1, "", "happiness", 0.8, 0.5, True)]
    assert memory.get(1).age(1.5) == pytest.approx(1.0)
    assert memory.get(1).confidence == pytest.approx(0.8)


def test_a_flicker_does_not_change_the_emotion() -> None:
    memory = EmotionMemory(min_duration=0.3)
    for k in range(10):
        memory.update(k * 0.1, [(1, HAPPY)])
    for k in range(10, 30):  # sad every other frame: never 0.3 s in a row
        memory.update(k * 0.1, [(1, SAD if k % 2 else HAPPY)])
    assert memory.get(1).emotion == "happiness"


def test_low_confidence_frames_do_not_count_towards_a_change() -> None:
    memory = EmotionMemory(min_confidence=0.5, min_duration=0.2)
    for k in range(5):
        memory.update(k * 0.1, [(1, NEUTRAL)])
    for k in range(5, 15):
        memory.update(k * 0.1, [(1, UNSURE)])  # top is neutral at 0.4 < 0.5
    assert memory.get(1).emotion == "neutral"
    memory.update(1.5, [(1, SAD)])
    memory.update(1.8, [(1, SAD)])
    assert memory.get(1).emotion == "sadness"


def test_faces_are_forgotten_and_the_largest_is_most_prominent() -> None:
    changes: list[EmotionChange] = []
    memory = EmotionMemory(min_duration=0.0, forget_after=1.0, on_change=changes.append)
    memory.update(0.0, [(1, HAPPY), (2, SAD)], box_areas={1: 100.0, 2: 900.0})
    assert memory.most_prominent(0.0).face_id == 2
    assert {c.face_id: c.is_most_prominent for c in changes} == {1: False, 2: True}
    memory.update(0.5, [(1, HAPPY)], box_areas={1: 100.0})
    assert memory.most_prominent(0.5).face_id == 1  # face 2 is not in the latest frame
    memory.update(2.0, [(1, HAPPY)])
    assert memory.get(2) is None and memory.get(1) is not None


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        EmotionMemory(min_confidence=1.5)
    with pytest.raises(ValueError):
        EmotionMemory(forget_after=0.0)


def _arrays(stamp: float, faces: list[tuple[int, dict[str, float], float]]) -> tuple[Any, Any]:
    from emodan_ros.msg import EmotionState, EmotionStateArray, FaceLandmarks, FaceLandmarksArray

    emotions, landmarks = EmotionStateArray(), FaceLandmarksArray()
    for msg in (emotions, landmarks):
        msg.header.stamp.sec = int(stamp)
        msg.header.stamp.nanosec = int(round((stamp - int(stamp)) * 1e9))
    for face_id, probs, side in faces:
        top = max(probs, key=probs.get)
        emotions.states.append(EmotionState(face_id=face_id, emotion=top, probability=probs[top],
                                            class_names=list(probs), probabilities=list(probs.values())))
        landmarks.faces.append(FaceLandmarks(face_id=face_id, box_width=side, box_height=side))
    return landmarks, emotions


@pytest.mark.skipif(not HAS_MSGS, reason="needs rclpy and the built package: run `make test`")
def test_listener_reports_changes_from_the_topics(make_node: Any) -> None:
    from emodan_ros.ros.behavior import EmotionListener
    from emodan_ros.msg import EmotionStateArray, FaceLandmarksArray

    node = make_node("behaviour_listener")
    changes: list[EmotionChange] = []
    listener = EmotionListener(node, emotions_topic="emo_t", landmarks_topic="lm_t",
                               on_change=changes.append, min_duration=0.2)
    camera = make_node("behaviour_source")
    lm_pub = camera.create_publisher(FaceLandmarksArray, "lm_t", 10)
    emo_pub = camera.create_publisher(EmotionStateArray, "emo_t", 10)
    assert spin_until([node, camera], lambda: emo_pub.get_subscription_count() > 0
                      and lm_pub.get_subscription_count() > 0)
    for k in range(5):
        landmarks, emotions = _arrays(10 + 0.1 * k, [(7, HAPPY, 50.0), (8, SAD, 120.0)])
        lm_pub.publish(landmarks)
        emo_pub.publish(emotions)
        spin_until([node, camera], lambda: False, 0.1)
    assert spin_until([node, camera], lambda: len(changes) == 2)
    by_face = {c.face_id: c for c in changes}
    assert by_face[7].emotion == "happiness" and by_face[8].emotion == "sadness"
    assert by_face[8].is_most_prominent and not by_face[7].is_most_prominent
    assert listener.memory.most_prominent(10.4).face_id == 8


@pytest.mark.skipif(not HAS_MSGS, reason="needs rclpy and the built package: run `make test`")
def test_example_behaviour_node_reacts_when_the_main_face_becomes_happy(make_node: Any) -> None:
    from std_msgs.msg import String

    from emodan_ros.msg import EmotionStateArray, FaceLandmarksArray

    ns = f"/behaviour{os.getpid()}"
    proc = subprocess.Popen([sys.executable, "-m", "emodan_ros.ros.behavior", "--ros-args", "-r", f"__ns:={ns}",
                             "-p", "min_duration:=0.2"], cwd="/", stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        source = make_node("behaviour_camera")
        lm_pub = source.create_publisher(FaceLandmarksArray, f"{ns}/landmarks", 10)
        emo_pub = source.create_publisher(EmotionStateArray, f"{ns}/emotions", 10)
        reactions: list[str] = []
        source.create_subscription(String, f"{ns}/reaction", lambda m: reactions.append(m.data), 10)
        assert spin_until([source], lambda: emo_pub.get_subscription_count() > 0
                          and source.count_publishers(f"{ns}/reaction") > 0, 30.0)
        for k in range(6):
            landmarks, emotions = _arrays(5 + 0.1 * k, [(3, NEUTRAL if k < 1 else HAPPY, 80.0)])
            lm_pub.publish(landmarks)
            emo_pub.publish(emotions)
            spin_until([source], lambda: False, 0.1)
        assert spin_until([source], lambda: bool(reactions), 10.0)
        assert "happy" in reactions[0]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "happiness" in out


def test_who_is_looking_at_me_and_since_when() -> None:
    from emodan_ros.ros.behavior import EmotionMemory

    memory = EmotionMemory(min_duration=0.0)
    happy = {"happiness": 0.9, "neutral": 0.1}
    memory.update(0.0, [(1, happy), (2, happy)], looking={1: False, 2: True})
    memory.update(0.5, [(1, happy), (2, happy)], looking={1: True, 2: True})
    assert [f.face_id for f in memory.looking_at_me(1.0)] == [2, 1]  # longest first
    assert memory.get(2).looking_for(1.0) == pytest.approx(1.0)
    assert [f.face_id for f in memory.looking_at_me(1.0, min_duration=0.8)] == [2]
    memory.update(1.2, [(1, happy), (2, happy)], looking={1: True, 2: False})  # 2 turned away
    assert [f.face_id for f in memory.looking_at_me(1.2)] == [1]
    assert memory.get(2).looking_for(1.2) == 0.0


def test_the_example_greets_the_person_who_looks_and_smiles() -> None:
    from emodan_ros.ros.behavior import GREETING, REACTIONS, EmotionChange, EmotionMemory, reaction

    memory = EmotionMemory(min_duration=0.0)
    memory.update(0.0, [(1, {"happiness": 0.9}), (2, {"happiness": 0.9})], {1: 100.0, 2: 900.0},
                  looking={1: True, 2: False})
    smiling_looker = EmotionChange(1, "", "happiness", 0.9, 0.0, is_most_prominent=False)
    assert reaction(smiling_looker, memory.get(1)) == GREETING
    prominent = EmotionChange(2, "", "happiness", 0.9, 0.0, is_most_prominent=True)
    assert reaction(prominent, memory.get(2)) == REACTIONS["happiness"]  # not looking: the old rule
    assert reaction(EmotionChange(1, "", "anger", 0.9, 0.0, False), memory.get(1)) is None
