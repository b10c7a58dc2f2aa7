"""The README's main job: `make demo` runs emotion_node on the built-in sample and shows what it sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from conftest import HAS_MSGS

pytestmark = pytest.mark.skipif(not HAS_MSGS, reason="needs rclpy and the colcon-built messages: `make test`")


def test_demo_prints_each_frame_and_writes_the_nodes_annotated_frames(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    # allow_random_model only matters on a checkout without the shipped model; with it the real model runs.
    result = subprocess.run([sys.executable, "-m", "emodan_ros.demo", "--frames", "4", "--fps", "4",
                             "--out", str(out), "--node-arg=-p", "--node-arg=allow_random_model:=true"],
                            cwd="/", capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("frame ")]
    assert len(lines) == 4
    assert sum("face " in line for line in lines) >= 3, result.stdout  # the astronaut is found
    images = sorted(out.glob("frame_*.png"))
    assert images and cv2.imread(str(images[0])).shape == (480, 640, 3)


def test_demo_on_an_unreadable_image_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    result = subprocess.run([sys.executable, "-m", "emodan_ros.demo", "--image", str(bad), "--out", str(tmp_path)],
                            cwd="/", capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "not a readable image" in result.stderr and "no frames to show" in result.stderr
