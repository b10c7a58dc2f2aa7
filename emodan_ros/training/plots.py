"""PNG plots for training runs and evaluation reports (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Loss, validation accuracy / macro-F1 and landmark NME per epoch."""
    steps = np.arange(1, len(history) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(steps, [h.get("train_loss", np.nan) for h in history], label="train loss")
    axes[0].set_title("training loss")
    for key, label in (("val_accuracy", "accuracy"), ("val_macro_f1", "macro-F1")):
        axes[1].plot(steps, [h.get(key, np.nan) for h in history], marker="o", label=label)
    axes[1].set_title("FER+ validation (majority labels)")
    axes[1].legend()
    axes[2].plot(steps, [100 * h.get("val_nme_inter_ocular", np.nan) for h in history], marker="o",
                 label="inter-ocular")
    axes[2].plot(steps, [100 * h.get("val_nme_inter_pupil", np.nan) for h in history], marker="o",
                 label="inter-pupil")
    axes[2].set_title("landmark NME on held-out faces (%)")
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("epoch (all phases)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: dict[str, Any], path: str | Path, title: str = "confusion (rows: truth)") -> None:
    """Row-normalised confusion matrix with counts, from ``{"classes": [...], "matrix": [[...]]}``."""
    matrix = np.asarray(confusion["matrix"], dtype=float)
    classes = confusion["classes"]
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(classes), 0.8 + 0.7 * len(classes)))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
