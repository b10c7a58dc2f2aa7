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

from emodan_ros.cli_args import add_pipeline_args
from emodan_ros.faces.config import PipelineConfig, settings_of
from emodan_ros.io.messages import DecodedFace
from emodan_ros.ros.camera import LiveCamera

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
    from emodan_ros.io.bag_io import read_messages
    from emodan_ros.io.image_codec import ImageDecodeError, decode_image

    for found_topic, _, msg in read_messages(bag, topics=[topic] if topic else None):
        if not hasattr(msg, "data") or not (hasattr(msg, "encoding") or hasattr(msg, "format")):
            continue
        try:
            yield decode_image(msg)
        except ImageDecodeError as error:
            print(f"skipping a frame on {found_topic}: {error}", file=sys.stderr)


def describe(faces: list[DecodedFace], names: tuple[str, ...]) -> str:
    if not faces:
        return "no face"
    parts = []
    for face in faces:
        top = sorted(zip(face.probs, names), reverse=True)[:3]
        others = ", ".join(f"{name} {p:.2f}" for p, name in top[1:])
        where = ""
        if face.box is not None:
            x0, y0, x1, y1 = face.box
            where = f" at x={x0:.0f} y={y0:.0f} {x1 - x0:.0f}x{y1 - y0:.0f}"
        parts.append(f"face {face.face_id}: {top[0][1]} {top[0][0]:.2f} ({others}){where}")
    return "; ".join(parts)


def run(frames: list[np.ndarray], out: Path, model: str, fps: float, node_args: list[str],
        settings: dict[str, Any]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    namespace = f"/emodan_demo_{os.getpid()}"
    params: dict[str, Any] = dict(settings)
    if model:
        params["model_path"] = Path(model).resolve()
    try:
        camera = LiveCamera(namespace, node_params=params, node_args=node_args, debug_image=True,
                            startup_timeout=90.0)
    except RuntimeError as error:
        print(f"{error}\nemotion_node did not start (see its log above)", file=sys.stderr)
        return 1
    with camera:
        print(f"emotion_node is up ({namespace}); sending {len(frames)} frames at {fps:g} fps")
        stamps = []
        for index, frame in enumerate(frames):
            stamp = camera.publish(camera.image_message(frame, "demo_camera"), stamp=(1_000 + index) * 10**9)
            stamps.append(stamp)
            started = time.monotonic()
            camera.wait_for(stamp, 1.0 / fps + 5.0)
            time.sleep(max(0.0, 1.0 / fps - (time.monotonic() - started)))
            result = camera.faces(stamp)
            print(f"frame {index:3d}: " + (describe(*result) if result else "no result (frame dropped)"))
        time.sleep(1.0)
        debug = camera.debug_frames()
        for index, stamp in enumerate(stamps):
            if stamp in debug:
                cv2.imwrite(str(out / f"frame_{index:03d}.png"), debug[stamp])
        print(f"annotated frames (the node's debug_image): {len(debug)} PNG files in {out}/")
    return 0


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
    # A demo shows each frame on its own: detect on every frame, no smoothing across frames.
    add_pipeline_args(parser, redetect_every=1, smoothing=0.0, detect_async=False)
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
    return run(frames, Path(args.out), args.model, args.fps, args.node_arg,
               {name: getattr(args, name) for name in settings_of(PipelineConfig)})


if __name__ == "__main__":
    raise SystemExit(main())
