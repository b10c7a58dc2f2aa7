"""Options of the bag player, shared by `ros2 run emodan_ros bag_player` and `emodan bag play`.

Here, not in emodan_ros.ros, so that building the `emodan` parser never imports rclpy.
"""

from __future__ import annotations

import argparse


def add_play_args(parser: argparse.ArgumentParser) -> None:
    """Options of `bag_player` and `emodan bag play` (one definition for both)."""
    parser.add_argument("bag", help="rosbag2 folder (mcap or sqlite3)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="play only these topics (default: all)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    parser.add_argument("--loop", action="store_true", help="start again at the end, until interrupted")
    parser.add_argument("--start-offset", type=float, default=0.0, metavar="S",
                        help="skip the first S seconds of the bag")
    parser.add_argument("--delay", type=float, default=0.0, metavar="S",
                        help="wait S seconds after the publishers exist (discovery) before playing")
    parser.add_argument("--wait-for-subscriber", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds until some played topic has a subscriber (e.g. the node "
                             "that should see the bag has started); 0: do not wait")
    parser.add_argument("--clock", type=float, default=40.0, metavar="HZ",
                        help="publish /clock (bag time) at this rate while waiting between messages, and "
                             "before every message; 0: no /clock")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
