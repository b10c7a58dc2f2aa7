"""The `emodan` command: train, evaluate and benchmark; only the bag live mode needs ROS."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _train(args: argparse.Namespace) -> int:
    from emodan_ros.training.trainer import TrainConfig, train

    config = TrainConfig.from_sources(args.config, args.set)
    result = train(config)
    print({k: v for k, v in result.items() if not isinstance(v, (dict, list))})
    return 0


def _export(args: argparse.Namespace) -> int:
    from emodan_ros.model.checkpoint import export_checkpoint

    path = export_checkpoint(args.checkpoint, args.out, half=not args.fp32)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def _average(args: argparse.Namespace) -> int:
    from emodan_ros.model.checkpoint import average_checkpoints

    path = average_checkpoints(args.checkpoints, args.out)
    print(f"wrote {path}: the mean of {len(args.checkpoints)} checkpoints' weights")
    return 0


def _model_bench(args: argparse.Namespace) -> int:
    from emodan_ros.bench.model import main as bench_main

    return bench_main(args)


def _eval(args: argparse.Namespace) -> int:
    from emodan_ros.evaluation.evaluate import main as eval_main

    return eval_main(args)


def _bag(args: argparse.Namespace) -> int:
    if args.bag_command == "play":
        from emodan_ros.ros.bag_player import run as play

        return play(args)
    from emodan_ros.bags.evaluate import main as bag_main

    return bag_main(args)


def _bench(args: argparse.Namespace) -> int:
    from emodan_ros.bench.peers import main as bench_main

    return bench_main(args)


def _add_bag_play(bag: argparse.ArgumentParser) -> None:
    """`emodan bag play`: the package's bag player (needs ROS 2), next to make and eval."""
    from emodan_ros.bags.play_args import add_play_args

    sub = next(a for a in bag._actions if isinstance(a, argparse._SubParsersAction))
    add_play_args(sub.add_parser("play", help="publish a bag's topics with their recorded types and QoS, "
                                              "and /clock (needs ROS 2; `ros2 bag play` without rosbag2)"))


def _bench_detectors(args: argparse.Namespace) -> int:
    from emodan_ros.bench.range import main as range_main

    return range_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emodan", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train Emotional DAN (YAML config + --set overrides)")
    train.add_argument("--config", help="YAML file with TrainConfig fields (see config/train_cpu.yaml)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set epochs=[2] --set model.width=0.25")
    train.set_defaults(func=_train)

    export = commands.add_parser("export", help="deployable copy of a checkpoint (no optimiser state, fp16 weights)")
    export.add_argument("checkpoint")
    export.add_argument("out")
    export.add_argument("--fp32", action="store_true", help="keep fp32 weights")
    export.set_defaults(func=_export)

    average = commands.add_parser("average", help="weight average of fine-tunings of one model (a model soup)")
    average.add_argument("out")
    average.add_argument("checkpoints", nargs="+")
    average.set_defaults(func=_average)

    bench = commands.add_parser("model-bench", help="parameters, GMACs and CPU latency per face of model sizes")
    bench.add_argument("--presets", nargs="+", default=["cpu", "rt112", "dan112", "paper224"])
    bench.add_argument("--checkpoint", action="append", default=[], help="also measure these checkpoints")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--repeats", type=int, default=20)
    bench.add_argument("--json", help="write the rows as JSON here")
    bench.set_defaults(func=_model_bench)

    peers = commands.add_parser("bench", help="our model vs dlib, fer and the detectors on the same images")
    peers.add_argument("--model", required=True, help="checkpoint of our default model")
    peers.add_argument("--ferplus", required=True, help="FER+ folder with label.csv (e.g. FER2013Valid)")
    peers.add_argument("--landmarks", nargs="+", required=True,
                       help="folders with .pts + images (files the model trained on are left out)")
    peers.add_argument("--pts-offset", type=float, default=0.0,
                       help="subtracted from .pts coordinates (1 for 1-based files)")
    peers.add_argument("--frames", action="append", default=[], metavar="NAME=CSV",
                       help="path,label manifest of photos scored through the frame path (repeatable)")
    peers.add_argument("--out", required=True, help="folder for bench.md, bench.json, frontier.png")
    peers.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (>= 3)")
    peers.add_argument("--limit", type=int, default=0, help="at most this many images per dataset (0: all)")
    peers.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                       help="also measure a torch.compile'd model (needs a C++ compiler)")
    peers.add_argument("--node-duration", type=float, default=10.0,
                       help="seconds per node end-to-end run (0: skip the node rows)")
    peers.add_argument("--yunet-model", default="", help="YuNet ONNX file for the yunet detector row")
    peers.add_argument("--torch-threads", type=int, default=1,
                       help="threads for PyTorch and the fer interpreter (the node's default is 1)")
    peers.set_defaults(func=_bench)

    from emodan_ros.bench.range import add_args as add_range_args

    detectors = commands.add_parser(
        "bench-detectors", help="face detector range test: recall by face size, false faces, ms per frame")
    add_range_args(detectors)
    detectors.set_defaults(func=_bench_detectors)

    from emodan_ros.cli_args import add_bag_args, add_eval_args

    evaluation = commands.add_parser("eval", help="evaluate a model on an image dataset (metrics, report)")
    add_eval_args(evaluation)
    evaluation.set_defaults(func=_eval)
    bag = commands.add_parser("bag", help="make a bag from a dataset; evaluate on a bag offline or live")
    add_bag_args(bag)
    _add_bag_play(bag)
    bag.set_defaults(func=_bag)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"emodan {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
