"""Pipeline results <-> the package's messages, for rclpy classes and rosbags classes alike.

One place owns the message conventions:
- coordinates: message pixels have their origin at the top-left *corner* of the top-left pixel
  (``sensor_msgs/RegionOfInterest`` style); the pipeline works with OpenCV pixel *centres*, so
  every conversion adds or removes ``HALF_PIXEL``;
- stamps: ``builtin_interfaces/Time`` <-> integer nanoseconds;
- emotions: probabilities travel with their class names, and readers map them by name; valence
  and arousal are derived from them here (``faces.affect``), so every writer fills them alike;
- head pose: the head frame in the camera optical frame, metres and degrees (``faces.head_pose``).

No ROS import here: the message classes are passed in (the built message module in the node, a rosbags
typestore in the bag tools), so the bag tools work from a pip install without ROS.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from emodan_ros.faces.affect import valence_arousal
from emodan_ros.faces.classes import canonical_name, class_mapping
from emodan_ros.faces.head_pose import HeadPose
from emodan_ros.faces.pipeline import FaceResult

HALF_PIXEL = 0.5
N_LANDMARKS = 68
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
EMOTION_TYPE = "emodan_ros/msg/EmotionState"
EMOTIONS_TYPE = "emodan_ros/msg/EmotionStateArray"
FACE_TYPE = "emodan_ros/msg/FaceLandmarks"
LANDMARKS_TYPE = "emodan_ros/msg/FaceLandmarksArray"


@dataclass
class MessageTypes:
    """The message classes of one world (the built rclpy messages or a rosbags typestore)."""

    face: type
    faces: type
    state: type
    states: type
    pose: type
    point: type
    quaternion: type

    @classmethod
    def from_typestore(cls, types: dict[str, type]) -> MessageTypes:
        return cls(types[FACE_TYPE], types[LANDMARKS_TYPE], types[EMOTION_TYPE], types[EMOTIONS_TYPE],
                   types["geometry_msgs/msg/Pose"], types["geometry_msgs/msg/Point"],
                   types["geometry_msgs/msg/Quaternion"])

    @property
    def numpy_arrays(self) -> bool:
        """rosbags messages (dataclasses) hold numeric arrays as numpy; rclpy setters want sequences."""
        return dataclasses.is_dataclass(self.face)

    def floats(self, values: Any) -> Any:
        array = np.asarray(values, np.float32).reshape(-1)
        return array if self.numpy_arrays else array.tolist()


@dataclass
class DecodedFace:
    """A face read back from messages, in pipeline conventions (pixel centres, probs over ``class_names``)."""

    face_id: int
    probs: np.ndarray
    landmarks: np.ndarray | None
    box: np.ndarray | None
    score: float = 1.0
    quality: float = 1.0


def stamp_ns(header: Any) -> int:
    """A header's stamp in integer nanoseconds (exact: no float seconds in between)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def set_stamp(header: Any, ns: int) -> None:
    """Write integer nanoseconds into a header's stamp (in place)."""
    header.stamp.sec, header.stamp.nanosec = divmod(int(ns), 1_000_000_000)


def pose_message(types: MessageTypes, pose: HeadPose | None) -> Any:
    """``geometry_msgs/Pose`` of the head in the camera optical frame (all zero without a pose)."""
    if pose is None:
        return types.pose(position=types.point(x=0.0, y=0.0, z=0.0),
                          orientation=types.quaternion(x=0.0, y=0.0, z=0.0, w=0.0))
    (px, py, pz), (qx, qy, qz, qw) = pose.translation_m, pose.quaternion_xyzw
    return types.pose(position=types.point(x=float(px), y=float(py), z=float(pz)),
                      orientation=types.quaternion(x=float(qx), y=float(qy), z=float(qz), w=float(qw)))


