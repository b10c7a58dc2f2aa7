"""A camera in front of an emotion_node over real DDS: the one harness of the demo, the node bench
and live bag evaluation.

It starts the node as its own process (or uses one that runs), waits until the camera topic and
the output topics are matched, publishes frames (stamped with the send time unless told
otherwise), records every output with its receive time, and drains at the end. Both processes use
the package's Fast DDS profile, without which camera-size frames are lost over best effort.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Sequence

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from emodan_ros.io.image_codec import decode_image, encode_image
from emodan_ros.io.messages import DecodedFace, decode_faces, set_stamp, stamp_ns
from emodan_ros.msg import EmotionStateArray, FaceLandmarksArray
from emodan_ros.ros.bag_bridge import to_rclpy
from emodan_ros.ros.process import NodeProcess, use_fastdds_profile

OutputMessage = EmotionStateArray | FaceLandmarksArray | Image


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


class LiveCamera:
    """Publishes images into ``namespace``/image and records ``emotions``, ``landmarks`` (and
    optionally ``debug_image``) as ``(kind, receive ns, message)``."""

    def __init__(self, namespace: str, *, node_params: dict[str, Any] | None = None,
                 node_args: Sequence[str] = (), start_node: bool = True, compressed: bool = False,
                 debug_image: bool = False, startup_timeout: float = 120.0) -> None:
        self.namespace = namespace
        base = namespace.rstrip("/")
        self.image_topic = f"{base}/image/compressed" if compressed else f"{base}/image"
        self.emotions_topic, self.landmarks_topic = f"{base}/emotions", f"{base}/landmarks"
        self.msg_cls = CompressedImage if compressed else Image
        self.received: list[tuple[str, int, OutputMessage]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sent: set[int] = set()
        use_fastdds_profile()  # before this process's participant exists
        self.node_proc = NodeProcess(namespace, dict(node_params or {}), list(node_args)) if start_node else None
        self._context = Context()
        rclpy.init(context=self._context)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._node = rclpy.create_node(f"emodan_camera_{os.getpid()}", context=self._context)
        self._executor.add_node(self._node)
        self._publisher = self._node.create_publisher(self.msg_cls, self.image_topic, QoSProfile(
            depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
            durability=qos_profile_sensor_data.durability))
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self._node.create_subscription(EmotionStateArray, self.emotions_topic, self._keep("emotions"), reliable)
        self._node.create_subscription(FaceLandmarksArray, self.landmarks_topic, self._keep("landmarks"), reliable)
        if debug_image:
            self._node.create_subscription(Image, f"{base}/debug_image", self._keep("debug"),
                                           qos_profile_sensor_data)
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()
        try:
            self._wait_for_node(startup_timeout)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------ plumbing
    def _keep(self, kind: str) -> Callable[[OutputMessage], None]:
        def callback(msg: OutputMessage) -> None:
            with self._lock:
                self.received.append((kind, time.time_ns(), msg))
        return callback

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._executor.spin_once(timeout_sec=0.05)

    def _wait_for_node(self, timeout: float) -> None:
        proc = self.node_proc

        def ready() -> bool:
            if proc is not None and proc.exited():
                return True
            return (self._node.count_subscribers(self.image_topic) > 0
                    and self._node.count_publishers(self.emotions_topic) > 0)

        ok = _wait_until(ready, timeout)
        if proc is not None and proc.exited():
            time.sleep(0.2)
            raise RuntimeError(f"emotion_node exited with code {proc.process.returncode}:\n{proc.log_tail()}")
        if not ok:
            raise RuntimeError(f"no emotion_node subscribed to {self.image_topic} within {timeout:.0f} s")
        time.sleep(0.5)  # matched; let the data path settle

    def __enter__(self) -> LiveCamera:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self, log_to: Path | None = None) -> None:
        """Stop spinning, leave the graph, stop the node started here (its log into ``log_to``)."""
        self._stop.set()
        self._spinner.join(timeout=5)
        self._executor.shutdown()
        self._node.destroy_node()
        rclpy.try_shutdown(context=self._context)
        if self.node_proc is not None:
            self.node_proc.stop()
            if log_to is not None:
                time.sleep(0.2)
                log_to.write_text("".join(self.node_proc.log))

    # ------------------------------------------------------------------------------ frames
    def image_message(self, frame_bgr: np.ndarray, frame_id: str = "camera") -> Image:
        """An rclpy Image of a BGR frame (raw transport)."""
        msg = encode_image(frame_bgr, "bgr8", Image)
        msg.header.frame_id = frame_id
        return msg

    def publish(self, msg: Any, stamp: int | None = None) -> int:
        """Publish one frame (an rclpy or rosbags image message); stamp it ``stamp`` ns, default the
        send time made unique. Returns the stamp."""
        out = to_rclpy(msg, self.msg_cls)
        if stamp is None:
            stamp = time.time_ns()
            while stamp in self._sent:
                stamp += 1
        self._sent.add(stamp)
        set_stamp(out.header, stamp)
        self._publisher.publish(out)
        return stamp

    def answered(self) -> int:
        """Emotion outputs received so far."""
        with self._lock:
            return sum(1 for kind, _, _ in self.received if kind == "emotions")

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
        self._sent.clear()

    def warm_up(self, msg: Any, frames: int, timeout: float = 30.0) -> None:
        """Send ``frames`` frames one at a time, each awaited, then forget them: the model's start-up
        (first inference) is not the node's speed."""
        for k in range(frames):
            self.publish(msg)
            _wait_until(lambda: self.answered() >= k + 1, timeout)
        time.sleep(0.3)
        self.clear()

    def play(self, msgs: Sequence[Any], due_s: Sequence[float],
             each: Callable[[int, int], None] | None = None) -> list[int]:
        """Publish ``msgs[i]`` at ``due_s[i]`` seconds after the start; ``each(i, stamp)`` after each
        send (progress, sampling). Returns the stamps sent."""
        stamps = []
        t0 = time.monotonic()
        for index, (msg, due) in enumerate(zip(msgs, due_s)):
            delay = t0 + due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamps.append(self.publish(msg))
            if each is not None:
                each(index, stamps[-1])
        return stamps

    def wait_for(self, stamp: int, timeout: float) -> bool:
        """Wait until the emotions output of ``stamp`` arrived."""
        return _wait_until(lambda: stamp in self.outputs(), timeout)

    def drain(self, expected: int, quiet_s: float) -> None:
        """Wait until ``expected`` outputs arrived, or none arrived for ``quiet_s`` seconds."""
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() - last_change < quiet_s:
            answered = self.answered()
            if answered >= expected:
                return
            if answered != last_count:
                last_count, last_change = answered, time.monotonic()
            time.sleep(0.05)

    # ------------------------------------------------------------------------------ results
    def outputs(self, kind: str = "emotions") -> dict[int, tuple[int, OutputMessage]]:
        """{header stamp: (receive ns, message)} of one output kind."""
        with self._lock:
            return {stamp_ns(m.header): (r, m) for k, r, m in self.received if k == kind}

    def faces(self, stamp: int) -> tuple[list[DecodedFace], tuple[str, ...]] | None:
        """The faces the node reported for the frame stamped ``stamp`` (None: no answer yet)."""
        emotions = self.outputs("emotions").get(stamp)
        if emotions is None:
            return None
        landmarks = self.outputs("landmarks").get(stamp)
        return decode_faces(emotions[1], landmarks[1] if landmarks else None)

    def debug_frames(self) -> dict[int, np.ndarray]:
        """{stamp: annotated BGR frame} of the node's debug_image output."""
        return {stamp: decode_image(msg) for stamp, (_, msg) in self.outputs("debug").items()}
