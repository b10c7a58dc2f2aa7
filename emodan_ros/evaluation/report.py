"""Evaluation reports: report.md with PNG plots, and Grad-CAM saliency of the last DAN stage.

Saliency answers "which part of the face drove this decision": Grad-CAM (Selvaraju et al. 2017) on
the last convolution of the last stage, the stage whose emotion head gives the prediction. That
stage sees the face warped onto the mean shape, so its map is warped back into the crop with the
inverse of the same similarity transform before it is drawn over the crop with the landmarks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

from emodan_ros.model import geometry
from emodan_ros.faces.crop import CROP_SCALE, crop_matrix, to_gray
from emodan_ros.model.dan import standardize
from emodan_ros.evaluation.metrics import cumulative_error_curve, nme
from emodan_ros.evaluation.plots import new_figure, plot_confusion


def gradcam(model: torch.nn.Module, crops: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """Grad-CAM maps (N, S, S) in [0, 1], in crop pixels, for grey crops (N, S, S) uint8 and class indices."""
    device = next(model.parameters()).device
    stage = model.stages[-1]
    last_relu = [m for m in stage.features if isinstance(m, torch.nn.ReLU)][-1]
    captured: list[torch.Tensor] = []
    handle = last_relu.register_forward_hook(lambda _m, _i, output: captured.append(output))
    size = crops.shape[-1]
    try:
        with torch.enable_grad():
            x = standardize(torch.from_numpy(np.ascontiguousarray(crops)).float().unsqueeze(1).to(device))
            out = model(x)
            activation = captured[-1]
            logits = out.final_logits
            picked = logits[torch.arange(len(targets)), torch.as_tensor(list(targets), device=device)].sum()
            grad = torch.autograd.grad(picked, activation)[0]
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * activation).sum(dim=1, keepdim=True)).detach().float()
        cam = torch.nn.functional.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)
        if len(out.landmarks) > 1:  # the last stage saw the face warped onto the mean shape: undo it
            batch = cam.shape[0]
            mean = model.mean_shape.unsqueeze(0).expand(batch, -1, -1)
            to_mean = geometry.estimate_similarity(out.landmarks[-2].detach().float(), mean)
            cam = geometry.warp_image(cam, geometry.invert_transform(to_mean))
    finally:
        handle.remove()
    cam = cam[:, 0].cpu().numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    return np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0.0)


def face_crop(image: np.ndarray, box: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey crop (size, size) by the crop convention, and the image->crop matrix."""
    matrix = crop_matrix(np.asarray(box, np.float64), size, CROP_SCALE)
    crop = cv2.warpAffine(to_gray(image), matrix, (size, size), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)
    return crop, matrix


def pick_examples(records: Sequence[Any], pred: np.ndarray, n_classes: int, per_class: int,
                  ) -> dict[int, tuple[list[int], list[int]]]:
    """Per true class: indices of up to ``per_class`` correct and wrong records (most confident first)."""
    chosen: dict[int, tuple[list[int], list[int]]] = {}
    for c in range(n_classes):
        rows = [i for i, r in enumerate(records) if r.true == c and pred[i] >= 0 and r.box is not None]
        if not rows:
            continue
        rows.sort(key=lambda i: -float(records[i].probs[pred[i]]))
        correct = [i for i in rows if pred[i] == c][:per_class]
        wrong = [i for i in rows if pred[i] != c][:per_class]
        chosen[c] = (correct, wrong)
    return chosen


