"""The `emodan` command: train, evaluate, benchmark and demo without needing ROS for the model parts."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _train(args: argparse.Namespace) -> int:
    from emodan_ros.train import TrainConfig, train

    config = TrainConfig.from_sources(args.config, args.set)
    result = train(config)
    print({k: v for k, v in result.items() if not isinstance(v, (dict, list))})
    return 0


def _model_bench(args: argparse.Namespace) -> int:
    from emodan_ros.model_bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emodan", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train Emotional DAN (YAML config + --set overrides)")
    train.add_argument("--config", help="YAML file with TrainConfig fields (see config/train_cpu.yaml)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set epochs=[2] --set model.width=0.25")
    train.set_defaults(func=_train)

    bench = commands.add_parser("model-bench", help="parameters, GMACs and CPU latency per face of model sizes")
    bench.add_argument("--presets", nargs="+", default=["cpu", "dan112", "paper224"])
    bench.add_argument("--checkpoint", action="append", default=[], help="also measure these checkpoints")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--repeats", type=int, default=20)
    bench.add_argument("--json", help="write the rows as JSON here")
    bench.set_defaults(func=_model_bench)
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
