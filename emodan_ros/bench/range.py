"""`emodan bench-detectors`: every detector of the node on the same range frames, side by side.

Why: the detector decides which faces the node can see at all; this measures, on frames built
by ``range_frames`` with exact truth boxes, recall by face size (24-320 px) in 640x480 and
1280x720 frames, false faces per face-free frame and ms per frame (median, p90), with ratios to
Haar (the old default) from the same run. Detectors run one after another on each frame, in one
process, single-threaded (OpenCV's pool set to 1 thread; LiteRT at 1 thread), so load from
other processes hits them alike. Writes ``detectors.json`` and ``detectors.md`` to ``--out``.

Detector specs: a name of ``DETECTOR_NAMES`` with optional constructor settings, e.g.
``blaze:fine_side=448,score_threshold=0.75`` or ``haar:max_side=640``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from emodan_ros.bench import range_frames as rf

GROUPS = ("frontal", "three_quarter", "rot<15", "rot15-30") + rf.EXPOSURES


def add_args(parser: argparse.ArgumentParser) -> None:
    """The command's options (also used by tests with tiny values)."""
    from emodan_ros.faces.detector import DETECTOR_NAMES

    parser.add_argument("--out", required=True, help="folder for detectors.json and detectors.md")
    parser.add_argument("--detectors", default=";".join(DETECTOR_NAMES),
                        help="';'-separated specs NAME[:key=value,...] (default: every detector; "
                             "those that cannot load are reported as skipped)")
    parser.add_argument("--faces", nargs="*", default=[],
                        help="folders of .pts + images (e.g. 300-W) as face sources; default: "
                             "skimage's astronaut with synthetic variations")
    parser.add_argument("--pts-offset", type=float, default=1.0, help="subtracted from .pts values (iBUG: 1)")
    parser.add_argument("--max-face-sources", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=40, help="face frames per frame size")
    parser.add_argument("--negatives", type=int, default=40, help="face-free frames per frame size")
    parser.add_argument("--frame-sizes", default="640x480,1280x720", help="comma list of WxH")
    parser.add_argument("--sizes", default=",".join(map(str, rf.SIZES)), help="face widths [px]")
    parser.add_argument("--yunet-model", default="", help="ONNX file for the yunet detector")
    parser.add_argument("--seed", type=int, default=0)


def _parse_value(v: str) -> Any:
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def build_detector(spec: str, yunet_model: str = "") -> Any:
    """A detector from ``NAME[:key=value,...]``: ``make_detector`` (as the node builds it) when
    no settings are given, else the detector's class with those constructor arguments."""
    from emodan_ros.faces import detector as det

    name, _, rest = spec.partition(":")
    kw = {k: _parse_value(v) for k, v in (item.split("=", 1) for item in rest.split(",") if item)}
    if not kw:
        return det.make_detector(name, model_path=yunet_model if name == "yunet" else "")
    if name == "blaze":
        from emodan_ros.faces.blazeface import BlazeFaceDetector

        return BlazeFaceDetector(**kw)
    classes = {"haar": det.HaarDetector, "dlib": det.DlibDetector, "yunet": det.YuNetDetector}
    if name not in classes:
        raise det.DetectorError(f"unknown detector {name!r}")
    return classes[name](**({"model_path": yunet_model} if name == "yunet" else {}), **kw)


