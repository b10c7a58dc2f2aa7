"""What behaviour code needs from the emotion stream: a stable emotion per face, since when, how sure.

Per-frame probabilities flicker; a robot should react to "this person has been smiling for
half a second", not to one frame. :class:`EmotionMemory` (pure Python, no ROS) turns the
stream into a stable state per face id: a new top emotion replaces the current one only after
it has been the top class with at least ``min_confidence`` for ``min_duration`` seconds, and a
face not seen for ``forget_after`` seconds is forgotten. :class:`EmotionListener` feeds it from
the node's ``emotions`` and ``landmarks`` topics (the box sizes say which face is most
prominent). ``behavior_example`` (:func:`main`) reacts when the most prominent face becomes
happy or sad.

Usage in a behaviour node::

    listener = EmotionListener(node, on_change=lambda change: print(change))
    face = listener.memory.most_prominent(listener.now())
    if face and face.emotion == "happiness" and face.age(listener.now()) > 2.0: ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from rclpy.node import Node
    from std_msgs.msg import Header

    from emodan_ros.msg import EmotionStateArray, FaceLandmarksArray


@dataclass
class FaceEmotion:
    """The stable emotion of one face."""

    face_id: int
    emotion: str  # FER+ class name; "" until a first emotion has been stable long enough
    confidence: float  # probability of `emotion` in the latest message, 0..1
    since: float  # [s] time (message stamps) when `emotion` became the face's emotion
    last_seen: float  # [s] stamp of the latest message with this face
    box_area: float = 0.0  # [px^2] latest face box area (0 when no landmarks message was seen)
    probabilities: dict[str, float] = field(default_factory=dict)  # latest, all classes
    candidate: str = ""  # top class that may replace `emotion` soon
    candidate_since: float = 0.0
    looking: bool = False  # the person faces the camera (head pose, FaceLandmarks.looking_at_camera)
    looking_since: float = 0.0  # [s] stamp since when `looking` is true

    def looking_for(self, now: float) -> float:
        """Seconds this person has been looking at the camera (0 when not looking)."""
        return max(0.0, now - self.looking_since) if self.looking else 0.0

    def age(self, now: float) -> float:
        """Seconds the current emotion has lasted."""
        return max(0.0, now - self.since)


@dataclass(frozen=True)
class EmotionChange:
    """A face's stable emotion changed (``previous`` is "" for a new face's first emotion)."""

    face_id: int
    previous: str
    emotion: str
    confidence: float
    stamp: float
    is_most_prominent: bool


class EmotionMemory:
    """Stable emotion per face id from a stream of (face_id, class probabilities) observations."""

    def __init__(self, min_confidence: float = 0.5, min_duration: float = 0.5, forget_after: float = 2.0,
                 on_change: Callable[[EmotionChange], None] | None = None) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        if min_duration < 0.0 or forget_after <= 0.0:
            raise ValueError("min_duration must be >= 0 and forget_after > 0")
        self.min_confidence = min_confidence
        self.min_duration = min_duration
        self.forget_after = forget_after
        self.on_change = on_change
        self.faces: dict[int, FaceEmotion] = {}

    def update(self, stamp: float, observations: Iterable[tuple[int, dict[str, float]]],
               box_areas: dict[int, float] | None = None,
               looking: dict[int, bool] | None = None) -> list[EmotionChange]:
        """Add one frame's faces (``face_id``, ``{class: probability}``) and optionally their box
        areas [px^2] and whether they look at the camera; returns (and calls back) the changes of
        stable emotion."""
        changes: list[EmotionChange] = []
        box_areas = box_areas or {}
        looking = looking or {}
        for face_id, probs in observations:
            top = max(probs, key=probs.get) if probs else ""
            conf = float(probs.get(top, 0.0))
            face = self.faces.get(face_id)
            if face is None:
                face = FaceEmotion(face_id, "", 0.0, stamp, stamp, candidate=top, candidate_since=stamp)
                self.faces[face_id] = face
            face.last_seen = stamp
            face.probabilities = dict(probs)
            face.box_area = float(box_areas.get(face_id, face.box_area))
            if face_id in looking:
                if looking[face_id] and not face.looking:
                    face.looking_since = stamp
                face.looking = bool(looking[face_id])
            if top != face.candidate or conf < self.min_confidence:
                face.candidate, face.candidate_since = (top, stamp) if conf >= self.min_confidence else ("", stamp)
            if (face.candidate and face.candidate != face.emotion
                    and stamp - face.candidate_since >= self.min_duration):
                changes.append(EmotionChange(face_id, face.emotion, face.candidate, conf, stamp, False))
                face.emotion, face.since = face.candidate, stamp
            face.confidence = float(probs.get(face.emotion, 0.0)) if face.emotion else 0.0
        self.forget(stamp)
        prominent = self.most_prominent(stamp)
        changes = [EmotionChange(c.face_id, c.previous, c.emotion, c.confidence, c.stamp,
                                 prominent is not None and c.face_id == prominent.face_id) for c in changes]
        if self.on_change is not None:
            for change in changes:
                self.on_change(change)
        return changes

    def forget(self, now: float) -> None:
        """Drop faces not seen for ``forget_after`` seconds."""
        for face_id in [k for k, f in self.faces.items() if now - f.last_seen > self.forget_after]:
            del self.faces[face_id]

    def get(self, face_id: int) -> FaceEmotion | None:
        return self.faces.get(face_id)

    def looking_at_me(self, now: float, min_duration: float = 0.0) -> list[FaceEmotion]:
        """Faces of the latest frame that have looked at the camera for at least ``min_duration``
        seconds, longest first: "who is looking at me, since when"."""
        if not self.faces:
            return []
        latest = max(f.last_seen for f in self.faces.values())
        found = [f for f in self.faces.values() if f.last_seen >= latest and f.looking
                 and f.looking_for(now) >= min_duration]
        return sorted(found, key=lambda f: f.looking_since)

    def most_prominent(self, now: float) -> FaceEmotion | None:
        """The largest face seen in the latest frame (the person closest to the robot), if any."""
        if not self.faces:
            return None
        latest = max(f.last_seen for f in self.faces.values())
        current = [f for f in self.faces.values() if f.last_seen >= latest and now - f.last_seen <= self.forget_after]
        return max(current, key=lambda f: (f.box_area, -f.face_id), default=None)


def _stamp_seconds(header: Header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class EmotionListener:
    """Subscribes a node to ``emotions`` (and ``landmarks`` for box sizes) and keeps an EmotionMemory.

    Landmarks of a frame usually arrive just before its emotions (the node publishes them first);
    box areas are applied by face id, so a missing landmarks message only affects prominence.
    """

    def __init__(self, node: Node, emotions_topic: str = "emotions", landmarks_topic: str = "landmarks",
                 on_change: Callable[[EmotionChange], None] | None = None, **memory_kwargs: Any) -> None:
        from emodan_ros.msg import EmotionStateArray, FaceLandmarksArray

        self.node = node
        self.memory = EmotionMemory(on_change=on_change, **memory_kwargs)
        self._areas: dict[int, float] = {}
        self._looking: dict[int, bool] = {}
        self._emotions_sub = node.create_subscription(EmotionStateArray, emotions_topic, self._on_emotions, 10)
        self._landmarks_sub = node.create_subscription(FaceLandmarksArray, landmarks_topic, self._on_landmarks, 10)

    def now(self) -> float:
        """The node's clock in seconds (sim time when use_sim_time is set), comparable with stamps."""
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _on_landmarks(self, msg: FaceLandmarksArray) -> None:
        self._areas = {f.face_id: float(f.box_width * f.box_height) for f in msg.faces}
        self._looking = {f.face_id: bool(f.looking_at_camera) for f in msg.faces if f.has_head_pose}

    def _on_emotions(self, msg: EmotionStateArray) -> None:
        observations = [(s.face_id, dict(zip(s.class_names, (float(p) for p in s.probabilities))))
                        for s in msg.states]
        self.memory.update(_stamp_seconds(msg.header), observations, self._areas, self._looking)