def face_message(types: MessageTypes, header: Any, face_id: int, box: np.ndarray, landmarks: np.ndarray,
                 width: int, height: int, score: float = 1.0, quality: float = 1.0,
                 pose: HeadPose | None = None) -> Any:
    """``FaceLandmarks`` from a box (xyxy) and (68, 2) landmarks in pixel-centre coordinates."""
    corner_box = np.asarray(box, np.float64) + HALF_PIXEL
    corner = np.asarray(landmarks, np.float64).reshape(N_LANDMARKS, 2) + HALF_PIXEL
    return types.face(
        header=header, face_id=int(face_id), box_x=float(corner_box[0]), box_y=float(corner_box[1]),
        box_width=float(max(corner_box[2] - corner_box[0], 0.0)),
        box_height=float(max(corner_box[3] - corner_box[1], 0.0)), detection_score=float(score),
        landmarks=types.floats(corner), image_width=int(width), image_height=int(height), quality=float(quality),
        has_head_pose=pose is not None, head_pose=pose_message(types, pose),
        yaw=float(pose.yaw_deg) if pose else 0.0, pitch=float(pose.pitch_deg) if pose else 0.0,
        roll=float(pose.roll_deg) if pose else 0.0, gaze_angle=float(pose.angle_to_camera_deg) if pose else 0.0,
        looking_at_camera=bool(pose.looking_at_camera) if pose else False)


def state_message(types: MessageTypes, header: Any, face_id: int, probs: np.ndarray,
                  class_names: Sequence[str], smoothed: bool = False) -> Any:
    """``EmotionState``: the top class and the whole distribution with its class names."""
    probs = np.asarray(probs, np.float32).reshape(-1)
    if len(probs) != len(class_names) or len(probs) == 0:
        raise ValueError(f"{len(probs)} probabilities for {len(class_names)} class names")
    top = int(np.argmax(probs))
    valence, arousal = valence_arousal(probs, class_names, ignore_unknown=True)
    return types.state(header=header, face_id=int(face_id), emotion=str(class_names[top]),
                       probability=float(probs[top]), class_names=[str(c) for c in class_names],
                       probabilities=types.floats(probs), smoothed=bool(smoothed), valence=valence, arousal=arousal)


def landmarks_message(types: MessageTypes, header: Any, faces: Sequence[FaceResult], width: int,
                      height: int) -> Any:
    """``FaceLandmarksArray`` of one frame."""
    return types.faces(header=header, faces=[
        face_message(types, header, f.face_id, f.box, f.landmarks, width, height, f.score, f.quality, f.head_pose)
        for f in faces])


def emotions_message(types: MessageTypes, header: Any, faces: Sequence[FaceResult],
                     class_names: Sequence[str]) -> Any:
    """``EmotionStateArray`` of one frame."""
    return types.states(header=header, states=[
        state_message(types, header, f.face_id, f.probs, class_names, f.smoothed) for f in faces])


def face_geometry(face_msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(68, 2) landmarks and the xyxy box of a ``FaceLandmarks``, in pixel-centre coordinates."""
    points = np.asarray(face_msg.landmarks, np.float32).reshape(N_LANDMARKS, 2) - HALF_PIXEL
    box = np.array([face_msg.box_x, face_msg.box_y, face_msg.box_x + face_msg.box_width,
                    face_msg.box_y + face_msg.box_height], np.float32) - HALF_PIXEL
    return points, box


def state_probs(state: Any, class_names: Sequence[str]) -> np.ndarray:
    """An ``EmotionState``'s probabilities re-expressed over ``class_names`` (by name; unknown ones dropped)."""
    own = [canonical_name(c) for c in state.class_names]
    probs = np.zeros(len(class_names), np.float32)
    for value, j in zip(state.probabilities, class_mapping(own, class_names)):
        if j >= 0:
            probs[j] += value
    return probs


def decode_faces(emotions_msg: Any, landmarks_msg: Any | None,
                 class_names: Sequence[str] | None = None) -> tuple[list[DecodedFace], tuple[str, ...]]:
    """The faces of one frame from its two messages (landmarks joined by face id), and the class names
    used (``class_names``, else the first state's)."""
    names = tuple(class_names) if class_names else ()
    geometry: dict[int, Any] = {}
    if landmarks_msg is not None:
        geometry = {int(f.face_id): f for f in landmarks_msg.faces}
    faces = []
    for state in emotions_msg.states:
        if not names:
            names = tuple(canonical_name(c) for c in state.class_names)
        face_msg = geometry.get(int(state.face_id))
        points, box = face_geometry(face_msg) if face_msg is not None else (None, None)
        faces.append(DecodedFace(
            int(state.face_id), state_probs(state, names), points, box,
            score=float(face_msg.detection_score) if face_msg is not None else 1.0,
            quality=float(face_msg.quality) if face_msg is not None else 1.0))
    return faces, names
