"""A training run's settings: YAML and ``--set key=value`` overrides, typed and checked before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence, get_args, get_origin, get_type_hints

import yaml

from emodan_ros.data.teacher import TEACHERS
from emodan_ros.model.dan import PRESETS, DANConfig
from emodan_ros.model.loss import LossConfig

RESERVED_SET_NAMES = ("ferplus", "ferplus_train", "ferplus_valid", "landmarks")  # keys the run already uses


def _typed(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type, or a ValueError now, not deep inside the optimiser later.

    YAML reads ``1e-3`` (no dot) as a string; numbers written that way are accepted for float fields.
    """
    kind = get_origin(hint) or hint
    if kind is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is list:
        (item,) = get_args(hint)
        if isinstance(value, int) and not isinstance(value, bool) and item is int:
            return [value]  # epochs: 10 means [10]
        if isinstance(value, list):
            return [_typed(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
    elif isinstance(value, kind):
        return value
    expected = getattr(kind, "__name__", str(kind))
    raise ValueError(f"training option {name} must be {expected}, got {value!r} ({type(value).__name__})")


@dataclass
class TrainConfig:
    """One training run; every field can come from YAML and be overridden with ``--set``."""

    out: str = "runs/emodan"
    preset: str = "cpu"
    model: dict[str, Any] = field(default_factory=dict)  # DANConfig overrides of the preset
    ferplus_train: str = ""  # FER+ folder with label.csv (emotion only)
    ferplus_valid: str = ""  # scored on majority labels
    scheme: str = "probability"  # majority | multilabel | probability | crossentropy
    # More emotion sources: {name, train, valid, weight} with train/valid path,label manifests; each is
    # cropped where the node's detector finds its face and gets `weight` of every epoch (FER+ the rest).
    emotion_sets: list[dict[str, Any]] = field(default_factory=list)
    class_balance: float = 0.0  # per-source class weights n_c ** -class_balance (0 = the source's priors)
    # "dlib": the emotion_sets' training faces also get dlib's 68 landmarks (data/teacher.py); "" = none
    landmark_teacher: str = ""
    teacher_ferplus: bool = False  # the teacher labels the FER+ training faces too (the face its crop frames)
    landmark_dirs: list[str] = field(default_factory=list)  # iBUG .pts folders (landmarks only)
    landmark_holdout: float = 0.1  # fraction of the .pts files kept apart for NME
    landmark_share: float = 0.2  # fraction of each epoch drawn from the landmark data
    pts_offset: float = 0.0  # subtracted from .pts coordinates (1 for 1-based files; see PtsDataset)
    epoch_length: int = 0  # samples per epoch; 0 = size of the emotion set / (1 - landmark_share)
    schedule: str = "joint"  # joint | stagewise (stage 1 first, then each next stage with earlier ones frozen)
    epochs: list[int] = field(default_factory=lambda: [10])  # joint: [n]; stagewise: one count per stage
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    alpha: float = 0.5
    beta: float = 0.5
    label_smoothing: float = 0.0
    # > 0: an exponentially weighted mean of the weights (this decay per step; trainer.weighted_mean_update) is
    # what is validated, selected and saved as best.pt; the trained weights' scores go beside it as raw_val_*
    ema_decay: float = 0.0
    augment: dict[str, Any] = field(default_factory=dict)  # Augmentation overrides
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 (CPU) | fp16 (CUDA AMP)
    workers: int = 0
    threads: int = 0  # torch CPU threads; 0 = torch default
    seed: int = 0
    max_batches: int = 0  # per epoch, 0 = all (for smoke tests)
    resume: str = ""
    init: str = ""  # fine-tune: start from this checkpoint's weights with a fresh optimiser and schedule

    @classmethod
    def from_sources(cls, path: str | None, overrides: Sequence[str]) -> TrainConfig:
        data: dict[str, Any] = {}
        if path:
            data = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown training options in {path}: {sorted(unknown)}")
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set expects key=value, got {item!r}")
            head, _, sub = key.partition(".")
            if head not in known:
                raise ValueError(f"unknown training option {head!r}")
            parsed = yaml.safe_load(value)
            if sub:
                data.setdefault(head, {})[sub] = parsed
            else:
                data[head] = parsed
        hints = get_type_hints(cls)
        config = cls(**{key: _typed(key, value, hints[key]) for key, value in data.items()})
        config.validate()
        return config

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}")
        if self.schedule not in ("joint", "stagewise"):
            raise ValueError("schedule must be 'joint' or 'stagewise'")
        if isinstance(self.epochs, int):
            self.epochs = [self.epochs]
        stages = self.model_config().num_stages
        if self.schedule == "stagewise" and len(self.epochs) != stages:
            raise ValueError(f"stagewise training needs one epoch count per stage ({stages})")
        if not self.ferplus_train and not self.landmark_dirs:
            raise ValueError("give ferplus_train and/or landmark_dirs")
        names = [entry.get("name") for entry in self.emotion_sets]
        for entry in self.emotion_sets:
            missing = {"name", "train", "weight"} - set(entry)
            unknown = set(entry) - {"name", "train", "valid", "weight"}
            if missing or unknown:
                raise ValueError(f"emotion_sets entries need name, train, weight (valid optional): {entry}")
            if entry["name"] in RESERVED_SET_NAMES or names.count(entry["name"]) > 1:
                raise ValueError(f"emotion_sets names must be unique and not one of {RESERVED_SET_NAMES}: "
                                 f"{entry['name']!r}")
            weight = entry["weight"]
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"emotion_sets weight must be a number >= 0, got {weight!r} for {entry['name']!r}")
        shares = self.landmark_share * bool(self.landmark_dirs) + sum(float(e["weight"]) for e in self.emotion_sets)
        if self.ferplus_train and shares >= 1.0:
            raise ValueError(f"landmark_share plus the emotion_sets weights must leave FER+ a share, got {shares}")
        if self.landmark_teacher and self.landmark_teacher not in TEACHERS:
            raise ValueError(f"landmark_teacher must be empty or one of {TEACHERS}, got {self.landmark_teacher!r}")
        if self.teacher_ferplus and not self.landmark_teacher:
            raise ValueError("teacher_ferplus needs a landmark_teacher")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.init and self.resume:
            raise ValueError("give init (fine-tune) or resume (continue a run), not both")
        LossConfig(self.alpha, self.beta, self.scheme, self.label_smoothing)

    def model_config(self) -> DANConfig:
        return replace(PRESETS[self.preset], **{k: tuple(v) if isinstance(v, list) else v
                                                for k, v in self.model.items()})
