"""Checkpoints that carry everything needed to run a model, and fail loudly when they cannot."""

from __future__ import annotations

import io
import pickle
import subprocess
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch

from emodan_ros import __version__
from emodan_ros.faces.crop import CROP_SCALE, CROP_SHIFT
from emodan_ros.model.dan import DANConfig, EmotionalDAN
from emodan_ros.model.device import fp32_state

FORMAT = "emodan_ros/checkpoint"
FORMAT_VERSION = 1
NORMALIZATION = "grey crop, per-crop standardisation (x - mean) / max(std, 1)"
REQUIRED_KEYS = ("format", "format_version", "config", "state_dict", "mean_shape", "crop")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, of another format, or does not match its own config."""


def code_version() -> dict[str, str]:
    """Package version and, when run from a git checkout, the commit (for reproducibility)."""
    info = {"package": __version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=5, check=True).stdout.strip()
        info["git"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def save_checkpoint(path: str | Path, model: EmotionalDAN, *, half: bool = False, **extra: Any) -> None:
    """Write a checkpoint atomically (a crash mid-write never leaves a truncated file behind).

    ``half`` stores floating-point weights as fp16 to keep shipped models small; ``extra`` adds
    metrics, data description, training config, optimizer state for resuming, and so on.
    """
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
             for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": state,
        "mean_shape": model.mean_shape.detach().cpu().tolist(),
        "crop": {"scale": CROP_SCALE, "shift": CROP_SHIFT,
                 "convention": "square of scale * max side of the landmark box, centre moved by shift * side in y"},
        "normalization": NORMALIZATION,
        "code_version": code_version(),
        **extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: str | Path, check_crop: bool = True) -> dict[str, Any]:
    """Load and validate a checkpoint's contents without building the model.

    ``check_crop=False`` is for fine-tuning, which may move weights to this code's crop convention.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no model checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, io.UnsupportedOperation,
            ValueError, KeyError, IndexError, TypeError, AttributeError, UnicodeDecodeError) as error:
        # a file that is no torch archive (text, another format) fails inside the legacy unpickler with
        # whatever error its bytes happen to cause
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): "
                              f"{type(error).__name__}: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an emodan_ros checkpoint (expected format {FORMAT!r})")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}: incomplete checkpoint")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {payload['format_version']}, newer than this "
                              f"emodan_ros ({FORMAT_VERSION}): upgrade the package")
    # Checkpoints from before the shift was measured cropped centred on the box (shift 0).
    scale, shift = float(payload["crop"].get("scale", -1)), float(payload["crop"].get("shift", 0.0))
    if check_crop and (abs(scale - CROP_SCALE) > 1e-6 or abs(shift - CROP_SHIFT) > 1e-6):
        raise CheckpointError(f"{path} was trained on crops of scale {scale} and shift {shift}; this code crops "
                              f"at scale {CROP_SCALE} and shift {CROP_SHIFT}: retrain or fine-tune it (init=)")
    return payload


def load_model(path: str | Path) -> tuple[EmotionalDAN, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights (fp32, CPU, eval mode)."""
    payload = read_checkpoint(path)
    try:
        config = DANConfig.from_dict(payload["config"])
        model = EmotionalDAN(config, torch.tensor(payload["mean_shape"], dtype=torch.float32))
        state = fp32_state(payload["state_dict"])
        model.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        raise CheckpointError(f"{path}: weights do not match the stored configuration: {error}") from error
    model.eval()
    return model, payload


RESUME_ONLY_KEYS = ("optimizer", "scheduler", "rng", "best_score", "phase", "epoch")


def export_checkpoint(source: str | Path, target: str | Path, half: bool = True) -> Path:
    """A deployable copy of a training checkpoint: no optimiser state, weights in fp16 by default.

    Everything describing the model (config, mean shape, metrics, data, recipe) is kept, so the
    shipped file still says how it was made.
    """
    model, payload = load_model(source)
    keep = {k: v for k, v in payload.items()
            if k not in RESUME_ONLY_KEYS and k not in REQUIRED_KEYS and k not in ("normalization", "code_version")}
    keep["exported_from"] = {"path": str(source), "code_version": payload.get("code_version"),
                             "storage": "fp16" if half else "fp32"}
    save_checkpoint(target, model, half=half, **keep)
    return Path(target)


def average_checkpoints(sources: Sequence[str | Path], target: str | Path) -> Path:
    """Uniform weight average (a "model soup", Wortsman et al. 2022) of fine-tunings of one model.

    Fine-tunings that start from the same weights stay close enough for their mean to be a model
    too, usually better than each; runs from different starts do not average. Checkpoints of
    another configuration or mean shape (other landmark data or crop convention) are refused.
    """
    if len(sources) < 2:
        raise ValueError("averaging needs at least two checkpoints")
    loaded = [load_model(path) for path in sources]
    first, first_payload = loaded[0]
    for path, (model, payload) in zip(sources[1:], loaded[1:]):
        if payload["config"] != first_payload["config"]:
            raise CheckpointError(f"{path} has another network configuration than {sources[0]}")
        if not torch.equal(model.mean_shape, first.mean_shape):
            raise CheckpointError(f"{path} has another mean shape than {sources[0]} (other landmark data or crop)")
    states = [model.state_dict() for model, _ in loaded]
    first.load_state_dict({k: sum(state[k] for state in states) / len(states) if v.is_floating_point() else v
                           for k, v in states[0].items()})
    record = [{"path": str(path), "metrics": payload.get("metrics"), "train_config": payload.get("train_config")}
              for path, (_, payload) in zip(sources, loaded)]
    save_checkpoint(target, first, averaged_from=record, data=first_payload.get("data", {}))
    return Path(target)
