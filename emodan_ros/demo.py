"""The README's main job: run the real emotion_node on a short camera-like sequence and show what it sees.

`python -m emodan_ros.demo [--image PATH ...] [--bag BAG --topic T] [--out DIR]`

By default the sequence is made from the photo scikit-image ships (`skimage.data.astronaut()`,
no download): the face drifts and zooms across a 640x480 frame as if the person moved. The node
runs as its own process, exactly as on a robot; the demo publishes the frames over DDS, prints
each frame's faces, emotions and probabilities from `emotions`/`landmarks`, and writes the node's
own annotated `debug_image` frames as PNG files.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from emodan_ros.ros_compat import require_ros

require_ros(__name__)

from emodan_ros.node_process import NodeProcess  # noqa: E402

FRAME_W, FRAME_H = 640, 480


def astronaut_sequence(frames: int) -> Iterator[np.ndarray]:
    """The astronaut's face moving and zooming over a grey 640x480 background."""
    from skimage import data

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[0:384, 64:448]  # head and shoulders
    for index in range(frames):
        phase = index / max(frames - 1, 1)
        side = int(400 + 80 * np.sin(np.pi * phase))
        scaled = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
        frame = np.full((FRAME_H, FRAME_W, 3), 110, np.uint8)
        x = int(20 + (FRAME_W - side - 40) * phase)
        y = max(0, (FRAME_H - side) // 2)
        h = min(side, FRAME_H - y)
        frame[y:y + h, x:x + side] = scaled[:h]
        yield frame


def image_files(paths: list[str]) -> Iterator[np.ndarray]:
    for path in paths:
        files = sorted(p for p in Path(path).iterdir() if p.is_file()) if Path(path).is_dir() else [Path(path)]
        for file in files:
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                print(f"skipping {file}: not a readable image", file=sys.stderr)
                continue
            yield image


def bag_frames(bag: str, topic: str | None) -> Iterator[np.ndarray]:
    from emodan_ros.bag_io import read_messages
    from emodan_ros.image_codec import ImageDecodeError, decode_image

    for found_topic, _, msg in read_messages(bag, topics=[topic] if topic else None):
        if not hasattr(msg, "data") or not (hasattr(msg, "encoding") or hasattr(msg, "format")):
            continue
        try:
            yield decode_image(msg)
        except ImageDecodeError as error:
            print(f"skipping a frame on {found_topic}: {error}", file=sys.stderr)


def describe(states: Any) -> str:
    if not states:
        return "no face"
    parts = []
    for state in states:
        top = sorted(zip(state.probabilities, state.class_names), reverse=True)[:3]
        others = ", ".join(f"{name} {p:.2f}" for p, name in top[1:])
        parts.append(f"face {state.face_id}: {state.emotion} {state.probability:.2f} ({others})")
    return "; ".join(parts)


def run(frames: list[np.ndarray], out: Path, model: str, fps: float, node_args: list[str]) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from emodan_ros.image_codec import decode_image, encode_image
    from emodan_ros.msg import EmotionStateArray, FaceLandmarksArray

    out.mkdir(parents=True, exist_ok=True)
    namespace = f"/emodan_demo_{os.getpid()}"
    params: dict[str, Any] = {"redetect_every": 1, "smoothing": 0.0}
    if model:
        params["model_path"] = Path(model).resolve()
    node = NodeProcess(namespace, params, node_args)

    rclpy.init()
    demo = rclpy.create_node("emodan_demo", namespace=namespace)
    camera = demo.create_publisher(Image, "image", qos_profile_sensor_data)
    emotions: dict[tuple[int, int], Any] = {}
    landmarks: dict[tuple[int, int], Any] = {}
    debug: dict[tuple[int, int], np.ndarray] = {}

    def key(msg: Any) -> tuple[int, int]:
        return msg.header.stamp.sec, msg.header.stamp.nanosec

    demo.create_subscription(EmotionStateArray, "emotions", lambda m: emotions.__setitem__(key(m), m), 50)
    demo.create_subscription(FaceLandmarksArray, "landmarks", lambda m: landmarks.__setitem__(key(m), m), 50)
    demo.create_subscription(Image, "debug_image", lambda m: debug.__setitem__(key(m), decode_image(m)),
                             qos_profile_sensor_data)
    executor = SingleThreadedExecutor()
    executor.add_node(demo)
    try:
        deadline = time.monotonic() + 90
        while not (camera.get_subscription_count() and demo.count_publishers(f"{namespace}/emotions")):
            if node.exited() or time.monotonic() > deadline:
                print(node.log_tail(), file=sys.stderr)
                print("emotion_node did not start (see its log above)", file=sys.stderr)
                return 1
            executor.spin_once(timeout_sec=0.1)
        print(f"emotion_node is up ({namespace}); sending {len(frames)} frames at {fps:g} fps")
        for index, frame in enumerate(frames):
            msg = encode_image(frame, "bgr8", Image)
            msg.header.frame_id = "demo_camera"
            msg.header.stamp.sec, msg.header.stamp.nanosec = 1_000 + index, 0
            camera.publish(msg)
            end = time.monotonic() + 1.0 / fps
            while time.monotonic() < end or (key(msg) not in emotions and time.monotonic() < end + 5.0):
                executor.spin_once(timeout_sec=0.02)
            result = emotions.get(key(msg))
            faces = landmarks.get(key(msg))
            where = ""
            if faces is not None and faces.faces:
                face = faces.faces[0]
                where = f"  box x={face.box_x:.0f} y={face.box_y:.0f} {face.box_width:.0f}x{face.box_height:.0f}"
            print(f"frame {index:3d}: " + (describe(result.states) if result else "no result (frame dropped)") + where)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        for (sec, _), image in sorted(debug.items()):
            cv2.imwrite(str(out / f"frame_{sec - 1_000:03d}.png"), image)
        print(f"annotated frames (the node's debug_image): {len(debug)} PNG files in {out}/")
        return 0
    finally:
        node.stop()
        demo.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run emotion_node on a sample and print what it sees.")
    parser.add_argument("--image", nargs="+", default=[], help="image files or folders instead of the sample")
    parser.add_argument("--bag", help="a rosbag2 (mcap or sqlite3) with camera images instead of the sample")
    parser.add_argument("--topic", help="image topic in --bag (default: every image topic)")
    parser.add_argument("--frames", type=int, default=12, help="frames of the built-in sample")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--model", default="", help="checkpoint (default: the package's model)")
    parser.add_argument("--out", default="demo_out", help="folder for the annotated frames")
    parser.add_argument("--node-arg", action="append", default=[], help="extra --ros-args item for the node")
    args = parser.parse_args(argv)
    if args.bag:
        frames = list(bag_frames(args.bag, args.topic))
    elif args.image:
        frames = list(image_files(args.image))
    else:
        frames = list(astronaut_sequence(args.frames))
    if not frames:
        print("no frames to show", file=sys.stderr)
        return 1
    return run(frames, Path(args.out), args.model, args.fps, args.node_arg)


if __name__ == "__main__":
    raise SystemExit(main())
