"""End-to-end speed of emotion_node over DDS: `python -m emodan_ros.bench.node --faces 1 --fps 15`.

Starts the node as its own process (as on a robot), plays a camera: 640x480 bgr8 frames with 1, 2,
4 or 8 faces (cut from skimage.data.astronaut()), or none (skimage's face-free coffee photo: what an
empty scene costs), at a fixed rate, stamped with the send time, over the
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
from tqdm import tqdm

from emodan_ros.model.device import DEVICES

FRAME_W, FRAME_H = 640, 480


def make_frame(faces: int) -> np.ndarray:
    """A 640x480 BGR frame: no face (a photo of a cup), 1 face (about 120 px wide), or 2, 4 or 8 heads on a grid."""
    from skimage import data

    if faces == 0:
        return cv2.resize(cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR), (FRAME_W, FRAME_H),
                          interpolation=cv2.INTER_AREA)
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    frame = np.full((FRAME_H, FRAME_W, 3), 100, np.uint8)
    if faces == 1:
        scaled = cv2.resize(astronaut, (FRAME_H, FRAME_H), interpolation=cv2.INTER_AREA)
        frame[:, 80:80 + FRAME_H] = scaled
        return frame
    grids = {2: (1, 2), 4: (2, 2), 8: (2, 4)}
    if faces not in grids:
        raise ValueError(f"faces must be one of 0, 1, {', '.join(map(str, grids))}")
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


def run(faces: int, fps: float, duration: float, model: str, device: str, extra: list[str],
        size: tuple[int, int] = (FRAME_W, FRAME_H)) -> dict[str, Any]:
    """One run; ``size``: the 640x480 scene scaled to this (w, h), e.g. a 1280x720 camera's frames."""
    from emodan_ros.ros.camera import LiveCamera

    params: dict[str, Any] = {"device": device, "allow_random_model": True}
    if model:
        params["model_path"] = Path(model).resolve()
    sent = int(duration * fps)
    samples: list[tuple[float, float, float]] = []
    with LiveCamera(f"/bench{os.getpid()}", node_params=params, node_args=extra) as camera:
        pid = camera.node_proc.pid
        frame = make_frame(faces)
        if size != (FRAME_W, FRAME_H):
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
        template = camera.image_message(frame)
        warm = int(3.0 * fps)  # the first (slow) frames go through before measuring
        camera.play([template] * warm, [i / fps for i in range(warm)])
        time.sleep(1.0)
        camera.clear()
        samples.append((time.monotonic(), *_proc_sample(pid)))

        def sample(index: int, stamp: int) -> None:
            if index % max(int(fps), 1) == 0:
                samples.append((time.monotonic(), *_proc_sample(pid)))

        start = time.monotonic()
        with tqdm(total=sent, desc=f"{faces} face(s) at {fps:g} fps", file=sys.stderr, mininterval=1.0) as bar:
            camera.play([template] * sent, [i / fps for i in range(sent)],
                        each=lambda index, stamp: (sample(index, stamp), bar.update(1)))
        samples.append((time.monotonic(), *_proc_sample(pid)))
        camera.drain(sent, 1.0)
        elapsed = time.monotonic() - start
        log_tail = "".join(camera.node_proc.log[-3:]).strip()
        results = sorted(camera.outputs().items())
    lat = np.array([(received - stamp) / 1e6 for stamp, (received, _) in results])
    face_counts = [len(msg.states) for _, (_, msg) in results]
    third = max(len(lat) // 3, 1)
    cpu_pct = 100.0 * (samples[-1][1] - samples[0][1]) / max(samples[-1][0] - samples[0][0], 1e-6)
    rss = [s[2] for s in samples]
    return {
        "faces_in_frame": faces, "frame_size": f"{size[0]}x{size[1]}", "fps_in": fps,
        "duration_s": round(elapsed, 1), "sent": sent,
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
        "node_log_tail": log_tail,
    }


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and 16 <= int(width) <= 8192 and 16 <= int(height) <= 8192):
        raise argparse.ArgumentTypeError(f"expected WxH between 16 and 8192 px, e.g. 1280x720, got {text!r}")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=1, choices=(0, 1, 2, 4, 8),
                        help="faces per frame (0: a face-free photo, what an empty scene costs)")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds (after 3 s warm-up)")
    parser.add_argument("--model", default="", help="checkpoint; default: the package model, else untrained")
    parser.add_argument("--size", default=f"{FRAME_W}x{FRAME_H}", type=_size,
                        help="frame size WxH: the 640x480 scene scaled to it (default %(default)s)")
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--node-arg", action="append", default=[],
                        help="extra node --ros-args item, e.g. --node-arg=-p --node-arg=redetect_every:=10")
    args = parser.parse_args(argv)
    result = run(args.faces, args.fps, args.duration, args.model, args.device, args.node_arg, args.size)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
