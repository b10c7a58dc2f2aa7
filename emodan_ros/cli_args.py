"""Arguments of `emodan eval` and `emodan bag` (kept free of heavy imports: the parser is built on every call)."""

from __future__ import annotations

import argparse

from typing import Any

from emodan_ros.data.formats import FORMATS
from emodan_ros.faces.config import DetectorConfig, PipelineConfig, settings_of
from emodan_ros.model.device import DEVICES, PRECISIONS



def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="checkpoint (.pt); default: the package's default model")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32 (default), so that a score does not depend on a timed choice; auto: the node's "
                             "rule (bf16 where the CPU has bf16 units and it is faster, fp16 on CUDA)")
    parser.add_argument("--flip-average", action="store_true",
                        help="average each face with its mirror image (the node's flip_average parameter)")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="CPU threads for PyTorch (0: PyTorch's default); on a busy CPU 1 can be much faster")
    parser.add_argument("--restrict-to-dataset-classes", action="store_true",
                        help="argmax only over the model classes the dataset has (cross-dataset protocol)")
    parser.add_argument("--saliency-per-class", type=int, default=2,
                        help="Grad-CAM figures: this many correct and this many wrong samples per class (0: none)")


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder or csv")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--usage", help="fer2013csv: keep rows of this Usage (e.g. PublicTest); default all")
    parser.add_argument("--pts-offset", type=float, default=0.0, help="pts: subtract from the file's coordinates")
    parser.add_argument("--limit", type=int, help="only the first N images")


def _detector_args(parser: argparse.ArgumentParser) -> None:
    settings = settings_of(DetectorConfig)
    default, info = settings["detector"]
    parser.add_argument("--detector", default=default, choices=info.choices + ("full",),
                        help=info.description + " full: the whole image is the face crop (not for --mode live).")
    parser.add_argument("--detector-model", default=settings["detector_model_path"][0],
                        help=settings["detector_model_path"][1].description)
    parser.add_argument("--detector-max-side", type=int, default=settings["detector_max_side"][0],
                        help=settings["detector_max_side"][1].description)


def add_pipeline_args(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """``--redetect-every`` ... ``--smoothing``: the pipeline's settings, with ``defaults`` overriding
    PipelineConfig's (e.g. the demo detects on every frame)."""
    for name, (default, info) in settings_of(PipelineConfig).items():
        value = defaults.get(name, default)
        text = f"{info.description} [{info.low:g}, {info.high:g}]" if info.low is not None else info.description
        if isinstance(default, bool):  # --detect-async / --no-detect-async (type=bool would take "false" as true)
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, action=argparse.BooleanOptionalAction,
                                default=value, help=text)
            continue
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(default), default=value, help=text)


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    _model_args(parser)
    _data_args(parser)
    parser.add_argument("--input", default="crop", choices=("crop", "frame"),
                        help="crop: each image is the face crop; frame: through the node's detector and crop path")
    parser.add_argument("--out", required=True, help="output folder (metrics.json, predictions.csv, report.md)")
    _detector_args(parser)
    parser.add_argument("--batch-size", type=int, default=64)


def add_bag_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bag_command", required=True)
    make = sub.add_parser("make", help="turn an image dataset into a camera-like rosbag2 with ground truth")
    _data_args(make)
    make.add_argument("--out", required=True, help="bag folder to create (must not exist)")
    make.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    make.add_argument("--rate", type=float, default=15.0, help="frames per second (stamp spacing)")
    make.add_argument("--image-topic", default="/camera/image_raw",
                      help="camera topic (with --compressed, '/compressed' is appended)")
    make.add_argument("--frame-id", default="camera")
    make.add_argument("--compressed", choices=("jpeg", "png"), help="write sensor_msgs/CompressedImage")
    make.add_argument("--encoding", default="bgr8", help="Image encoding (bgr8, rgb8, mono8, ...)")
    make.add_argument("--frame-size", type=int, default=0,
                      help="put each image into a square frame of this side [px] (0: images as they are); "
                           "small face crops need it for a face detector to find them")
    make.add_argument("--face-fraction", type=float, default=0.5,
                      help="with --frame-size: the image's longer side as a fraction of the frame side")
    make.add_argument("--start", type=float, default=1_700_000_000.0, help="stamp of the first frame [s since epoch]")
    make.add_argument("--truth-prefix", default="/ground_truth",
                      help="ground truth topics: PREFIX/emotions, PREFIX/landmarks")

    ev = sub.add_parser("eval", help="score the node on a bag: offline, live through the running node, "
                                     "or a recording of the node's outputs")
    ev.add_argument("--bag", required=True)
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--mode", default="offline", choices=("offline", "live", "recorded"),
                    help="offline: the node's pipeline in this process; live: publish into the node over DDS "
                         "and record its output; recorded: score a bag that already holds the node's output")
    _model_args(ev)
    ev.add_argument("--image-topic", help="camera topic in the bag (default: the only image topic)")
    ev.add_argument("--truth-topic", help="EmotionStateArray ground truth (default: /ground_truth/emotions if present)")
    ev.add_argument("--truth-landmarks-topic",
                    help="FaceLandmarksArray ground truth (default: /ground_truth/landmarks if present)")
    ev.add_argument("--truth-csv", help="ground truth as a CSV of stamp,label (stamp in s, or ns as an integer)")
    ev.add_argument("--stamp-tolerance", type=float, default=0.001,
                    help="a truth stamp matches the nearest frame within this many seconds")
    ev.add_argument("--pred-topic", help="recorded: EmotionStateArray topic of the node (default: the only "
                                         "non-truth one)")
    ev.add_argument("--pred-landmarks-topic", help="recorded: FaceLandmarksArray topic of the node")
    _detector_args(ev)
    add_pipeline_args(ev)
    ev.add_argument("--speed", type=float, default=1.0, help="live: publish at N times the recorded rate")
    ev.add_argument("--warmup-frames", type=int, default=3,
                    help="live: frames sent (and not scored) before the run, so model start-up is not measured")
    ev.add_argument("--node-running", action="store_true",
                    help="live: use an emotion_node that already runs (see --node-namespace) instead of starting one")
    ev.add_argument("--node-namespace", default="",
                    help="live: namespace of the node (default: a private one for the node started here)")
    ev.add_argument("--startup-timeout", type=float, default=120.0, help="live: seconds to wait for the node")
    ev.add_argument("--drain-timeout", type=float, default=5.0,
                    help="live: seconds without output after the last frame before the run ends")
    ev.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"), help="live: output bag format")
