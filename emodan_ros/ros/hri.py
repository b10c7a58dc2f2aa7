"""ROS4HRI (REP 155) output of the emotion node: the same faces, in the ecosystem's topics.

Per processed frame: ``/humans/faces/tracked`` (hri_msgs/IdsList) and, per face,
``/humans/faces/<id>/roi``, ``.../landmarks`` (the 70-point layout), ``.../expression`` and, only
while someone subscribes, ``.../aligned`` (the face warped to the model's mean shape). With
tf2_msgs installed, the head pose goes to ``/tf`` as ``face_<id>`` in the camera's frame. Ids are
REP-155 strings of the tracker's ids (``faces.rep155.face_id``); a face's publishers live as long
as its track (created when it appears, destroyed when the tracker forgets it).

All conventions (normalisation, 70 points, expression names, valence/arousal) are in
``faces.rep155``; this module only fills messages.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, Iterable

import cv2
import numpy as np
from hri_msgs.msg import Expression, FacialLandmarks, IdsList, NormalizedPointOfInterest2D, \
    NormalizedRegionOfInterest2D
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from emodan_ros.faces import rep155
from emodan_ros.faces.pipeline import FaceResult
from emodan_ros.io.image_codec import encode_image
from emodan_ros.io.messages import HALF_PIXEL

PREFIX = "/humans/faces"
TF_AVAILABLE = importlib.util.find_spec("tf2_msgs") is not None


@dataclass
class _FacePublishers:
    roi: Publisher
    landmarks: Publisher
    expression: Publisher
    aligned: Publisher


class HriOutput:
    """Publishes REP-155 face topics for the faces of each frame."""

    def __init__(self, node: Node, class_names: Iterable[str],
                 aligned_face: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        self._node = node
        self._class_names = tuple(class_names)
        self._aligned_face = aligned_face
        self._qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self._tracked = node.create_publisher(IdsList, f"{PREFIX}/tracked", self._qos)
        self._faces: dict[int, _FacePublishers] = {}
        self._tf = None
        if TF_AVAILABLE:
            from tf2_msgs.msg import TFMessage

            self._tf = node.create_publisher(TFMessage, "/tf", 100)

    @property
    def face_ids(self) -> list[int]:
        """Track ids that have publishers now."""
        return sorted(self._faces)

    def _publishers(self, face_id: int) -> _FacePublishers:
        if face_id not in self._faces:
            base = f"{PREFIX}/{rep155.face_id(face_id)}"
            node = self._node
            self._faces[face_id] = _FacePublishers(
                node.create_publisher(NormalizedRegionOfInterest2D, f"{base}/roi", self._qos),
                node.create_publisher(FacialLandmarks, f"{base}/landmarks", self._qos),
                node.create_publisher(Expression, f"{base}/expression", self._qos),
                node.create_publisher(Image, f"{base}/aligned", qos_profile_sensor_data))
        return self._faces[face_id]

    def publish(self, header: Header, image: np.ndarray, faces: list[FaceResult], alive: set[int]) -> None:
        """This frame's faces; ``alive`` are the tracker's ids (a face missing briefly keeps its topics)."""
        height, width = image.shape[:2]
        self._tracked.publish(IdsList(header=header, ids=rep155.face_ids(f.face_id for f in faces)))
        for face in faces:
            pubs = self._publishers(face.face_id)
            corner_box = np.asarray(face.box, np.float64) + HALF_PIXEL
            xmin, ymin, xmax, ymax, c = rep155.normalized_roi(corner_box, width, height, face.score)
            pubs.roi.publish(NormalizedRegionOfInterest2D(header=header, xmin=xmin, ymin=ymin, xmax=xmax,
                                                          ymax=ymax, c=c))
            points = rep155.ros4hri_landmarks(face.landmarks + HALF_PIXEL, width, height,
                                              np.full(68, face.quality))
            pubs.landmarks.publish(FacialLandmarks(
                header=header, height=height, width=width,
                landmarks=[NormalizedPointOfInterest2D(x=x, y=y, c=c) for x, y, c in
                           zip(points.x, points.y, points.c)]))
            fields = rep155.expression_fields(face.probs, self._class_names)
            pubs.expression.publish(Expression(header=header, expression=fields.expression,
                                               valence=fields.valence, arousal=fields.arousal,
                                               confidence=fields.confidence))
            if pubs.aligned.get_subscription_count() > 0:
                grey = self._aligned_face(image, face.landmarks)
                pubs.aligned.publish(encode_image(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), "mono8", Image,
                                                  header=header))
        self._publish_tf(header, faces)
        for face_id in [k for k in self._faces if k not in alive]:
            self._destroy(face_id)

    def _publish_tf(self, header: Header, faces: list[FaceResult]) -> None:
        transforms = face_transforms(header, faces)
        if self._tf is not None and transforms:
            from tf2_msgs.msg import TFMessage

            self._tf.publish(TFMessage(transforms=transforms))

    def _destroy(self, face_id: int) -> None:
        pubs = self._faces.pop(face_id)
        for publisher in (pubs.roi, pubs.landmarks, pubs.expression, pubs.aligned):
            self._node.destroy_publisher(publisher)

    def close(self) -> None:
        for face_id in list(self._faces):
            self._destroy(face_id)


def tf_note() -> str:
    """What diagnostics say about TF frames."""
    return "face_<id> frames on /tf" if TF_AVAILABLE else "no TF frames: tf2_msgs is not installed"



def face_transforms(header: Header, faces: list[FaceResult]) -> list[TransformStamped]:
    """``face_<id>`` in the image's frame for every face with a head pose (what goes to /tf)."""
    transforms = []
    for face in faces:
        if face.head_pose is None:
            continue
        t = TransformStamped(header=header, child_frame_id=f"face_{rep155.face_id(face.face_id)}")
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = \
            face.head_pose.translation_m
        (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
         t.transform.rotation.w) = face.head_pose.quaternion_xyzw
        transforms.append(t)
    return transforms
