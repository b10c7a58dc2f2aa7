"""Train Emotional DAN on emotion data (FER+ votes) and landmark data (300-W) together.

`emodan train --config config/train_cpu.yaml [--set key=value ...]`. The training script knows
datasets and schedules; the network and its loss come from :mod:`emodan_ros.model.dan` and
:mod:`emodan_ros.model.loss`, the crop convention from :mod:`emodan_ros.faces.crop`.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from emodan_ros.evaluation import metrics
from emodan_ros.model.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from emodan_ros.faces.crop import (NO_AUGMENTATION, Augmentation)
from emodan_ros.model.dan import EmotionalDAN, fold_batch_norms, standardize
from emodan_ros.data.crop_dataset import CropDataset, mean_shape_of
from emodan_ros.data.landmarks import PtsDataset, list_pts_files, split_holdout
from emodan_ros.data.face_boxes import detect_boxes
from emodan_ros.data.teacher import teacher_landmarks
from emodan_ros.data.mix import ClassBalanced, WeightedMix
from emodan_ros.data.readers import FerPlusDataset, ManifestDataset
from emodan_ros.model.loss import LossConfig, joint_loss
from emodan_ros.evaluation.plots import plot_confusion
from emodan_ros.training.config import TrainConfig
from emodan_ros.training.plots import plot_training_curves
from emodan_ros.model.device import faster_cpu_precision, fp32_state, resolve_device


def weighted_mean_update(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], Any], None]:
    """AveragedModel's update for an exponentially weighted mean of the weights seen so far: step k's
    weights weigh ``decay ** (n - k)``, normalised, so none of the weight is left on the random
    initialisation (a plain EMA started from it keeps ``decay ** n`` there: 71 % after three epochs of
    the shipped recipe at 0.9997). ``decay`` 0 follows the trained weights, towards 1 it is SWA's equal mean.
    """
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: Any) -> None:
        n = int(num_averaged) + 1  # AveragedModel copies the first weights and counts them as one
        share = (1.0 - decay) / (1.0 - decay ** n)
        for mean, now in zip(averaged, current, strict=True):
            if mean.is_floating_point():
                mean.lerp_(now, share)
            else:  # batch-norm's step counter
                mean.copy_(now)

    return update


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def choose_precision(config: TrainConfig, device: torch.device, model: EmotionalDAN, loader: DataLoader) -> str:
    """'auto': fp16 AMP on CUDA; on the CPU bf16 only where a timed step shows it is faster.

    The timing runs on a copy so the real model's batch-norm statistics stay untouched.
    """
    if config.precision != "auto":
        return config.precision
    if device.type == "cuda":
        return "fp16"
    model = copy.deepcopy(model)
    images = standardize(next(iter(loader))["image"].to(device))

    def step(candidate: str) -> None:
        dtype = torch.bfloat16 if candidate == "bf16" else None
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            output = model(images)
        output.final_landmarks.float().sum().backward()

    return faster_cpu_precision(step, repeats=1)


class Trainer:
    """Owns the run directory, the model, the optimiser, validation and checkpoints."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        seed_everything(config.seed)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = resolve_device(config.device)
        self.model_config = config.model_config()
        self.classes = self.model_config.class_names
        self.augment = replace(Augmentation(), **config.augment)
        self._build_data()
        self.model = EmotionalDAN(self.model_config, self.mean_shape).to(self.device)
        # NHWC convolutions are the fast ones for oneDNN on the CPU and for cuDNN's fp16 tensor cores alike.
        self.memory_format = torch.channels_last
        self.model = self.model.to(memory_format=self.memory_format)
        self.average = (AveragedModel(self.model, multi_avg_fn=weighted_mean_update(config.ema_decay), use_buffers=True)
                        if config.ema_decay else None)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest kernels once
        self.history: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.start_phase, self.start_epoch = 0, 0
        self._resume_state: dict[str, Any] | None = None
        self._rng_state: torch.Tensor | None = None

    def _build_data(self) -> None:
        c = self.config
        parts: list[Dataset] = []
        weights: list[float] = []
        self.data_info: dict[str, Any] = {}
        self.valid_emotion: dict[str, CropDataset] = {}  # name -> set scored every epoch
        self.valid_landmarks = None
        size = self.model_config.input_size
        balance = (lambda d: ClassBalanced(d, c.class_balance, seed=c.seed)) if c.class_balance else (lambda d: d)
        if c.ferplus_train:
            fer = FerPlusDataset(c.ferplus_train, scheme=c.scheme, seed=c.seed)
            self.data_info["ferplus_train"] = {"path": c.ferplus_train, "n": len(fer), "scheme": c.scheme,
                                               "bad_files": len(fer.bad_files)}
            if c.teacher_ferplus:
                self.data_info["ferplus_train"]["teacher_landmarks"] = teacher_landmarks(
                    fer, self.out / "boxes", c.landmark_teacher, full_crop_prior=True)
            parts.append(balance(fer))
            others = sum(float(e["weight"]) for e in c.emotion_sets)
            weights.append(1.0 - others - (c.landmark_share if c.landmark_dirs else 0.0))
        if c.ferplus_valid:
            valid = FerPlusDataset.evaluation(c.ferplus_valid)
            self.valid_emotion["ferplus"] = CropDataset(valid, self.classes, size, NO_AUGMENTATION)
            self.data_info["ferplus_valid"] = {"path": c.ferplus_valid, "n": len(valid)}
        for entry in c.emotion_sets:
            train = ManifestDataset(entry["train"], classes=self.classes)  # labels by name onto the model's
            info = {"train": entry["train"], "n": len(train), "weight": float(entry["weight"]),
                    "boxes": detect_boxes(train, self.out / "boxes")}
            if c.landmark_teacher:
                info["teacher_landmarks"] = teacher_landmarks(train, self.out / "boxes", c.landmark_teacher)
            parts.append(balance(train))
            weights.append(float(entry["weight"]))
            if entry.get("valid"):
                valid = ManifestDataset(entry["valid"], classes=self.classes)
                info |= {"valid": entry["valid"], "n_valid": len(valid),
                         "valid_boxes": detect_boxes(valid, self.out / "boxes")}
                self.valid_emotion[entry["name"]] = CropDataset(valid, self.classes, size, NO_AUGMENTATION)
            self.data_info[entry["name"]] = info
        self.mean_shape = None
        if c.landmark_dirs:
            files = [f for d in c.landmark_dirs for f in list_pts_files(d)]
            train_files, held = split_holdout(files, c.landmark_holdout, seed=c.seed)
            landmarks = PtsDataset(files=train_files, offset=c.pts_offset)
            parts.append(landmarks)
            weights.append(c.landmark_share if c.ferplus_train or c.emotion_sets else 1.0)
            self.mean_shape = mean_shape_of(landmarks, size)
            if held:
                self.valid_landmarks = CropDataset(PtsDataset(files=held, offset=c.pts_offset), self.classes, size,
                                                   NO_AUGMENTATION)
            self.data_info["landmarks"] = {"dirs": c.landmark_dirs, "n_train": len(landmarks),
                                           "n_holdout": len(held), "holdout_fraction": c.landmark_holdout,
                                           "pts_offset": c.pts_offset,
                                           "holdout_files": [Path(f).name for f in held]}
        length = c.epoch_length or int(round(len(parts[0]) / max(weights[0], 1e-6)))
        mix = WeightedMix(parts, weights, length=length, classes=self.classes, seed=c.seed)
        self.train_set = CropDataset(mix, self.classes, size, self.augment, seed=c.seed)

    # ----------------------------------------------------------------- phases ---
    def phases(self) -> list[tuple[list[int], int]]:
        """(stages trained, epochs) per phase: one joint phase, or one phase per stage."""
        n = self.model_config.num_stages
        if self.config.schedule == "joint":
            return [(list(range(n)), self.config.epochs[0])]
        return [([stage], epochs) for stage, epochs in enumerate(self.config.epochs)]

    def _freeze_for(self, stages: list[int]) -> list[torch.nn.Parameter]:
        """Freeze every stage before the first trained one (DAN's stage-wise schedule)."""
        first = stages[0]
        for index, stage in enumerate(self.model.stages):
            stage.requires_grad_(index >= first)
        for index, feature in enumerate(self.model.feature_images):
            feature.requires_grad_(index + 1 >= first)
        return [p for p in self.model.parameters() if p.requires_grad]

    def _train_mode(self, stages: list[int]) -> None:
        self.model.train()
        for index, stage in enumerate(self.model.stages):
            if index < stages[0]:
                stage.eval()  # frozen stages keep their batch-norm statistics

    def run(self) -> dict[str, Any]:
        c = self.config
        if c.resume:
            self._resume(c.resume)
        elif c.init:
            self._initialise(c.init)
        loader_kwargs = dict(batch_size=c.batch_size, num_workers=c.workers, drop_last=True,
                             persistent_workers=c.workers > 0)
        loader = DataLoader(self.train_set, shuffle=False, **loader_kwargs)
        self.precision = choose_precision(c, self.device, self.model, loader)
        torch.set_rng_state(self._rng_state if self._rng_state is not None else torch.get_rng_state())
        for phase, (stages, epochs) in enumerate(self.phases()):
            if phase < self.start_phase:
                continue
            params = self._freeze_for(stages)
            optimizer = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
            steps = min(len(loader), c.max_batches or len(loader))
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=c.lr, total_steps=epochs * steps,
                                                            pct_start=0.15)
            scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
            first_epoch = self.start_epoch if phase == self.start_phase else 0
            if phase == self.start_phase and self._resume_state:
                optimizer.load_state_dict(self._resume_state["optimizer"])
                scheduler.load_state_dict(self._resume_state["scheduler"])
            for epoch in range(first_epoch, epochs):
                self.train_set.set_epoch(epoch + 1000 * phase)
                train_stats = self._train_epoch(loader, optimizer, scheduler, scaler, stages, phase, epoch, epochs)
                record = {"phase": phase, "stages": [s + 1 for s in stages], "epoch": epoch + 1, **train_stats,
                          **self.validate(self.evaluated_model(), max(stages) + 1)}
                if self.average is not None:
                    raw = self.validate(self.model, max(stages) + 1)
                    record |= {f"raw_{k}": v for k, v in raw.items() if k.endswith(("accuracy", "f1", "ocular"))}
                self.history.append(record)
                self._save(record, phase, epoch + 1, optimizer, scheduler)
                self._report(record)
        return self.history[-1] if self.history else {}

    def _train_epoch(self, loader: DataLoader, optimizer, scheduler, scaler, stages: list[int],
                     phase: int, epoch: int, epochs: int) -> dict[str, float]:
        c = self.config
        self._train_mode(stages)
        loss_config = LossConfig(c.alpha, c.beta, c.scheme, c.label_smoothing)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        totals = {"loss": 0.0, "nme_inter_pupil": 0.0, "ce": 0.0}  # the loss normalises by eye centres
        seen = 0
        start = time.perf_counter()
        steps = min(len(loader), c.max_batches or len(loader))
        bar = tqdm(loader, total=steps, desc=f"phase {phase + 1} epoch {epoch + 1}/{epochs}", leave=False,
                   dynamic_ncols=True)
        for step, batch in enumerate(bar):
            if step >= steps:
                break
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            images = standardize(batch["image"]).contiguous(memory_format=self.memory_format)
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                output = self.model(images, stages=max(stages) + 1)
            terms = joint_loss(output, batch["landmarks"], batch["landmark_mask"], batch["target"],
                               batch["emotion_mask"], loss_config, stages)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms.total).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if self.average is not None:
                self.average.update_parameters(self.model)
            n = images.shape[0]
            seen += n
            totals["loss"] += terms.total.item() * n
            totals["nme_inter_pupil"] += terms.landmark.item() * n
            totals["ce"] += terms.emotion.item() * n
            bar.set_postfix(loss=f"{totals['loss'] / seen:.3f}", nme_ip=f"{totals['nme_inter_pupil'] / seen:.3f}",
                            ce=f"{totals['ce'] / seen:.3f}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
        elapsed = time.perf_counter() - start
        return {f"train_{k}": v / max(seen, 1) for k, v in totals.items()} | {
            "epoch_seconds": elapsed, "train_images_per_second": seen / max(elapsed, 1e-9)}

    def evaluated_model(self) -> EmotionalDAN:
        """What validation scores and best.pt holds: the weight average where there is one."""
        return self.average.module if self.average is not None else self.model

    @torch.inference_mode()
    def validate(self, model: EmotionalDAN, stages: int) -> dict[str, Any]:
        """Emotion accuracy on every validation set (one pass, as the node runs) and landmark NME on the holdout.

        FER+ keeps the bare ``val_`` keys; other sets are ``val_<name>_accuracy`` / ``_macro_f1``. Batches
        are the training batch: on the 2-core CPU, batches of 256 took 2.2x as long per image as batches of
        64 (5.6 against 2.6 ms; 32 s of every epoch; not profiled further, likely the larger activations
        leaving the caches). The model runs with its BatchNorms folded, as the Predictor runs it (same
        outputs, a fifth less time).
        """
        model.eval()
        model = fold_batch_norms(model)
        result: dict[str, Any] = {}
        for name, dataset in self.valid_emotion.items():
            labels, predictions = [], []
            for batch in DataLoader(dataset, batch_size=self.config.batch_size, num_workers=self.config.workers):
                logits = model(standardize(batch["image"].to(self.device)), stages=stages).logits[stages - 1]
                if logits is None:
                    break
                predictions.append(logits.float().argmax(-1).cpu())
                labels.append(batch["label"])
            if predictions:
                summary = metrics.summarize(torch.cat(labels).numpy(), torch.cat(predictions).numpy(),
                                            classes=self.classes)
                prefix = "val_" if name == "ferplus" else f"val_{name}_"
                keys = ("accuracy", "macro_f1", "confusion", "per_class") if name == "ferplus" else ("accuracy",
                                                                                                    "macro_f1")
                result.update({f"{prefix}{k}": summary[k] for k in keys})
        if self.valid_landmarks is not None:
            predicted, truth = [], []
            for batch in DataLoader(self.valid_landmarks, batch_size=self.config.batch_size,
                                    num_workers=self.config.workers):
                output = model(standardize(batch["image"].to(self.device)), stages=stages)
                predicted.append(output.landmarks[stages - 1].float().cpu())
                truth.append(batch["landmarks"])
            summary = metrics.summarize(pred_landmarks=torch.cat(predicted).numpy(),
                                        gt_landmarks=torch.cat(truth).numpy())
            result.update({f"val_{k}": summary[k] for k in ("nme_inter_ocular", "nme_inter_pupil", "auc_0.08",
                                                             "failure_rate_0.08")})
        return result

    @staticmethod
    def _score(record: dict[str, Any], prefix: str = "val_") -> float:
        """Model selection: the mean emotion accuracy over the validation sets (each set counts once, so
        FER+ cannot outvote faces that are not FER's) minus the landmark inter-ocular NME."""
        accuracies = [v for k, v in record.items() if k.startswith(prefix) and k.endswith("accuracy")]
        mean = sum(accuracies) / len(accuracies) if accuracies else 0.0
        return mean - record.get(f"{prefix}nme_inter_ocular", 0.0)

    def _save(self, record: dict[str, Any], phase: int, epoch: int, optimizer, scheduler) -> None:
        extra = {"metrics": record, "history": self.history, "data": self.data_info,
                 "train_config": asdict(self.config), "precision": self.precision}
        average = {"average": self.average.state_dict()} if self.average is not None else {}
        save_checkpoint(self.out / "last.pt", self.model, phase=phase, epoch=epoch,
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        rng=torch.get_rng_state(), best_score=self.best_score, **average, **extra)
        final_phase = phase == len(self.phases()) - 1
        score = self._score(record)
        if final_phase and score > self.best_score:
            self.best_score = score
            save_checkpoint(self.out / "best.pt", self.evaluated_model(), **extra)
        (self.out / "metrics.json").write_text(json.dumps(self.history, indent=1))
        plot_training_curves(self.history, self.out / "curves.png")
        if "val_confusion" in record:
            plot_confusion(record["val_confusion"], self.out / "confusion.png")

    def _report(self, record: dict[str, Any]) -> None:
        parts = [f"phase {record['phase'] + 1} epoch {record['epoch']}",
                 f"{record['epoch_seconds']:.0f}s", f"{record['train_images_per_second']:.0f} img/s",
                 f"loss {record['train_loss']:.3f}"]
        if "val_accuracy" in record:
            parts.append(f"val acc {record['val_accuracy']:.4f} macro-F1 {record['val_macro_f1']:.4f}")
        for name in self.valid_emotion:
            if name != "ferplus" and f"val_{name}_accuracy" in record:
                parts.append(f"{name} {record[f'val_{name}_accuracy']:.4f}")
        if "val_nme_inter_ocular" in record:
            parts.append(f"NME io {100 * record['val_nme_inter_ocular']:.2f}%")
        parts.append(f"score {self._score(record):.4f}")
        if self.average is not None:
            parts.append(f"raw weights' score {self._score(record, 'raw_val_'):.4f}")
        tqdm.write(" | ".join(parts))

    def _initialise(self, path: str) -> None:
        """Fine-tuning: the weights of another run (same architecture), nothing of its schedule."""
        payload = read_checkpoint(path, check_crop=False)
        state = fp32_state(payload["state_dict"])
        if self.mean_shape is not None:
            state["mean_shape"] = self.mean_shape  # the canonical pose of this run's crops, not the old run's
        try:
            self.model.load_state_dict(state)
        except RuntimeError as error:
            raise CheckpointError(f"{path} does not fit the configured model: {error}") from error

    def _resume(self, path: str) -> None:
        """Continue an interrupted run from its last.pt: weights, optimiser, schedule position, history."""
        payload = read_checkpoint(path)
        if "optimizer" not in payload:
            raise CheckpointError(f"{path} holds no optimiser state: resume from a run's last.pt")
        self.model.load_state_dict(fp32_state(payload["state_dict"]))
        if self.average is not None:
            if "average" not in payload:
                raise CheckpointError(f"{path} holds no weight average: resume it without ema_decay")
            self.average.load_state_dict(payload["average"])
        self.history = list(payload.get("history", []))
        self.best_score = float(payload.get("best_score", -math.inf))
        phase, epoch = int(payload["phase"]), int(payload["epoch"])
        epochs = self.phases()[phase][1]
        self.start_phase, self.start_epoch = (phase, epoch) if epoch < epochs else (phase + 1, 0)
        self._resume_state = payload if epoch < epochs else None
        self._rng_state = payload["rng"]


def train(config: TrainConfig) -> dict[str, Any]:
    return Trainer(config).run()