def _frame_sizes(text: str) -> list[tuple[int, int]]:
    return [(int(w), int(h)) for w, h in (fs.lower().split("x") for fs in text.split(",") if fs)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the frames, run every detector on each, return the report (also written to --out)."""
    import cv2
    from tqdm import tqdm

    from emodan_ros.faces.detector import DetectorError

    cv2.setNumThreads(1)
    rng = np.random.default_rng(args.seed)
    faces = (rf.folder_faces(args.faces, args.max_face_sources, rng, args.pts_offset)
             if args.faces else rf.synthetic_faces())
    bgs = rf.load_backgrounds()
    sizes = tuple(int(s) for s in args.sizes.split(",") if s)
    frame_sizes = _frame_sizes(args.frame_sizes)
    dets, skipped = {}, {}
    for spec in (s.strip() for s in args.detectors.split(";") if s.strip()):
        try:
            dets[spec] = build_detector(spec, args.yunet_model)
        except (DetectorError, TypeError, ValueError) as error:
            skipped[spec] = str(error)
    raw = {n: {"faces": [], "neg": [], "ms": {}} for n in dets}
    load_start = os.getloadavg()[0]
    jobs = [(w, h, k, pos) for pos, n in ((True, args.frames), (False, args.negatives))
            for w, h in frame_sizes for k in range(n)]
    for w, h, k, pos in tqdm(jobs, desc="range frames", unit="frame", file=sys.stderr):
        fr = rf.make_frame(w, h, faces, bgs, rng, k, sizes=sizes if pos else ())
        fs = f"{w}x{h}"
        for name, d in dets.items():
            t = time.perf_counter()
            boxes, _ = d.detect(fr.bgr)
            raw[name]["ms"].setdefault(fs, []).append(1000 * (time.perf_counter() - t))
            hit, extra = rf.match(fr.boxes, boxes)
            if pos:
                raw[name]["faces"] += [(fs, int(fr.sizes[i]), bool(fr.yaw34[i]), float(abs(fr.angles[i])),
                                        fr.exposure, bool(hit[i])) for i in range(len(hit))]
            else:
                raw[name]["neg"].append((fs, fr.background, extra))
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "load_average_start": round(load_start, 2), "load_average_end": round(os.getloadavg()[0], 2),
                    "threads": 1},
        "settings": {"frames": args.frames, "negatives": args.negatives, "frame_sizes": [f"{w}x{h}" for w, h in frame_sizes],
                     "sizes": list(sizes), "face_sources": len(faces),
                     "three_quarter_sources": int(sum(f.yaw34 for f in faces)),
                     "faces_from": "folders" if args.faces else "astronaut (synthetic variations)", "seed": args.seed},
        "detectors": {n: summarise(r, frame_sizes, sizes) for n, r in raw.items()},
        "skipped": skipped,
    }
    add_ratios(report["detectors"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "detectors.json").write_text(json.dumps(report, indent=1))
    (out / "detectors.md").write_text(markdown(report))
    return report


def _mean(xs: list[Any]) -> float | None:
    return float(np.mean(xs)) if xs else None


def summarise(r: dict[str, Any], frame_sizes: list[tuple[int, int]], sizes: tuple[int, ...]) -> dict[str, Any]:
    """Recall by frame and face size, by group (faces >= 32 px), false faces, ms per frame."""
    faces, out = r["faces"], {"recall": {}, "n": {}, "ms": {}, "fp_per_negative_frame": {}}
    for w, h in frame_sizes:
        fs = f"{w}x{h}"
        out["recall"][fs] = {str(s): _mean([f[5] for f in faces if f[0] == fs and f[1] == s]) for s in sizes}
        out["n"][fs] = {str(s): sum(1 for f in faces if f[0] == fs and f[1] == s) for s in sizes}
        ms = r["ms"].get(fs, [])
        out["ms"][fs] = ({"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90))} if ms else None)
        out["fp_per_negative_frame"][fs] = _mean([e for f, _, e in r["neg"] if f == fs])
    big = [f for f in faces if f[1] >= 32]
    tests = {"frontal": lambda f: not f[2], "three_quarter": lambda f: f[2],
             "rot<15": lambda f: f[3] < 15, "rot15-30": lambda f: f[3] >= 15}
    tests.update({e: (lambda f, e=e: f[4] == e) for e in rf.EXPOSURES})
    out["recall_by_group"] = {g: {"recall": _mean([f[5] for f in big if fn(f)]),
                                  "n": sum(1 for f in big if fn(f))} for g, fn in tests.items()}
    out["recall_32_up"] = _mean([f[5] for f in big])
    out["fp_per_negative_frame_all"] = _mean([e for *_, e in r["neg"]])
    by_bg: dict[str, list[int]] = {}
    for _, bg, e in r["neg"]:
        by_bg.setdefault(bg, []).append(e)
    out["fp_by_background"] = {bg: float(np.mean(v)) for bg, v in sorted(by_bg.items()) if np.mean(v) > 0}
    return out


def add_ratios(detectors: dict[str, dict[str, Any]]) -> None:
    """Each detector's recall (faces >= 32 px) and median ms as multiples of Haar's in this run."""
    haar = next((d for n, d in detectors.items() if n.split(":")[0] == "haar"), None)
    for d in detectors.values():
        if haar is None:
            d["vs_haar"] = None
            continue
        rec = (d["recall_32_up"] / haar["recall_32_up"]) if haar["recall_32_up"] else None
        ms = {fs: (d["ms"][fs]["median"] / haar["ms"][fs]["median"]) if d["ms"][fs] and haar["ms"][fs] else None
              for fs in d["ms"]}
        d["vs_haar"] = {"recall_32_up": rec, "ms_median": ms}


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _x(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: one recall table per frame size, then groups and false faces."""
    m, s, dets = report["machine"], report["settings"], report["detectors"]
    lines = ["# emodan bench-detectors", "",
             f"{m['cpu_count']} CPUs, one thread per detector, load average {m['load_average_start']} at the start, "
             f"{m['load_average_end']} at the end. {s['frames']} face frames and {s['negatives']} face-free "
             f"frames per frame size; faces from {s['faces_from']} ({s['face_sources']} sources, "
             f"{s['three_quarter_sources']} three-quarter); seed {s['seed']}.", ""]
    for fs in s["frame_sizes"]:
        n = next(iter(dets.values()))["n"][fs] if dets else {}
        lines += [f"## {fs} frames: recall by face width (faces per size: "
                  + ", ".join(f"{k}: {v}" for k, v in n.items()) + ")", "",
                  "| detector | " + " | ".join(f"{k} px" for k in n) + " | FP / face-free frame "
                  "| ms median | ms p90 | ms vs haar |",
                  "|---|" + "---|" * (len(n) + 4)]
        for name, d in dets.items():
            ms, ratio = d["ms"][fs], (d["vs_haar"] or {}).get("ms_median", {}).get(fs)
            lines.append(f"| {name} | " + " | ".join(_f(d["recall"][fs][k]) for k in n)
                         + f" | {_f(d['fp_per_negative_frame'][fs], 3)} | {_f(ms and ms['median'], 1)} "
                         f"| {_f(ms and ms['p90'], 1)} | {_x(ratio)} |")
        lines.append("")
    lines += ["## Faces >= 32 px, both frame sizes: recall by group", "",
              "| detector | all | vs haar | " + " | ".join(GROUPS) + " | FP / face-free frame |",
              "|---|" + "---|" * (len(GROUPS) + 3)]
    for name, d in dets.items():
        g = d["recall_by_group"]
        lines.append(f"| {name} | {_f(d['recall_32_up'])} | {_x((d['vs_haar'] or {}).get('recall_32_up'))} | "
                     + " | ".join(f"{_f(g[k]['recall'])} ({g[k]['n']})" for k in GROUPS)
                     + f" | {_f(d['fp_per_negative_frame_all'], 3)} |")
    lines += ["", "False faces per face-free frame by background (backgrounds with any):", ""]
    lines += [f"- {name}: " + (", ".join(f"{bg} {v:.2f}" for bg, v in d["fp_by_background"].items()) or "none")
              for name, d in dets.items()]
    lines += [f"- skipped {name}: {why}" for name, why in report["skipped"].items()]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    report = run(args)
    sys.stdout.write(markdown(report))
    print(f"wrote {Path(args.out) / 'detectors.json'} and detectors.md", file=sys.stderr)
    return 0
