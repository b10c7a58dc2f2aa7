"""bag_player: every recorded topic comes out with its type, bag timing, /clock, rate, offset, loop,
the recorded QoS, and one clear error line for a bag it cannot play; plus the bag format itself
(metadata version 8 with QoS as a YAML string, which Humble's `ros2 bag` parses)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import needs_ros, spin_until

START = 1_700_000_000.0


def _bag(path: Path, frames: int = 20, rate: float = 10.0, storage: str = "mcap") -> Path:
    """A camera-like bag (64x48 bgr8 frames at ``rate``, plus ground truth) made by `emodan bag make`."""
    import cv2

    from emodan_ros.bags.make import make_bag

    data = path.parent / f"{path.name}_data" / "happy"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(frames):
        cv2.imwrite(str(data / f"{i:03d}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    make_bag(str(data.parent), "imagefolder", str(path), storage=storage, rate=rate, start=START)
    return path


def test_bag_metadata_is_version_8_with_qos_as_a_string(tmp_path: Path) -> None:
    """Humble reads `offered_qos_profiles` as a string (version 9's list fails there with "bad
    conversion"); Jazzy and Kilted read 8 too."""
    from emodan_ros.io.bag_io import BagWriter, typestore

    with BagWriter(tmp_path / "b", "sqlite3") as bag:
        bag.write("/t", typestore().types["std_msgs/msg/String"](data="x"), 1)
    info = yaml.safe_load((tmp_path / "b" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8
    for topic in info["topics_with_message_count"]:
        assert isinstance(topic["topic_metadata"]["offered_qos_profiles"], str)


@needs_ros
def test_qos_follows_the_recorded_offers_and_falls_back_by_type() -> None:
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    from emodan_ros.ros.bag_player import qos_for

    def offer(reliability: QosReliability, durability: QosDurability, depth: int = 7) -> Qos:
        zero = QosTime(0, 0)
        return Qos(QosHistory.KEEP_LAST, depth, reliability, durability, zero, zero, QosLiveliness.AUTOMATIC,
                   zero, False)

    latched = qos_for("std_msgs/msg/String", [offer(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL)])
    assert latched.reliability == ReliabilityPolicy.RELIABLE and latched.durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert latched.depth == 7
    mixed = qos_for("std_msgs/msg/String", [offer(QosReliability.RELIABLE, QosDurability.VOLATILE),
                                            offer(QosReliability.BEST_EFFORT, QosDurability.VOLATILE)])
    assert mixed.reliability == ReliabilityPolicy.BEST_EFFORT  # reaches both kinds of subscriber
    assert qos_for("sensor_msgs/msg/Image", []).reliability == ReliabilityPolicy.BEST_EFFORT
    plain = qos_for("std_msgs/msg/String", [])
    assert (plain.reliability, plain.durability, plain.depth) == (ReliabilityPolicy.RELIABLE,
                                                                  DurabilityPolicy.VOLATILE, 10)


class _Listener:
    """Subscriptions to a played bag's topics and /clock in one process (reliable where possible)."""

    def __init__(self, make_node, topics: dict[str, str]) -> None:
        from rclpy.qos import qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock

        from emodan_ros.ros.bag_bridge import rclpy_class

        self.node = make_node("bag_listener")
        self.got: dict[str, list] = {t: [] for t in topics}
        self.clock: list[int] = []
        for topic, msgtype in topics.items():
            qos = qos_profile_sensor_data if msgtype.startswith("sensor_msgs") else 10
            self.node.create_subscription(rclpy_class(msgtype), topic, self.got[topic].append, qos)
        self.node.create_subscription(
            Clock, "/clock", lambda m: self.clock.append(m.clock.sec * 10**9 + m.clock.nanosec), 10)


def _play(rclpy_context, listener: _Listener, bag: Path, expect: int, timeout: float = 20.0, **kwargs):
    """Play ``bag`` in a thread (after the listener is matched) while spinning the listener."""
    from emodan_ros.ros.bag_player import BagPlayer

    player = BagPlayer(str(bag), kwargs.pop("topics", None), context=rclpy_context, log=lambda _: None)
    result: dict = {}
    try:
        assert player.wait_for_subscriber(10.0)
        thread = threading.Thread(target=lambda: result.update(stats=player.play(progress=False, **kwargs)))
        thread.start()
        spin_until([listener.node], lambda: not thread.is_alive() and
                   sum(map(len, listener.got.values())) >= expect, timeout)
        player.stop.set()
        thread.join(10)
        spin_until([listener.node], lambda: False, 0.3)  # late arrivals
    finally:
        player.close()
    return result["stats"]


@needs_ros
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_every_topic_is_played_with_its_type_and_timing_and_the_bag_clock(
        tmp_path: Path, make_node, rclpy_context, storage: str) -> None:
    from emodan_ros.io.bag_io import bag_info, read_raw
    from emodan_ros.io.messages import stamp_ns

    bag = _bag(tmp_path / "b", frames=20, rate=10.0, storage=storage)
    topics = {t: i.msgtype for t, i in bag_info(bag).topics.items()}
    listener = _Listener(make_node, topics)
    t0 = time.monotonic()
    stats = _play(rclpy_context, listener, bag, expect=40, rate=2.0)
    wall = time.monotonic() - t0
    assert stats.published == 40 and not stats.interrupted
    assert 0.85 <= stats.wall_s and wall < 15  # 1.9 s of bag at rate 2: about 0.95 s
    recorded = [stamp for topic, stamp, _ in read_raw(bag, ["/camera/image_raw"])]
    images = listener.got["/camera/image_raw"]
    assert [stamp_ns(m.header) for m in images] == recorded  # all, in order, recorded content
    assert (images[0].width, images[0].height, images[0].encoding) == (64, 48, "bgr8")
    assert len(listener.got["/ground_truth/emotions"]) == 20
    assert listener.got["/ground_truth/emotions"][0].states[0].emotion == "happiness"
    clock = listener.clock
    assert clock and clock == sorted(clock)
    assert recorded[0] <= clock[0] and clock[-1] == recorded[-1]


@needs_ros
def test_topics_subset_start_offset_and_loop(tmp_path: Path, make_node, rclpy_context) -> None:
    bag = _bag(tmp_path / "b", frames=10, rate=20.0)
    listener = _Listener(make_node, {"/camera/image_raw": "sensor_msgs/msg/Image",
                                     "/ground_truth/emotions": "emodan_ros/msg/EmotionStateArray"})
    # 10 frames 50 ms apart; offset 0.2 s skips the first 4; two passes give 12; truths not played
    stats = _play(rclpy_context, listener, bag, expect=12, topics=["/camera/image_raw"], rate=4.0,
                  start_offset=0.2, loop=True)
    assert stats.loops >= 2
    assert listener.got["/ground_truth/emotions"] == []
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in listener.got["/camera/image_raw"]]
    first = int(START * 1e9) + 4 * 50_000_000
    assert stamps[:6] == [first + k * 50_000_000 for k in range(6)]
    assert stamps[6:12] == stamps[:6]  # the second pass starts at the offset again


def _run_player(*args: str) -> subprocess.CompletedProcess:
    """The installed executable, as `ros2 run emodan_ros bag_player ...` starts it."""
    from ament_index_python.packages import get_package_prefix

    exe = Path(get_package_prefix("emodan_ros")) / "lib" / "emodan_ros" / "bag_player"
    return subprocess.run([sys.executable, str(exe), *args], capture_output=True, text=True, timeout=60, cwd="/")


@needs_ros
def test_missing_or_broken_bag_is_one_error_line_and_exit_1(tmp_path: Path) -> None:
    missing = _run_player(str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"bag_player: error: bag {tmp_path / 'nope'} does not exist"
    bag = _bag(tmp_path / "b", frames=3)
    (bag / "b.mcap").write_bytes(b"\x89MCAP0\r\n garbage")
    broken = _run_player(str(bag))
    assert broken.returncode == 1
    lines = broken.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bag_player: error: ") and "b" in lines[0]
    assert "Traceback" not in broken.stderr
    unknown = _run_player(str(_bag(tmp_path / "c", frames=2)), "--topics", "/nope")
    assert unknown.returncode == 1 and "has no topic(s) ['/nope']" in unknown.stderr


@needs_ros
def test_emodan_bag_play_is_the_same_player(tmp_path: Path) -> None:
    bag = _bag(tmp_path / "b", frames=5, rate=50.0)
    out = subprocess.run([sys.executable, "-m", "emodan_ros", "bag", "play", str(bag), "--rate", "10",
                          "--no-progress"], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "done: 10 messages" in out.stderr
