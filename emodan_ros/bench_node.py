"""End-to-end speed of emotion_node over DDS: `python -m emodan_ros.bench_node --faces 1 --fps 15`.

Starts the node as its own process (as on a robot), plays a camera: 640x480 bgr8 frames with 1 or
4 faces (cut from skimage.data.astronaut()) at a fixed rate, stamped with the send time, over the
sensor-data QoS with the package's Fast DDS profile in both processes. Measures:
- latency: image stamp -> EmotionStateArray received (p50/p90/p99/max, first vs last third to
  show queue growth: a growing queue shows as a rising latency),
- throughput: results per second, and the share of frames the node dropped (newest-frame-only),
- the node process's CPU (% of one core) and resident memory, sampled every second.
Without --model the node runs an untrained model of the default size (`allow_random_model`):
the speed is the same as a trained one of that size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emodan_ros.node_process import NodeProcess

FRAME_W, FRAME_H = 640, 480


def make_frame(faces: int) -> np.ndarray:
    """A 640x480 BGR frame: 1 face (about 120 px wide), or 2, 4 or 8 heads on a grid."""
    from skimage import data

    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    frame = np.full((FRAME_H, FRAME_W, 3), 100, np.uint8)
    if faces == 1:
        scaled = cv2.resize(astronaut, (FRAME_H, FRAME_H), interpolation=cv2.INTER_AREA)
        frame[:, 80:80 + FRAME_H] = scaled
        return frame
    grids = {2: (1, 2), 4: (2, 2), 8: (2, 4)}
    if faces not in grids:
        raise ValueError(f"faces must be one of 1, {', '.join(map(str, grids))}")
    rows, cols = grids[faces]
    cell_h, cell_w = FRAME_H // rows, FRAME_W // cols
    height = min(cell_h, cell_w * 230 // 210) - 10
    head = cv2.resize(astronaut[20:250, 115:325], (height * 210 // 230, height), interpolation=cv2.INTER_AREA)
    for row in range(rows):
        for col in range(cols):
            y = row * cell_h + (cell_h - head.shape[0]) // 2
            x = col * cell_w + (cell_w - head.shape[1]) // 2
            frame[y:y + head.shape[0], x:x + head.shape[1]] = head
    return frame


def _proc_sample(pid: int) -> tuple[float, float]:
    """(CPU seconds used so far, resident MiB) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
    return cpu, rss


def run(faces: int, fps: float, duration: float, model: str, device: str, extra: list[str]) -> dict[str, Any]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from emodan_ros.image_codec import encode_image
    from emodan_ros.msg import EmotionStateArray

    ns = f"/bench{os.getpid()}"
    params: dict[str, Any] = {"device": device, "allow_random_model": True}
    if model:
        params["model_path"] = Path(model).resolve()
    node_proc = NodeProcess(ns, params, extra)

    rclpy.init()
    node = rclpy.create_node("bench_camera", namespace=ns)
    pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
    latencies: list[tuple[float, float]] = []  # (send time, latency s)
    face_counts: list[int] = []

    def on_result(msg: Any) -> None:
        now = time.time()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        latencies.append((stamp, now - stamp))
        face_counts.append(len(msg.states))

    node.create_subscription(EmotionStateArray, "emotions", on_result, 50)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (pub.get_subscription_count() and node.count_publishers(f"{ns}/emotions")):
            if node_proc.exited():
                raise RuntimeError("node exited:\n" + node_proc.log_tail())
            executor.spin_once(timeout_sec=0.1)
        frame = make_frame(faces)
        template = encode_image(frame, "bgr8", Image)
        # warm-up: let the first (slow) frames through before measuring
        warm_end = time.monotonic() + 3.0
        while time.monotonic() < warm_end:
            _publish(pub, template)
            _spin_for(executor, 1.0 / fps)
        latencies.clear()
        face_counts.clear()
        cpu0, rss0 = _proc_sample(node_proc.pid)
        samples = [(time.monotonic(), cpu0, rss0)]
        sent = 0
        start = time.monotonic()
        next_sample = start + 1.0
        while (now := time.monotonic()) < start + duration:
            _publish(pub, template)
            sent += 1
            if now >= next_sample:
                cpu, rss = _proc_sample(node_proc.pid)
                samples.append((now, cpu, rss))
                next_sample += 1.0
            _spin_for(executor, start + sent / fps - time.monotonic())
        _spin_for(executor, 1.0)
        elapsed = time.monotonic() - start
    finally:
        node_proc.stop()
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    lat = np.array([x[1] for x in latencies]) * 1000.0
    third = max(len(lat) // 3, 1)
    cpu_pct = 100.0 * (samples[-1][1] - samples[0][1]) / max(samples[-1][0] - samples[0][0], 1e-6)
    rss = [s[2] for s in samples]
    return {
        "faces_in_frame": faces, "fps_in": fps, "duration_s": round(elapsed, 1), "sent": sent,
        "results": len(lat), "processed_share": round(len(lat) / max(sent, 1), 3),
        "throughput_hz": round(len(lat) / elapsed, 2),
        "faces_found_mean": round(float(np.mean(face_counts)), 2) if face_counts else 0.0,
        "latency_ms": {k: round(float(np.percentile(lat, q)), 1) if len(lat) else None
                       for k, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "latency_p50_first_third_ms": round(float(np.median(lat[:third])), 1) if len(lat) else None,
        "latency_p50_last_third_ms": round(float(np.median(lat[-third:])), 1) if len(lat) else None,
        "node_cpu_percent_of_one_core": round(cpu_pct, 1),
        "node_rss_mib": {"start": round(rss[0], 1), "end": round(rss[-1], 1), "max": round(max(rss), 1)},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "node_log_tail": "".join(node_proc.log[-3:]).strip(),
    }


def _publish(pub: Any, template: Any) -> None:
    now = time.time_ns()
    template.header.stamp.sec, template.header.stamp.nanosec = divmod(now, 1_000_000_000)
    pub.publish(template)


def _spin_for(executor: Any, seconds: float) -> None:
    end = time.monotonic() + max(seconds, 0.0)
    while True:
        executor.spin_once(timeout_sec=max(end - time.monotonic(), 0.0))
        if time.monotonic() >= end:
            return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=1, choices=(1, 2, 4, 8))
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds (after 3 s warm-up)")
    parser.add_argument("--model", default="", help="checkpoint; default: the package model, else untrained")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--node-arg", action="append", default=[],
                        help="extra node --ros-args item, e.g. --node-arg=-p --node-arg=redetect_every:=10")
    args = parser.parse_args(argv)
    result = run(args.faces, args.fps, args.duration, args.model, args.device, args.node_arg)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
