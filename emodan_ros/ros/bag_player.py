"""`bag_player`: play a rosbag2 bag into a live ROS 2 graph without rosbag2.

`ros2 bag play` is C++ and exists only in a full ROS 2 install; this player needs rclpy and the
pure-Python `rosbags` (mcap and sqlite3). Every topic (or a ``--topics`` subset) is published with
its recorded type and the QoS its recorder saw offered (metadata.yaml; when none was stored: the
sensor-data profile for images, reliable/volatile depth 10 otherwise), messages go out as the
recorded CDR bytes (no decode/re-encode, so any type whose Python package is installed plays), and
``/clock`` carries the bag time so nodes with ``use_sim_time`` run on the recording's clock.

    ros2 run emodan_ros bag_player BAG [--rate 2] [--loop] [--start-offset 5] [--topics /a /b]
    emodan bag play BAG ...
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from emodan_ros.bags.play_args import add_play_args

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass
class PlayStats:
    """What one play run did (for the summary line and tests)."""

    published: int = 0
    loops: int = 0
    wall_s: float = 0.0
    bag_s: float = 0.0
    interrupted: bool = False

    @property
    def rate_hz(self) -> float:
        return self.published / self.wall_s if self.wall_s > 0 else 0.0


def qos_for(msgtype: str, offered: Sequence[Any]) -> Any:
    """The QoS to publish a topic with: adapted to the recorded offers like `ros2 bag play` does
    (reliable / transient-local only when every recorded publisher offered it), else a default."""
    from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                           qos_profile_sensor_data)

    known = [q for q in offered if getattr(q.reliability, "name", "") in ("RELIABLE", "BEST_EFFORT")]
    if not known:
        if msgtype in IMAGE_TYPES:
            return qos_profile_sensor_data
        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    reliable = all(q.reliability.name == "RELIABLE" for q in known)
    latched = all(getattr(q.durability, "name", "") == "TRANSIENT_LOCAL" for q in known)
    depth = max([int(q.depth) for q in known if int(q.depth) > 0] or [10])
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class BagPlayer:
    """Publishers for a bag's topics on one rclpy node; :meth:`play` replays it on bag time."""

    def __init__(self, bag: str, topics: Sequence[str] | None = None, *, clock_hz: float = 40.0,
                 context: Any = None, log: Any = None) -> None:
        import rclpy
        from rosgraph_msgs.msg import Clock

        from emodan_ros.io.bag_io import BagError, bag_info
        from emodan_ros.ros.bag_bridge import rclpy_class

        self.info = bag_info(bag)
        self.log = log or (lambda text: print(f"[bag_player] {text}", file=sys.stderr, flush=True))
        missing = sorted(set(topics or ()) - set(self.info.topics))
        if missing:
            raise BagError(f"bag {bag} has no topic(s) {missing}; it has {sorted(self.info.topics)}")
        wanted = [self.info.topics[t] for t in (topics or sorted(self.info.topics))]
        self.node = rclpy.create_node("emodan_bag_player", context=context)
        self.publishers: dict[str, Any] = {}
        for topic in wanted:
            try:
                cls = rclpy_class(topic.msgtype)
            except TypeError as exc:
                self.log(f"skipping {topic.name}: {exc} (build or install the package that defines it)")
                continue
            self.publishers[topic.name] = self.node.create_publisher(
                cls, topic.name, qos_for(topic.msgtype, topic.offered_qos))
        if not self.publishers:
            raise BagError(f"bag {bag}: none of its topics has a message type installed here")
        self.clock_hz = clock_hz
        self._clock_cls = Clock
        self._clock_pub = self.node.create_publisher(Clock, "/clock", 10) if clock_hz > 0 else None
        self.stop = threading.Event()

    @property
    def total(self) -> int:
        """Messages per pass over the played topics."""
        return sum(self.info.topics[t].count for t in self.publishers)

    def publish_clock(self, bag_ns: int) -> None:
        if self._clock_pub is not None:
            msg = self._clock_cls()
            msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
            self._clock_pub.publish(msg)

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        """True once some played topic has a subscriber (then 0.5 s for the reverse discovery)."""
        deadline = time.monotonic() + timeout_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            if any(pub.get_subscription_count() > 0 for pub in self.publishers.values()):
                self.stop.wait(0.5)
                return True
            self.stop.wait(0.05)
        return False

    def _sleep_until(self, wall_due: float, bag_at: Any) -> None:
        """Sleep until ``wall_due`` (monotonic), publishing /clock at clock_hz meanwhile."""
        period = 1.0 / self.clock_hz if self.clock_hz > 0 else None
        while not self.stop.is_set():
            left = wall_due - time.monotonic()
            if left <= 0:
                return
            if period is None or left <= period:
                self.stop.wait(left)
                return
            self.stop.wait(period)
            self.publish_clock(bag_at(time.monotonic()))

    def _messages(self, start_ns: int) -> Iterator[tuple[str, int, bytes]]:
        from emodan_ros.io.bag_io import read_raw

        return read_raw(self.info.path, list(self.publishers), start_ns=start_ns)

    def play(self, rate: float = 1.0, loop: bool = False, start_offset: float = 0.0,
             progress: bool = True) -> PlayStats:
        """Publish the bag (again and again with ``loop``) at ``rate`` times its speed; returns stats.
        Raises BagError when the storage breaks midway (what was before the damage was played)."""
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if start_offset < 0:
            raise ValueError(f"start offset must be >= 0, got {start_offset}")
        stats = PlayStats()
        begin = self.info.start_ns + int(start_offset * 1e9)
        t_start = time.monotonic()
        bar = _progress(self.total if not loop else None, progress)
        try:
            while not self.stop.is_set():
                wall0: float | None = None
                for topic, stamp, raw in self._messages(begin):
                    if self.stop.is_set():
                        break
                    if wall0 is None:
                        wall0 = time.monotonic()
                    due = wall0 + (stamp - begin) / 1e9 / rate

                    def bag_at(now: float, w0: float = wall0) -> int:
                        return begin + int((now - w0) * rate * 1e9)

                    self._sleep_until(due, bag_at)
                    if self.stop.is_set():
                        break
                    self.publish_clock(stamp)
                    self.publishers[topic].publish(raw)
                    stats.published += 1
                    stats.bag_s = max(stats.bag_s, (stamp - begin) / 1e9)
                    bar.update(1)
                stats.loops += 1
                if not loop or wall0 is None:
                    break
        finally:
            bar.close()
            stats.wall_s = time.monotonic() - t_start
            stats.interrupted = self.stop.is_set()
        return stats

    def close(self) -> None:
        self.node.destroy_node()


