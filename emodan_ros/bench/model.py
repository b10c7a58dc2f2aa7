"""`emodan model-bench`: size, compute and CPU latency per face of model configurations.

Latency is the model alone on ready crops (the node's end-to-end cost is `emodan_ros.bench.node`);
medians over repeats, measured in one process so the rows compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from emodan_ros.model.dan import PRESETS, EmotionalDAN
from emodan_ros.model.predictor import Predictor


@dataclass
class ModelRow:
    name: str
    input_size: int
    stages: int
    params_m: float
    gmacs_per_face: float
    ms_per_face: dict[str, float]  # "<precision>_b<batch>" -> median ms per face


def count_gmacs(model: EmotionalDAN) -> float:
    """Multiply-accumulates of one face's forward pass (FLOPs / 2), from PyTorch's flop counter."""
    size = model.config.input_size
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.eval()(torch.zeros(1, 1, size, size))
    return counter.get_total_flops() / 2e9


def time_per_face(predictor: Predictor, batch: int, repeats: int) -> float:
    size = predictor.input_size
    crops = torch.rand(batch, 1, size, size, device=predictor.device) * 255
    for _ in range(2):
        predictor._forward(crops)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor._forward(crops)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1000 / batch)
    return statistics.median(samples)


def measure(name: str, model: EmotionalDAN, device: str, repeats: int) -> ModelRow:
    row = ModelRow(name, model.config.input_size, model.config.num_stages,
                   sum(p.numel() for p in model.parameters()) / 1e6, count_gmacs(model), {})
    precisions = ("fp32", "fp16") if device == "cuda" else ("fp32", "bf16")
    for precision in precisions:
        predictor = Predictor(model, device=device, precision=precision)
        for batch in (1, 8):
            row.ms_per_face[f"{precision}_b{batch}"] = round(time_per_face(predictor, batch, repeats), 2)
    return row


def main(args: argparse.Namespace) -> int:
    from emodan_ros.model.checkpoint import load_model

    torch.manual_seed(0)
    rows = []
    for preset in args.presets:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
        rows.append(measure(f"{preset} (random weights)", EmotionalDAN(PRESETS[preset]), args.device, args.repeats))
    for path in args.checkpoint:
        model, _ = load_model(path)
        rows.append(measure(str(path), model, args.device, args.repeats))
    keys = sorted({k for row in rows for k in row.ms_per_face})
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.repeats} runs, model only (crops ready)")
    print("| model | input | stages | params (M) | GMACs/face | " + " | ".join(f"ms/face {k}" for k in keys) + " |")
    print("|---" * (5 + len(keys)) + "|")
    for row in rows:
        cells = [row.name, str(row.input_size), str(row.stages), f"{row.params_m:.2f}", f"{row.gmacs_per_face:.3f}"]
        cells += [f"{row.ms_per_face.get(k, float('nan')):.2f}" for k in keys]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([asdict(row) for row in rows], handle, indent=1)
    return 0
