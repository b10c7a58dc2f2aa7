"""PNG figures without pyplot: a library must not switch the backend of whoever imports it.

``matplotlib.figure.Figure`` draws off-screen with Agg when saved, so no ``matplotlib.use`` call
and no global figure state are needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def new_figure(*grid: int, figsize: tuple[float, float], **subplots: Any) -> tuple[Figure, Any]:
    """A figure and its axes (``Figure.subplots`` arguments), for ``fig.savefig``."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **subplots)


def plot_confusion(confusion: dict[str, Any], path: str | Path, title: str = "confusion (rows: truth)") -> None:
    """Row-normalised confusion matrix with counts, from ``{"classes": [...], "matrix": [[...]]}``."""
    matrix = np.asarray(confusion["matrix"], dtype=float)
    classes = confusion["classes"]
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = new_figure(figsize=(1.0 + 0.75 * len(classes), 0.8 + 0.7 * len(classes)))
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
