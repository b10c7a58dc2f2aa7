"""`emodan bag make|eval`: the node scored on bags, with a report a person can read.

A bag that cannot be read to the end is scored on what was read, and the report says how many of
its messages that was.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from emodan_ros.bags.make import make_bag
from emodan_ros.bags.modes import LiveSettings, fetch_images, resolve_inputs, run_live, run_offline, run_recorded
from emodan_ros.bags.scoring import join_records, plot_timeline, stability, timing
from emodan_ros.compat import find_default_model
from emodan_ros.evaluation.evaluate import score
from emodan_ros.faces.config import PipelineConfig, settings_of
from emodan_ros.evaluation.records import json_safe, write_predictions
from emodan_ros.io.bag_salvage import ReadStatus
from emodan_ros.model.device import set_torch_threads


def evaluate_bag(bag: str, out: str, mode: str = "offline", model: str | None = None, device: str = "auto",
                 precision: str = "fp32", restrict: bool = False, image_topic: str | None = None,
                 truth_topic: str | None = None, truth_landmarks_topic: str | None = None,
                 truth_csv: str | None = None, stamp_tolerance: float = 0.001, pred_topic: str | None = None,
                 pred_landmarks_topic: str | None = None, detector: str = "blaze", detector_model: str = "",
                 detector_max_side: int = 0, pipeline_settings: dict[str, Any] | None = None,
                 live: LiveSettings | None = None, saliency_per_class: int = 2, predictor: Any = None,
                 flip_average: bool = False) -> dict[str, Any]:
    """Score the node on a bag; writes metrics.json, predictions.csv, report.md (+ plots) into ``out``."""
    from emodan_ros.evaluation.report import pick_examples, write_report

    if mode not in ("offline", "live", "recorded"):
        raise ValueError(f"mode must be offline, live or recorded, not {mode!r}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = resolve_inputs(bag, image_topic, truth_topic, truth_landmarks_topic, truth_csv,
                            need_images=mode != "recorded")
    status = ReadStatus()
    pipeline_settings = dict(pipeline_settings or {})
    extra: dict[str, Any] = {}
    sent_stamps: list[int] | None = None
    if mode == "offline":
        if predictor is None:
            from emodan_ros.model.predictor import Predictor

            predictor = Predictor.from_checkpoint(model or find_default_model(), device=device, precision=precision,
                                                  flip_average=flip_average)
        from emodan_ros.evaluation.evaluate import make_eval_detector
        from emodan_ros.faces.pipeline import EmotionPipeline

        # Offline replays as fast as the CPU allows: the detector runs in line, so a score does not
        # depend on the machine's speed (detect_async applies to --mode live, where the node runs).
        pipeline = EmotionPipeline(predictor, make_eval_detector(detector, detector_max_side, detector_model),
                                   PipelineConfig(**{**pipeline_settings, "detect_async": False}))
        frames, extra = run_offline(bag, inputs, pipeline, status)
        names = tuple(predictor.class_names)
    elif mode == "live":
        if detector == "full":
            raise ValueError("the node has no 'full' detector: use blaze, haar, dlib or yunet with --mode live")
        settings = live or LiveSettings()
        if not settings.node_running:
            settings.model = settings.model or model or str(find_default_model())
        settings.node_params = {"detector": detector, "detector_max_side": detector_max_side,
                                "device": device, "precision": precision, "flip_average": flip_average,
                                **({"detector_model_path": detector_model} if detector_model else {}),
                                **pipeline_settings, **settings.node_params}
        frames, names, sent_stamps, live_info = run_live(bag, inputs, settings, out_dir, status)
        extra.update(live_info)
    else:
        frames, names, sent_stamps = run_recorded(bag, inputs, pred_topic, pred_landmarks_topic, status)
        extra["timing"] = timing(frames, sent_stamps)
    if not names:  # no face in any frame: the vocabulary comes from the model, else the messages' default
        names = _model_classes(live.model if live and live.model else model)
        extra.setdefault("notes", []).append("the node reported no face in any frame")
    records, vocabulary, missing = join_records(frames, inputs.truths, names, int(stamp_tolerance * 1e9))
    scored = score(records, names, vocabulary, restrict)
    metrics = scored.metrics
    metrics.update({"mode": mode, "bag": str(bag), "image_topic": inputs.image_topic,
                    "truth": truth_csv or inputs.truth_topic, "model_classes": list(names),
                    "truth_frames_without_output": missing, "messages_read": status.read,
                    "messages_in_bag": status.expected, "stability": stability(frames, names), **extra})
    labels = [inputs.truths[k].label for k in sorted(inputs.truths) if inputs.truths[k].label]
    span = (max(inputs.truths) - min(inputs.truths)) / 1e9 if inputs.truths else 0.0
    # reference: how often the truth itself changes (a bag made from a dataset changes person every frame)
    metrics["stability"]["truth_flips_per_second"] = (
        sum(1 for a, b in zip(labels, labels[1:]) if a != b) / span if span > 0 else None)
    if predictor is not None:
        metrics["model"] = str(getattr(predictor, "source", ""))
    elif live is not None and live.model:
        metrics["model"] = live.model
    if mode == "offline":
        metrics["pipeline"] = {"detector": detector, **pipeline_settings}
    notes = extra.pop("notes", []) + ([status.note()] if status.note() else [])
    if not inputs.truths:
        notes.append("no ground truth (topic or CSV): predictions, stability and timing only")
    metrics["notes"] = notes
    write_predictions(out_dir / "predictions.csv", records, scored.pred, names, key_name="stamp_ns")
    plot_timeline(records, names, out_dir / "timeline.png")
    sections = _bag_sections(metrics)
    (out_dir / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
    images: dict[int, np.ndarray] = {}
    if predictor is not None and saliency_per_class > 0 and inputs.image_topic:
        chosen = pick_examples(records, scored.pred, len(names), saliency_per_class)
        wanted = {records[i].stamp_ns for correct, wrong in chosen.values() for i in correct + wrong}
        images = fetch_images(bag, inputs.image_topic, inputs.meta[inputs.image_topic][0], wanted)

    class _Names:  # write_report needs class names (and a model for saliency) only
        class_names = names

    write_report(out_dir, metrics, records, scored.pred, predictor if predictor is not None else _Names(),
                 image_of=lambda r: images.get(r.stamp_ns), title=f"Bag evaluation ({mode}): {bag}",
                 saliency_per_class=saliency_per_class if predictor is not None else 0, extra_sections=sections)
    return metrics


def _model_classes(model: str | None) -> tuple[str, ...]:
    """Class names a checkpoint was trained with (FER+ when no checkpoint is known: the messages' vocabulary)."""
    from emodan_ros.faces.classes import FERPLUS_CLASSES

    if not model:
        return tuple(FERPLUS_CLASSES)
    from emodan_ros.model.checkpoint import read_checkpoint

    return tuple(read_checkpoint(model)["config"].get("class_names", FERPLUS_CLASSES))


def _bag_sections(metrics: dict[str, Any]) -> list[str]:
    parts = ["## Stream", "", "![timeline](timeline.png)", ""]
    lines = ["| figure | value |", "|---|---|",
             f"| mode | {metrics['mode']} |",
             f"| messages read / in bag (scored topics) | {metrics['messages_read']} / {metrics['messages_in_bag']} |",
             f"| truth frames without any output | {metrics['truth_frames_without_output']} |"]
    stab = metrics["stability"]
    flips = stab["label_flips_per_second"]
    lines.append(f"| faces tracked | {stab['faces_tracked']} |")
    lines.append(f"| label flips per second (all faces) | {'-' if flips is None else f'{flips:.3f}'} |")
    truth_flips = stab.get("truth_flips_per_second")
    if truth_flips is not None:
        lines.append(f"| truth label changes per second (reference) | {truth_flips:.3f} |")
    t = metrics.get("timing", {})
    if "latency_ms" in t:
        lat = t["latency_ms"]
        lines.append("| latency ms p50 / p90 / p95 / p99 / max | "
                     + " / ".join(f"{lat[k]:.1f}" for k in ("p50", "p90", "p95", "p99", "max")) + " |")
    for key, label in (("input_rate_hz", "input rate (Hz)"), ("output_rate_hz", "output rate (Hz)"),
                       ("frames_in", "frames in"), ("frames_out", "frames out"),
                       ("dropped_ratio", "dropped-frame ratio")):
        if t.get(key) is not None:
            value = t[key]
            lines.append(f"| {label} | {value:.3f} |" if isinstance(value, float) else f"| {label} | {value} |")
    if metrics.get("processing_ms"):
        p = metrics["processing_ms"]
        lines.append(f"| pipeline ms per frame p50 / p90 / p99 (offline) | {p['p50']:.1f} / {p['p90']:.1f} / "
                     f"{p['p99']:.1f} |")
    if metrics.get("bad_frames"):
        lines.append(f"| undecodable frames | {metrics['bad_frames']} |")
    return parts + lines + [""]


def main(args: Any) -> int:
    if args.bag_command == "make":
        result = make_bag(args.data, args.format, args.out, storage=args.storage, rate=args.rate,
                          image_topic=args.image_topic, frame_id=args.frame_id, compressed=args.compressed,
                          encoding=args.encoding, frame_size=args.frame_size, face_fraction=args.face_fraction,
                          limit=args.limit, usage=args.usage, pts_offset=args.pts_offset, start=args.start,
                          truth_prefix=args.truth_prefix)
        print(json.dumps(result))
        return 0
    set_torch_threads(args.torch_threads)
    pipeline_settings = {name: getattr(args, name) for name in settings_of(PipelineConfig)}
    live = LiveSettings(model=args.model, speed=args.speed, warmup_frames=args.warmup_frames,
                        node_running=args.node_running, namespace=args.node_namespace,
                        startup_timeout=args.startup_timeout, drain_timeout=args.drain_timeout, storage=args.storage,
                        node_params={"torch_threads": args.torch_threads} if args.torch_threads > 0 else {})
    metrics = evaluate_bag(args.bag, args.out, args.mode, model=args.model, device=args.device,
                           precision=args.precision, restrict=args.restrict_to_dataset_classes,
                           image_topic=args.image_topic, truth_topic=args.truth_topic,
                           truth_landmarks_topic=args.truth_landmarks_topic, truth_csv=args.truth_csv,
                           stamp_tolerance=args.stamp_tolerance, pred_topic=args.pred_topic,
                           pred_landmarks_topic=args.pred_landmarks_topic, detector=args.detector,
                           detector_model=args.detector_model, detector_max_side=args.detector_max_side,
                           pipeline_settings=pipeline_settings, live=live,
                           saliency_per_class=args.saliency_per_class, flip_average=args.flip_average)
    summary = {k: metrics.get(k) for k in ("n", "accuracy", "macro_f1", "detection_rate")}
    summary["label_flips_per_second"] = metrics["stability"]["label_flips_per_second"]
    summary.update({k: v for k, v in metrics.get("timing", {}).items() if k in ("latency_ms", "output_rate_hz",
                                                                                   "dropped_ratio")})
    print(json.dumps(json_safe(summary)))
    for note in metrics["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0
