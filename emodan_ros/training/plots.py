"""PNG plots of training runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emodan_ros.evaluation.plots import new_figure


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Loss, validation accuracy / macro-F1 and landmark NME per epoch (dashed: the trained weights where the
    run validates a weight average)."""
    steps = np.arange(1, len(history) + 1)
    fig, axes = new_figure(1, 3, figsize=(13, 3.6))
    axes[0].plot(steps, [h.get("train_loss", np.nan) for h in history], label="train loss")
    axes[0].set_title("training loss")
    for key, label in (("val_accuracy", "accuracy"), ("val_macro_f1", "macro-F1")):
        axes[1].plot(steps, [h.get(key, np.nan) for h in history], marker="o", label=label)
    if any("raw_val_accuracy" in h for h in history):  # ema_decay: the trained weights beside their average
        axes[1].plot(steps, [h.get("raw_val_accuracy", np.nan) for h in history], ls="--",
                     label="accuracy, trained weights")
    axes[1].set_title("FER+ validation (majority labels)")
    axes[1].legend()
    axes[2].plot(steps, [100 * h.get("val_nme_inter_ocular", np.nan) for h in history], marker="o",
                 label="inter-ocular")
    axes[2].plot(steps, [100 * h.get("val_nme_inter_pupil", np.nan) for h in history], marker="o",
                 label="inter-pupil")
    if any("raw_val_nme_inter_ocular" in h for h in history):
        axes[2].plot(steps, [100 * h.get("raw_val_nme_inter_ocular", np.nan) for h in history], ls="--",
                     label="inter-ocular, trained weights")
    axes[2].set_title("landmark NME on held-out faces (%)")
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("epoch (all phases)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