def _progress(total: int | None, enabled: bool) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency; keep playing without a bar if it is missing
        enabled = False
    if not enabled:
        class _Quiet:
            def update(self, n: int) -> None: ...
            def close(self) -> None: ...
        return _Quiet()
    return tqdm(total=total, unit="msg", desc="bag_player", mininterval=1.0, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Play as the options say; 0 when done or interrupted, 1 with one error line otherwise."""
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    from emodan_ros.io.bag_io import BagError
    from emodan_ros.ros.process import use_fastdds_profile

    use_fastdds_profile()  # before the participant: camera-size frames over best effort need it
    context = Context()
    rclpy.init(args=getattr(args, "ros_args", None), context=context,
               signal_handler_options=SignalHandlerOptions.NO)
    player = None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        player = BagPlayer(args.bag, args.topics, clock_hz=args.clock, context=context)
        for sig in previous:
            signal.signal(sig, lambda *_: player.stop.set())
        topics = ", ".join(f"{t} ({player.info.topics[t].msgtype})" for t in player.publishers)
        player.log(f"playing {args.bag}: {player.total} messages, "
                   f"{(player.info.end_ns - player.info.start_ns) / 1e9:.1f} s at rate {args.rate:g}; {topics}")
        if args.wait_for_subscriber > 0 and not player.wait_for_subscriber(args.wait_for_subscriber):
            player.log(f"no subscriber after {args.wait_for_subscriber:g} s; playing anyway")
        if args.delay > 0:
            player.stop.wait(args.delay)
        bar = not args.no_progress and sys.stderr.isatty()  # a bar in a log file is noise: start/done lines say it
        stats = player.play(args.rate, args.loop, args.start_offset, progress=bar)
        player.log(f"{'interrupted' if stats.interrupted else 'done'}: {stats.published} messages in "
                   f"{stats.wall_s:.2f} s ({stats.rate_hz:.0f} msg/s, {stats.loops} pass(es))")
        return 0
    except (BagError, ValueError) as exc:
        print(f"bag_player: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if player is not None:
            player.close()
        rclpy.try_shutdown(context=context)


def main(argv: Sequence[str] | None = None) -> int:
    from rclpy.utilities import remove_ros_args

    parser = argparse.ArgumentParser(prog="bag_player", description=__doc__.split("\n\n")[0])
    add_play_args(parser)
    raw = ["bag_player", *(sys.argv[1:] if argv is None else argv)]
    args = parser.parse_args(remove_ros_args(raw)[1:])
    args.ros_args = raw  # remappings and parameters (`ros2 run ... --ros-args -r __ns:=/x`)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
