"""Shared by the launch tests: a camera + listener in the test process, `ros2` CLI and `ros2 launch`
as subprocesses, and the checks that need the ROS 2 tools PyPI lacks (skip reasons)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import threading
import time
from typing import Any, Callable

import numpy as np
import pytest

MISSING = [m for m in ("launch", "launch_ros", "launch_pytest", "composition_interfaces")
           if importlib.util.find_spec(m) is None]
SKIP_REASON = (f"needs {', '.join(MISSING) or 'the ros2 CLI'} (not on PyPI): a full ROS 2 install, or `make setup` "
               "with ../shared/ros2-extra beside the repository")
HAVE_TOOLS = not MISSING and shutil.which("ros2") is not None
needs_launch = pytest.mark.skipif(not HAVE_TOOLS, reason=SKIP_REASON)


def face_frame(width: int = 640, height: int = 480) -> np.ndarray:
    """A BGR camera frame with the astronaut's face (skimage) in the middle, about 200 px high."""
    import cv2
    from skimage import data

    face = cv2.cvtColor(data.astronaut()[0:260, 120:340], cv2.COLOR_RGB2BGR)
    frame = np.full((height, width, 3), 110, np.uint8)
    y0, x0 = (height - face.shape[0]) // 2, (width - face.shape[1]) // 2
    frame[y0:y0 + face.shape[0], x0:x0 + face.shape[1]] = face
    return frame


def person_frame(face_px: int, width: int = 640, height: int = 480) -> np.ndarray:
    """A BGR frame with the whole astronaut photo scaled so that her face (landmark box) is
    ``face_px`` wide, in the middle: a person standing away from the camera (50 px: about 2 m with a
    60-degree 640x480 webcam)."""
    import cv2
    from skimage import data

    from emodan_ros.bench.range_frames import ASTRONAUT_BOX

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    scale = face_px / (ASTRONAUT_BOX[2] - ASTRONAUT_BOX[0])
    side = int(round(photo.shape[0] * scale))
    if side > min(width, height):
        raise ValueError(f"a {face_px} px face needs a frame larger than {width}x{height}")
    person = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 110, np.uint8)
    y0, x0 = (height - side) // 2, (width - side) // 2
    frame[y0:y0 + side, x0:x0 + side] = person
    return frame


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """True at the first check that holds, False once ``timeout`` has passed. Each check runs once:
    a condition that is a CLI call can hold and then, asked again, miss (a fresh discovery)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


class Camera:
    """A camera publisher on ``image_topic`` (sensor-data QoS, like a driver) and subscriptions to
    a node's outputs under ``out_ns``, spun in a thread of its own rclpy context."""

    def __init__(self, image_topic: str, out_ns: str, *, compressed: bool = False, extra: dict | None = None) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CompressedImage, Image

        from emodan_ros.msg import EmotionStateArray, FaceLandmarksArray
        from emodan_ros.ros.process import use_fastdds_profile

        use_fastdds_profile()
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"test_camera_{os.getpid()}", context=self.context)
        self.compressed = compressed
        self.topic = image_topic + "/compressed" if compressed else image_topic
        self.pub = self.node.create_publisher(CompressedImage if compressed else Image, self.topic,
                                              qos_profile_sensor_data)
        self.clock_pub = self.node.create_publisher(Clock, "/clock", 10)
        self.got: dict[str, list] = {"emotions": [], "landmarks": [], "diagnostics": []}
        self.lock = threading.Lock()
        base = out_ns.rstrip("/")
        subs = {"emotions": (EmotionStateArray, f"{base}/emotions"),
                "landmarks": (FaceLandmarksArray, f"{base}/landmarks"),
                "diagnostics": (DiagnosticArray, "/diagnostics"), **(extra or {})}
        self.out_topics = {k: v[1] for k, v in subs.items()}
        for kind, (cls, topic) in subs.items():
            self.got.setdefault(kind, [])
            self.node.create_subscription(cls, topic, self._keep(kind), 100)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _keep(self, kind: str) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            with self.lock:
                self.got[kind].append(msg)
        return callback

    def _spin(self) -> None:
        while not self.stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def wait_for_node(self, timeout: float = 120.0) -> bool:
        """True once the node subscribes to the camera and publishes emotions (then 0.5 s to settle)."""
        ok = wait_until(lambda: self.node.count_subscribers(self.topic) > 0
                        and self.node.count_publishers(self.out_topics["emotions"]) > 0, timeout)
        time.sleep(0.5)
        return ok

    def count(self, kind: str) -> int:
        with self.lock:
            return len(self.got[kind])

    def messages(self, kind: str) -> list:
        with self.lock:
            return list(self.got[kind])

    def stream(self, frame: np.ndarray, fps: float, seconds: float, sim_start_ns: int | None = None) -> list[int]:
        """Publish ``frame`` at ``fps`` for ``seconds``; with ``sim_start_ns`` also /clock (sim time
        advancing with the frames) and frames stamped on it. Returns the stamps sent."""
        from emodan_ros.io.image_codec import compress_image, encode_image
        from emodan_ros.io.messages import set_stamp
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CompressedImage, Image

        msg = compress_image(frame, "jpeg", CompressedImage) if self.compressed else encode_image(frame, "bgr8", Image)
        msg.header.frame_id = "camera"
        stamps, t0 = [], time.monotonic()
        for k in range(int(round(fps * seconds))):
            delay = t0 + k / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if sim_start_ns is not None:
                stamp = sim_start_ns + int(k * 1e9 / fps)
                clock = Clock()
                clock.clock.sec, clock.clock.nanosec = divmod(stamp, 10**9)
                self.clock_pub.publish(clock)
            else:
                stamp = time.time_ns()
            set_stamp(msg.header, stamp)
            self.pub.publish(msg)
            stamps.append(stamp)
        return stamps

    def close(self) -> None:
        import rclpy

        self.stop.set()
        self.thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def ros2(*args: str, timeout: float = 60.0, attempts: int = 6) -> subprocess.CompletedProcess:
    """One `ros2` CLI call (no daemon: nothing stays behind). Without a daemon each call discovers
    the graph anew; on a loaded machine it can miss the node, so discovery gets 2 s (the CLI's
    default is 0.5 s), and "not found" is retried with twice the time each try, up to 8 s."""
    spin = 2
    for _ in range(attempts):
        call = args
        if "--no-daemon" in args:
            at = args.index("--no-daemon") + 1
            call = (*args[:at], "--spin-time", str(spin), *args[at:])
        done = subprocess.run(["ros2", *call], capture_output=True, text=True, timeout=timeout)
        if "not found" not in (done.stdout + done.stderr).lower():
            break
        spin = min(2 * spin, 8)
        time.sleep(2.0)
    return done


class Launch:
    """`ros2 launch emodan_ros FILE ARGS` in its own process group, stopped with SIGINT as a user does."""

    def __init__(self, launch_file: str, *args: str) -> None:
        self.log: list[str] = []
        self.proc = subprocess.Popen(["ros2", "launch", "emodan_ros", launch_file, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=lambda: self.log.extend(self.proc.stdout), daemon=True).start()

    def text(self) -> str:
        return "".join(self.log)

    def descendants(self) -> list[Any]:
        import psutil

        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def interrupt(self, timeout: float = 30.0) -> int:
        """SIGINT to the launch's process group, as Ctrl-C in a terminal does; its exit code.

        (SIGINT to the `ros2 launch` process alone took about 40 s to end it here: the launch
        snapshot's signal handling waits; a terminal never sends it that way.)"""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise

    def kill(self) -> None:
        """Clean-up after a failed test: the whole group, so nothing is left on the machine."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