REACTIONS = {"happiness": "The person in front of me looks happy: smile back.",
             "sadness": "The person in front of me looks sad: ask if everything is all right."}
GREETING = "Someone looks at me and smiles: greet them."


def reaction(change: EmotionChange, face: FaceEmotion | None) -> str | None:
    """The example's rule: greet whoever looks at the robot and smiles; else react to the most
    prominent face turning happy or sad."""
    if change.emotion == "happiness" and face is not None and face.looking:
        return GREETING
    return REACTIONS.get(change.emotion) if change.is_most_prominent else None


def main(args: list[str] | None = None) -> None:
    """``behavior_example``: log and publish (std_msgs/String on ``reaction``) when someone who looks at
    the robot smiles, or the most prominent face becomes happy or sad."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from std_msgs.msg import String

    from emodan_ros.ros.runtime import spin_until, stop_on_signals

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_on_signals()
    node = rclpy.create_node("behavior_example")
    min_conf = node.declare_parameter("min_confidence", 0.5).value
    min_dur = node.declare_parameter("min_duration", 0.5).value
    pub = node.create_publisher(String, "reaction", 10)

    def react(change: EmotionChange) -> None:
        text = reaction(change, listener.memory.get(change.face_id))
        if text:
            node.get_logger().info(f"face {change.face_id}: {change.previous or 'unknown'} -> "
                                   f"{change.emotion} ({change.confidence:.2f}): {text}")
            pub.publish(String(data=text))

    listener = EmotionListener(node, on_change=react, min_confidence=min_conf, min_duration=min_dur)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        spin_until(executor, stop)
    except ExternalShutdownException:
        pass
    finally:
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
