"""`emodan bench`'s outputs: bench.json, a Markdown table per kind of row, and the speed/accuracy plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 2, scale: float = 1.0) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _latency(row: dict[str, Any], batch: int) -> str:
    t = row[f"batch{batch}"]
    return f"{t['median_ms'] / batch:.2f} [{t['p25_ms'] / batch:.2f}-{t['p75_ms'] / batch:.2f}]"


def _model_table(rows: list[dict[str, Any]], metric: str, label: str, scale: float, ratio_key: str) -> list[str]:
    lines = [f"| row | {label} | vs peer | ms/face b1 [IQR] | ms/face b8 [IQR] | faces/s (b8) "
             "| latency ratio b1 / b8 | peak RSS MiB | note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['row']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        ratio = (f"{r['latency_ratio_b1']}x / {r['latency_ratio_b8']}x" if "latency_ratio_b1" in r
                 else ("peer (1x)" if r["kind"] == "peer" else "n/a"))
        lines.append(f"| {r['row']} | {_f(r.get(metric), 2 if scale > 1 else 4, scale)} "
                     f"| {r.get(ratio_key, 'n/a') if r['kind'] != 'peer' else '-'} | {_latency(r, 1)} | {_latency(r, 8)} "
                     f"| {r['faces_per_s']} | {ratio} | {_f(r['peak_rss_mib'], 1)} | {r.get('note', '')} |")
    return lines


def _found_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| row | faces found | NME on own found faces | NME on common faces | failures > 8% |",
             "|---|---|---|---|---|"]
    for r in rows:
        if "found" in r:
            lines.append(f"| {r['row']} | {r['n_found']}/{r['n']} | {_f(r.get('nme_inter_ocular_found'), 4)} "
                         f"| {_f(r.get('nme_inter_ocular'), 4)} ({r.get('n_common', 0)}) "
                         f"| {_f(r.get('failure_rate_0.08'), 3)} |")
    return lines


def _frames_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["## Emotion on photos (frame path: detector, crop, model; fer on the same face box)", "",
             "Accuracy over all images (no face = wrong), argmax over the dataset's classes.", "",
             "| set | row | accuracy % | face found | lowest class recall | per-class recall |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        recall = ", ".join(f"{c} {100 * v:.0f}" for c, v in r["per_class_recall"].items())
        lines.append(f"| {r['set']} | {r['row']} | {100 * r['accuracy']:.1f} | {r['face_found']:.3f} "
                     f"| {_f(r['min_class_recall'], 1, 100.0)} | {recall} |")
    return lines + [""]


def markdown(report: dict[str, Any]) -> str:
    m, d = report["machine"], report["data"]
    lines = [
        "# emodan bench", "",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']} with {m['torch_threads']} threads, "
        f"GPU: {m['gpu'] or 'none'}; 1-min load average at the end {m['load_average_1min']}.",
        f"Model: `{report['model']}`. Latency: median [25th-75th percentile] over up to "
        f"{report['settings']['repeats']} calls ({report['settings']['time_budget_s']:.0f} s budget per "
        "measurement), divided by the batch size. Latency ratio = ours / peer (> 1: slower than the peer). "
        "Peak RSS: growth of the process's peak resident memory while running batch 8 three times.", "",
        f"## Emotion: {d['ferplus']} ({d['n_emotion']} images, majority labels)", "",
        f"Accuracy on the {', '.join(d['shared_classes'])} images (fer has no contempt; argmax over these "
        "classes only); ours on all 8 FER+ classes in the JSON (`accuracy_all`). vs peer: accuracy points.", "",
        *_model_table(report["emotion"], "accuracy_shared", "accuracy % (shared classes)", 100.0,
                      "accuracy_points_vs_peer"), "",
        f"## Landmarks: {d['n_landmarks']} 300-W faces ({d['landmark_files']})", "",
        "Inter-ocular NME (lower is better) on the faces both tools' own detectors found (ours: the node's "
        "BlazeFace; dlib: its HOG detector); vs peer: NME ratio ours / dlib. Batch 8 = 8 faces in one "
        "frame (dlib: 8 calls).", "",
        *_model_table(report["landmarks"], "nme_inter_ocular", "NME", 1.0, "nme_ratio_vs_peer"), "",
        *_found_table(report["landmarks"]), "",
        *_frames_table(report.get("frames", [])),
        "## Detection (on the same 300-W images)", "",
        "| detector | recall (IoU>=0.5) | other boxes/image | ms/image [IQR] | median image side px |",
        "|---|---|---|---|---|",
    ]
    for r in report["detection"]:
        if "skipped" in r:
            lines.append(f"| {r['row']} | skipped: {r['skipped']} | | | |")
        else:
            t = r["ms_per_image"]
            lines.append(f"| {r['row']} | {r['recall_iou50']:.3f} | {r['other_boxes_per_image']:.3f} "
                         f"| {t['median_ms']:.1f} [{t['p25_ms']:.1f}-{t['p75_ms']:.1f}] | {r['median_image_side_px']} |")
    lines += ["", "## Node end to end (emodan_ros.bench.node: 640x480 frames at 15 fps over DDS)", "",
              "| faces/frame | latency p50 / p90 ms | growth vs 1 face | results/s | processed share "
              "| node CPU % of one core | node RSS max MiB |", "|---|---|---|---|---|---|---|"]
    for r in report["node"]:
        if "skipped" in r:
            lines.append(f"| {r['row']} | skipped: {r['skipped']} | | | | | |")
        else:
            lat = r["latency_ms"]
            lines.append(f"| {r['faces_in_frame']} | {lat['p50']} / {lat['p90']} | {r.get('growth_vs_1_face', 'n/a')} "
                         f"| {r['throughput_hz']} | {r['processed_share']} | {r['node_cpu_percent_of_one_core']} "
                         f"| {r['node_rss_mib']['max']} |")
    lines += ["", "## CUDA", ""]
    if report["cuda"] and "skipped" in report["cuda"][0]:
        lines.append(f"Skipped: {report['cuda'][0]['skipped']}.")
    else:
        lines += ["| row | batch | ms/face | faces/s | peak CUDA MiB |", "|---|---|---|---|---|"]
        lines += [f"| {r['row']} | {r['batch']} | {r['ms_per_face']} | {r['faces_per_s']} | {r['peak_cuda_mib']} |"
                  for r in report["cuda"]]
    return "\n".join(lines) + "\n"


def plot_frontier(report: dict[str, Any], path: str | Path) -> None:
    """Accuracy (emotion) and NME (landmarks) against per-face latency at batch 1, one point per row."""
    from emodan_ros.evaluation.plots import new_figure

    fig, axes = new_figure(1, 2, figsize=(12, 4.5))
    panels = ((axes[0], report["emotion"], "accuracy_shared", 100.0, "emotion accuracy % (shared classes)"),
              (axes[1], report["landmarks"], "nme_inter_ocular", 1.0, "landmark NME, inter-ocular (lower is better)"))
    for ax, rows, metric, scale, ylabel in panels:
        for k, row in enumerate(rows):
            if "skipped" in row:
                continue
            x = row["ms_per_face_b1"]
            color = "tab:red" if row["kind"] == "peer" else "tab:blue"
            if row.get(metric) is None:
                ax.axvline(x, color=color, linestyle=":", alpha=0.6)
                ax.annotate(f"{row['row']} (speed only)", (x, 0.5), xycoords=("data", "axes fraction"),
                            rotation=90, fontsize=7, va="center")
                continue
            ax.scatter([x], [row[metric] * scale], color=color)
            ax.annotate(row["row"], (x, row[metric] * scale), fontsize=7, xytext=(4, 4 - 10 * (k % 3)),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"ms per face, batch 1 ({report['machine']['cpu']})", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle("emodan bench: speed/accuracy (blue: ours, red: peers)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_outputs(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "png": out / "frontier.png"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(markdown(report))
    plot_frontier(report, paths["png"])
    return paths