def plot_saliency(records: Sequence[Any], pred: np.ndarray, predictor: Any,
                  image_of: Callable[[Any], np.ndarray | None], path: Path, per_class: int) -> bool:
    """Grid: one row per true class, correct then wrong samples: crop, Grad-CAM, predicted landmarks."""
    classes = list(predictor.class_names)
    chosen = pick_examples(records, pred, len(classes), per_class)
    if not chosen or per_class <= 0:
        return False
    size = predictor.input_size
    cells: list[tuple[int, int, int, bool]] = []  # row, column, record index, correct
    for row, (c, (correct, wrong)) in enumerate(sorted(chosen.items())):
        for col, i in enumerate(correct):
            cells.append((row, col, i, True))
        for col, i in enumerate(wrong):
            cells.append((row, per_class + col, i, False))
    crops, matrices, keep = [], [], []
    for cell in cells:
        image = image_of(records[cell[2]])
        if image is None:
            continue
        crop, matrix = face_crop(image, records[cell[2]].box, size)
        crops.append(crop)
        matrices.append(matrix)
        keep.append(cell)
    if not keep:
        return False
    cams = gradcam(predictor.model, np.stack(crops), [int(pred[c[2]]) for c in keep])
    rows = len(chosen)
    fig, axes = new_figure(rows, 2 * per_class, figsize=(2.0 * 2 * per_class, 2.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for (row, col, i, correct), crop, matrix, cam in zip(keep, crops, matrices, cams):
        ax = axes[row, col]
        r = records[i]
        ax.imshow(crop, cmap="gray", vmin=0, vmax=255)
        ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
        if r.landmarks is not None:
            pts = np.asarray(r.landmarks, np.float64) @ matrix[:, :2].T + matrix[:, 2]
            ax.scatter(pts[:, 0], pts[:, 1], s=3, c="yellow", linewidths=0)
        ax.set_xlim(-0.5, size - 0.5)  # points outside the crop must not shrink it
        ax.set_ylim(size - 0.5, -0.5)
        ax.set_title(f"{'OK' if correct else 'WRONG'} {classes[r.true]}->{classes[pred[i]]}\n"
                     f"p={float(r.probs[pred[i]]):.2f}", fontsize=7, color="green" if correct else "red")
    fig.suptitle("Grad-CAM of the last stage for the predicted class (rows: true class; "
                 f"left {per_class}: correct, right {per_class}: wrong)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    return True


def plot_per_class(per_class: dict[str, dict[str, float]], path: Path) -> None:
    names = list(per_class)
    x = np.arange(len(names))
    fig, ax = new_figure(figsize=(1.2 + 0.9 * len(names), 3.4))
    for k, key in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (k - 1) * 0.27, [per_class[n][key] for n in names], 0.27, label=key)
    ax.set_xticks(x, [f"{n}\n(n={per_class[n]['n']})" for n in names], fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("per-class precision / recall / F1")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_ced(errors: np.ndarray, path: Path, threshold: float = 0.08) -> None:
    thresholds, fraction = cumulative_error_curve(errors, threshold)
    fig, ax = new_figure(figsize=(4.5, 3.4))
    ax.plot(thresholds * 100, fraction)
    ax.set_xlabel("NME, inter-ocular (%)")
    ax.set_ylabel("fraction of faces")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"cumulative error (n={len(errors)})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if not np.isfinite(value) else f"{value:.4f}"
    return str(value)


def metrics_table(metrics: dict[str, Any], keys: Sequence[str]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(metrics[k])} |" for k in keys if k in metrics]
    return "\n".join(lines)


SUMMARY_KEYS = ("n_images", "n", "accuracy", "macro_f1", "accuracy_counting_misses", "detection_rate",
                "n_faces_found", "n_unlabelled", "n_unknown_class", "n_unreadable", "nme_inter_ocular",
                "nme_inter_pupil", "auc_0.08", "failure_rate_0.08", "n_landmarks")


def write_report(out_dir: Path, metrics: dict[str, Any], records: Sequence[Any], pred: np.ndarray,
                 predictor: Any, image_of: Callable[[Any], np.ndarray | None], title: str,
                 saliency_per_class: int = 2, extra_sections: Sequence[str] = ()) -> None:
    """report.md + confusion.png, per_class.png, ced.png (with landmarks), saliency.png."""
    out_dir = Path(out_dir)
    parts = [f"# {title}", "", f"Model: `{metrics.get('model', '')}` (classes: {', '.join(predictor.class_names)})",
             ""]
    if metrics.get("notes"):
        parts += ["**Notes:**", ""] + [f"- {n}" for n in metrics["notes"]] + [""]
    parts += ["## Summary", "", metrics_table(metrics, SUMMARY_KEYS), ""]
    if metrics.get("restricted_to"):
        parts += [f"Argmax restricted to the dataset's classes: {', '.join(metrics['restricted_to'])}.", ""]
    if metrics.get("unknown_classes"):
        parts += ["Images of classes the model does not know (not scored): "
                  + ", ".join(f"{k}: {v}" for k, v in metrics["unknown_classes"].items()), ""]
    mapping = {k: v for k, v in metrics.get("class_mapping", {}).items() if k != v}
    if mapping:
        parts += ["Dataset classes mapped by name to model classes: "
                  + ", ".join(f"{k} -> {v}" for k, v in mapping.items()), ""]
    if metrics.get("unreadable"):
        parts += [f"Unreadable images ({metrics.get('n_unreadable')}, first shown): "
                  + ", ".join(f"`{p}`" for p in metrics["unreadable"][:10]), ""]
    parts += list(extra_sections)
    if metrics.get("confusion") and metrics.get("n", 0) > 0:
        plot_confusion(metrics["confusion"], out_dir / "confusion.png")
        plot_per_class(metrics["per_class"], out_dir / "per_class.png")
        parts += ["## Classes", "", "![confusion](confusion.png)", "", "![per class](per_class.png)", "",
                  "| class | precision | recall | F1 | n |", "|---|---|---|---|---|"]
        parts += [f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['n']} |"
                  for c, v in metrics["per_class"].items()]
        parts.append("")
    with_lm = [r for r in records if r.landmarks is not None and r.gt_landmarks is not None]
    if with_lm:
        errors = nme(np.stack([r.landmarks for r in with_lm]), np.stack([r.gt_landmarks for r in with_lm]))
        plot_ced(errors, out_dir / "ced.png")
        parts += ["## Landmarks", "", "![cumulative error](ced.png)", ""]
    if saliency_per_class > 0 and hasattr(predictor, "model"):
        if plot_saliency(records, pred, predictor, image_of, out_dir / "saliency.png", saliency_per_class):
            parts += ["## What the model looked at", "",
                      "Grad-CAM of the last stage for the predicted class (red = most influence), with the "
                      "predicted landmarks (yellow), for the most confident correct and wrong predictions of "
                      "each true class.", "", "![saliency](saliency.png)", ""]
    parts += ["Files: `metrics.json`, `predictions.csv`.", ""]
    (out_dir / "report.md").write_text("\n".join(parts))
