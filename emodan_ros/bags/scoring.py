"""Scoring a stream: predictions joined to the truth by stamp, label stability and timing.

Predictions and truth are joined on the header stamp (nearest frame within a tolerance); the face
scored is the one that overlaps the true box most, else the largest.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emodan_ros.evaluation.records import Record
from emodan_ros.faces.boxes import box_area, iou_matrix
from emodan_ros.faces.classes import canonical_name, class_mapping
from emodan_ros.io.messages import DecodedFace

TRUTH_EMOTIONS = "/ground_truth/emotions"
TRUTH_LANDMARKS = "/ground_truth/landmarks"


@dataclass
class Truth:
    label: str | None = None
    landmarks: np.ndarray | None = None  # (68, 2) pixel centres
    box: np.ndarray | None = None
    classes: tuple[str, ...] = ()


@dataclass
class Frame:
    stamp_ns: int
    faces: list[DecodedFace]
    received_ns: int | None = None  # live / recorded: when the output arrived


def truth_from_emotions(msg: Any) -> Truth:
    if not msg.states:
        return Truth()
    state = msg.states[0]
    return Truth(label=canonical_name(state.emotion), classes=tuple(canonical_name(c) for c in state.class_names))


def read_truth_csv(path: str | Path) -> dict[int, Truth]:
    """stamp,label rows (optional header); stamp in seconds, or integer nanoseconds (> 1e12)."""
    truths: dict[int, Truth] = {}
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or not row[0].strip() or row[0].strip().startswith("#"):
                continue
            if len(row) < 2:
                raise ValueError(f"{path}:{lineno}: expected stamp,label")
            text = row[0].strip()
            try:
                value = float(text)
            except ValueError:
                if lineno == 1:
                    continue  # header
                raise ValueError(f"{path}:{lineno}: stamp {text!r} is not a number") from None
            stamp = int(text) if text.isdigit() and value > 1e12 else int(round(value * 1e9))
            truths[stamp] = Truth(label=canonical_name(row[1]) if row[1].strip() else None)
    if not truths:
        raise ValueError(f"{path}: no stamp,label rows")
    return truths


def main_face(faces: list[DecodedFace], truth: Truth | None) -> DecodedFace | None:
    """The face scored against the truth: best overlap with the true box, else the largest."""
    if not faces:
        return None
    if truth is not None and truth.box is not None and all(f.box is not None for f in faces):
        return max(faces, key=lambda f: iou_matrix(f.box, truth.box)[0, 0])
    return max(faces, key=lambda f: 0.0 if f.box is None else box_area(f.box)[0])


def join_records(frames: list[Frame], truths: dict[int, Truth], model_classes: Sequence[str],
                 tolerance_ns: int) -> tuple[list[Record], list[str], int]:
    """One record per truth stamp (per frame when there is no truth); also the truth vocabulary and
    the number of truth stamps with no output frame at all."""
    by_stamp = {f.stamp_ns: f for f in frames}
    stamps = np.array(sorted(by_stamp), np.int64)
    records: list[Record] = []
    vocabulary: list[str] = []
    missing = 0
    for t in truths.values():
        for c in t.classes or ((t.label,) if t.label else ()):
            if c not in vocabulary:
                vocabulary.append(c)
    keys = sorted(truths) if truths else list(stamps)
    for stamp in keys:
        truth = truths.get(int(stamp))
        frame = by_stamp.get(int(stamp))
        if frame is None and len(stamps):
            k = int(np.searchsorted(stamps, stamp))
            near = [s for s in stamps[max(k - 1, 0):k + 1] if abs(int(s) - int(stamp)) <= tolerance_ns]
            if near:
                frame = by_stamp[int(min(near, key=lambda s: abs(int(s) - int(stamp))))]
        if frame is None:
            missing += 1
        label = truth.label if truth else None
        true = int(class_mapping([label], model_classes)[0]) if label else -1
        record = Record(key=str(int(stamp)), true_name=label, true=true, stamp_ns=int(stamp),
                        gt_landmarks=truth.landmarks if truth else None, no_output=frame is None)
        face = main_face(frame.faces, truth) if frame else None
        if face is not None:
            record.probs, record.landmarks, record.box, record.face_id = face.probs, face.landmarks, face.box, \
                face.face_id
        records.append(record)
    return records, vocabulary, missing


def stability(frames: list[Frame], class_names: Sequence[str]) -> dict[str, Any]:
    """Label flips per second of each tracked face: changes of its top emotion over its lifetime."""
    tracks: dict[int, list[tuple[int, int]]] = {}
    for frame in sorted(frames, key=lambda f: f.stamp_ns):
        for face in frame.faces:
            tracks.setdefault(face.face_id, []).append((frame.stamp_ns, int(np.argmax(face.probs))))
    per_face = {}
    total_flips, total_seconds = 0, 0.0
    for face_id, seq in tracks.items():
        flips = sum(1 for a, b in zip(seq, seq[1:]) if a[1] != b[1])
        seconds = (seq[-1][0] - seq[0][0]) / 1e9
        per_face[str(face_id)] = {"frames": len(seq), "seconds": seconds, "flips": flips,
                                  "flips_per_second": flips / seconds if seconds > 0 else None}
        total_flips += flips
        total_seconds += seconds
    return {"faces_tracked": len(tracks), "label_flips": total_flips, "tracked_seconds": total_seconds,
            "label_flips_per_second": total_flips / total_seconds if total_seconds > 0 else None,
            "per_face": per_face}


def timing(frames: list[Frame], sent_stamps: Sequence[int] | None) -> dict[str, Any]:
    """Latency percentiles (receive time - header stamp), output rate and dropped-frame ratio."""
    out: dict[str, Any] = {}
    received = [f for f in frames if f.received_ns is not None]
    if received:
        latency = np.array([(f.received_ns - f.stamp_ns) / 1e6 for f in received])
        out["latency_ms"] = {f"p{q}": float(np.percentile(latency, q)) for q in (50, 90, 95, 99)}
        out["latency_ms"]["max"] = float(latency.max())
        out["latency_ms"]["mean"] = float(latency.mean())
        span = (max(f.received_ns for f in received) - min(f.received_ns for f in received)) / 1e9
        out["output_rate_hz"] = (len(received) - 1) / span if span > 0 else None
    if sent_stamps is not None and len(sent_stamps):
        answered = {f.stamp_ns for f in frames}
        dropped = sum(1 for s in sent_stamps if s not in answered)
        out.update({"frames_in": len(sent_stamps), "frames_out": len(sent_stamps) - dropped,
                    "dropped_frames": dropped, "dropped_ratio": dropped / len(sent_stamps)})
        span = (max(sent_stamps) - min(sent_stamps)) / 1e9
        out["input_rate_hz"] = (len(sent_stamps) - 1) / span if span > 0 else None
    return out


def plot_timeline(records: Sequence[Record], class_names: Sequence[str], path: Path) -> None:
    """Per frame: probability of each class for the scored face, and the true / predicted class."""
    from emodan_ros.evaluation.plots import new_figure

    rows = [r for r in records if r.stamp_ns is not None]
    if not rows:
        return
    t0 = rows[0].stamp_ns
    t = np.array([(r.stamp_ns - t0) / 1e9 for r in rows])
    probs = np.array([r.probs if r.probs is not None else np.full(len(class_names), np.nan) for r in rows])
    fig, (top, bottom) = new_figure(2, 1, figsize=(11, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for j, name in enumerate(class_names):
        top.plot(t, probs[:, j], lw=1, label=name)
    top.set_ylabel("probability")
    top.set_ylim(0, 1)
    top.legend(fontsize=7, ncol=min(len(class_names), 8), loc="upper right")
    true = np.array([r.true if r.true >= 0 else np.nan for r in rows], float)
    pred = np.array([np.nanargmax(p) if np.isfinite(p).any() else np.nan for p in probs], float)
    bottom.step(t, true, where="mid", color="black", lw=2, label="truth")
    bottom.scatter(t, pred, s=6, color="tab:red", label="predicted (top class)", zorder=3)
    missed = np.isnan(pred)
    if missed.any():
        bottom.scatter(t[missed], np.full(missed.sum(), -0.7), marker="x", s=10, color="grey", label="no face/output")
    bottom.set_yticks(range(len(class_names)), class_names, fontsize=7)
    bottom.set_ylim(-1, len(class_names))
    bottom.set_xlabel("time since first frame (s)")
    bottom.legend(fontsize=7, loc="upper right")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
