"""`emodan bag make` and `emodan bag eval`: camera-like bags from datasets, and the node scored on bags.

- make: an image dataset becomes a rosbag2 that looks like a recording: images on a camera topic at
  a fixed rate with increasing stamps and a frame_id, ground truth as this package's messages
  (EmotionStateArray, FaceLandmarksArray) on separate topics with the frame's stamp.
- eval --mode offline: the node's pipeline (detector, tracker, smoothing, model) in this process.
- eval --mode live: the node as a separate process (or one that runs) fed over DDS at the recorded
  rate; what it publishes is recorded into an output bag and scored, with latency and drops.
- eval --mode recorded: a bag holding the node's output (e.g. `ros2 bag record` on a robot), with
  ground truth as topics or as a CSV of stamp,label.

Predictions and truth are joined on the header stamp. A bag that cannot be read to the end is
scored on what was read, and the report says how many of its messages that was.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from . import bag_io
from .classes import canonical_name, class_mapping
from .node_process import NodeProcess, use_fastdds_profile
from .evaluate import Record, json_safe, load_dataset, progress, score, set_torch_threads, write_predictions

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
EMOTIONS_TYPE = "emodan_ros/msg/EmotionStateArray"
LANDMARKS_TYPE = "emodan_ros/msg/FaceLandmarksArray"
TRUTH_EMOTIONS = "/ground_truth/emotions"
TRUTH_LANDMARKS = "/ground_truth/landmarks"
# Message coordinates have their origin at the pixel corner, the pipeline's at the pixel centre.
HALF_PIXEL = 0.5


def stamp_of(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# ------------------------------------------------------------------------------------------ make

def place_in_frame(image: np.ndarray, landmarks: np.ndarray | None, frame_size: int,
                   face_fraction: float) -> tuple[np.ndarray, np.ndarray | None]:
    """BGR frame holding the image (scaled, centred on mid-grey when ``frame_size`` > 0), landmarks moved along."""
    import cv2

    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    if frame_size <= 0:
        return np.ascontiguousarray(bgr), landmarks
    if not 0.0 < face_fraction <= 1.0:
        raise ValueError(f"face_fraction must be in (0, 1], got {face_fraction}")
    height, width = bgr.shape[:2]
    scale = face_fraction * frame_size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
    frame = np.full((frame_size, frame_size, 3), 128, np.uint8)
    x0, y0 = (frame_size - new_w) // 2, (frame_size - new_h) // 2
    frame[y0:y0 + new_h, x0:x0 + new_w] = resized
    if landmarks is not None:
        sx, sy = new_w / width, new_h / height
        landmarks = np.stack([(landmarks[:, 0] + 0.5) * sx - 0.5 + x0,
                              (landmarks[:, 1] + 0.5) * sy - 0.5 + y0], axis=1).astype(np.float32)
    return frame, landmarks


def make_bag(data: str, fmt: str, out: str, storage: str = "mcap", rate: float = 15.0,
             image_topic: str = "/camera/image_raw", frame_id: str = "camera", compressed: str | None = None,
             encoding: str = "bgr8", frame_size: int = 0, face_fraction: float = 0.5, limit: int | None = None,
             usage: str | None = None, pts_offset: float = 0.0, start: float = 1_700_000_000.0,
             truth_prefix: str = "/ground_truth") -> dict[str, Any]:
    """Write the bag; returns counts and topics."""
    from .image_codec import compress_image, encode_image

    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    dataset = load_dataset(data, fmt, usage=usage, pts_offset=pts_offset)
    classes = [canonical_name(c) for c in dataset.classes]
    store = bag_io.typestore()
    types = store.types
    Header, Time = types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"]
    topic = image_topic.rstrip("/") + "/compressed" if compressed else image_topic
    emotions_topic, landmarks_topic = f"{truth_prefix}/emotions", f"{truth_prefix}/landmarks"
    count = len(dataset) if limit is None else min(limit, len(dataset))
    period_ns = int(round(1e9 / rate))
    start_ns = int(round(start * 1e9))
    written = {"frames": 0, "emotion_truths": 0, "landmark_truths": 0}
    with bag_io.BagWriter(out, storage) as bag:
        for index in progress(range(count), count, "bag make"):
            sample = dataset[index]
            frame, landmarks = place_in_frame(sample.image, sample.landmarks, frame_size, face_fraction)
            stamp = start_ns + index * period_ns
            header = Header(stamp=Time(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000), frame_id=frame_id)
            if compressed:
                msg = compress_image(frame, compressed, types[COMPRESSED_TYPE], header=header)
            else:
                msg = encode_image(frame, encoding, types[IMAGE_TYPE], header=header)
            bag.write(topic, msg, stamp)
            written["frames"] += 1
            if sample.label >= 0:
                probs = np.zeros(len(classes), np.float32)
                probs[sample.label] = 1.0
                state = types["emodan_ros/msg/EmotionState"](
                    header=header, face_id=0, emotion=classes[sample.label], probability=1.0,
                    class_names=list(classes), probabilities=probs, smoothed=False)
                bag.write(emotions_topic, types[EMOTIONS_TYPE](header=header, states=[state]), stamp)
                written["emotion_truths"] += 1
            if landmarks is not None:
                corner = landmarks.astype(np.float64) + HALF_PIXEL
                lo, hi = corner.min(axis=0), corner.max(axis=0)
                face = types["emodan_ros/msg/FaceLandmarks"](
                    header=header, face_id=0, box_x=float(lo[0]), box_y=float(lo[1]),
                    box_width=float(hi[0] - lo[0]), box_height=float(hi[1] - lo[1]), detection_score=1.0,
                    landmarks=corner.reshape(-1).astype(np.float32), image_width=frame.shape[1],
                    image_height=frame.shape[0], quality=1.0)
                bag.write(landmarks_topic, types[LANDMARKS_TYPE](header=header, faces=[face]), stamp)
                written["landmark_truths"] += 1
    return {**written, "bag": str(out), "image_topic": topic, "truth_topics": [emotions_topic, landmarks_topic],
            "unreadable": len(dataset.bad_files), "classes": classes}


# ---------------------------------------------------------------------------------- reading

@dataclass
class ReadStatus:
    """How much of a bag was read: messages read vs the count in metadata.yaml, and why it stopped."""

    read: int = 0
    expected: int | None = None
    skipped: int = 0
    error: str = ""
    salvaged: bool = False

    def note(self) -> str:
        if not self.error and not self.skipped:
            return ""
        share = f"{self.read} of {self.expected}" if self.expected else f"{self.read}"
        text = f"bag only partly readable: {share} messages of the scored topics were read"
        if self.skipped:
            text += f", {self.skipped} undecodable messages skipped"
        if self.salvaged:
            text += f"; the storage file is damaged ({self.error}) and was read raw up to the damage"
        elif self.error:
            text += f"; reading stopped: {self.error}"
        return text


def bag_metadata(path: Path) -> dict[str, tuple[str, int]]:
    """{topic: (type, message count)} from metadata.yaml (readable even when the storage file is not)."""
    import yaml

    meta_file = Path(path) / "metadata.yaml"
    if not Path(path).exists():
        raise bag_io.BagError(f"bag {path} does not exist")
    if not meta_file.is_file():
        raise bag_io.BagError(f"{path} is not a rosbag2 bag (no metadata.yaml)")
    try:
        info = yaml.safe_load(meta_file.read_text())["rosbag2_bagfile_information"]
        return {t["topic_metadata"]["name"]: (t["topic_metadata"]["type"], int(t.get("message_count", 0)))
                for t in info.get("topics_with_message_count", [])}
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise bag_io.BagError(f"bag {path}: unreadable metadata.yaml: {exc}") from exc


def _salvage_mcap(path: Path, wanted: dict[str, str]) -> Iterator[tuple[str, int, bytes]]:
    """Raw messages of ``wanted`` topics from the start of an mcap file up to where it breaks."""
    from rosbags.rosbag2.storage_mcap import DECOMPRESSORS

    files = sorted(path.glob("*.mcap"))
    for file in files:
        data = file.read_bytes()
        channels: dict[int, str] = {}
        yield from _mcap_records(data[8:], channels, wanted, DECOMPRESSORS)


def _mcap_records(data: bytes, channels: dict[int, str], wanted: dict[str, str],
                  decompressors: dict[str, Callable[[bytes, int], bytes]]) -> Iterator[tuple[str, int, bytes]]:
    pos = 0
    while pos + 9 <= len(data):
        op = data[pos]
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        body = data[pos + 9:pos + 9 + length]
        truncated = len(body) < length
        if truncated and op != 0x06:
            return
        pos += 9 + length
        if op == 0x04:  # channel: id u16, schema u16, topic string
            channel_id, _, topic_len = struct.unpack_from("<HHI", body)
            channels[channel_id] = body[8:8 + topic_len].decode()
        elif op == 0x05:  # message: channel u16, sequence u32, log_time u64, publish_time u64, data
            channel_id, _, log_time, _ = struct.unpack_from("<HIQQ", body)
            topic = channels.get(channel_id)
            if topic in wanted:
                yield topic, log_time, body[22:]
        elif op == 0x06:  # chunk: start u64, end u64, size u64, crc u32, compression string, records
            size = struct.unpack_from("<Q", body, 16)[0]
            (clen,) = struct.unpack_from("<I", body, 28)
            compression = body[32:32 + clen].decode()
            records = body[32 + clen + 8:]
            if truncated and compression:
                return  # a cut compressed chunk cannot be decoded
            if compression not in decompressors:
                return
            inner = records if truncated else decompressors[compression](records, size)
            yield from _mcap_records(inner, channels, wanted, decompressors)
            if truncated:
                return
        elif op == 0x02:  # footer: data section over
            return


def _salvage_sqlite(path: Path, wanted: dict[str, str]) -> Iterator[tuple[str, int, bytes]]:
    """Raw messages of ``wanted`` topics row by row until the database breaks."""
    import sqlite3

    for file in sorted(path.glob("*.db3")):
        connection = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        try:
            topics = {tid: name for tid, name in connection.execute("SELECT id, name FROM topics")}
            last = 0
            while True:
                rows = connection.execute(
                    "SELECT id, topic_id, timestamp, data FROM messages WHERE id > ? ORDER BY id LIMIT 256",
                    (last,)).fetchall()
                if not rows:
                    break
                for row_id, topic_id, stamp, blob in rows:
                    last = row_id
                    if topics.get(topic_id) in wanted:
                        yield topics[topic_id], int(stamp), bytes(blob)
        except sqlite3.DatabaseError:
            return
        finally:
            connection.close()


def iter_bag(path: str | Path, topics: dict[str, str], status: ReadStatus) -> Iterator[tuple[str, int, Any]]:
    """(topic, receive ns, rosbags message) of ``topics`` ({topic: type}); never raises after the first message.

    A storage file that cannot be opened (truncated mcap, damaged sqlite3) is read raw from its start
    up to the damage; a message that fails to decode is skipped and counted.
    """
    path = Path(path)
    meta = bag_metadata(path)
    status.expected = sum(meta[t][1] for t in topics if t in meta) or None
    try:
        for item in bag_io.read_messages(path, list(topics)):
            status.read += 1
            yield item
        return
    except bag_io.BagError as exc:
        if status.read:
            status.error = str(exc)
            return
        if "cannot open bag" not in str(exc):
            raise
        status.error = str(exc)
    store = bag_io.typestore()
    unknown = [f"{t} ({m})" for t, m in topics.items() if m not in store.fielddefs]
    if unknown:
        raise bag_io.BagError(f"bag {path}: unknown message types {unknown}")
    salvage = _salvage_mcap if any(path.glob("*.mcap")) else _salvage_sqlite
    status.salvaged = True
    for topic, stamp, raw in salvage(path, topics):
        try:
            msg = store.deserialize_cdr(raw, topics[topic])
        except Exception:  # a message cut by the damage or otherwise corrupt
            status.skipped += 1
            continue
        status.read += 1
        yield topic, stamp, msg
    if status.read == 0:
        raise bag_io.BagError(f"{status.error}; no message could be salvaged")


def _pick_topic(meta: dict[str, tuple[str, int]], kinds: Sequence[str], given: str | None, what: str,
                exclude: Sequence[str] = (), required: bool = True) -> str | None:
    if given:
        if given not in meta:
            raise bag_io.BagError(f"the bag has no {what} topic {given!r}; its topics: {sorted(meta)}")
        if meta[given][0] not in kinds:
            raise bag_io.BagError(f"topic {given} is a {meta[given][0]}, not a {' or '.join(kinds)}")
        return given
    found = [t for t, (kind, _) in meta.items() if kind in kinds and t not in exclude]
    if len(found) == 1:
        return found[0]
    if not found and not required:
        return None
    if not found:
        raise bag_io.BagError(f"the bag has no {what} topic ({' or '.join(kinds)}); its topics: {sorted(meta)}")
    raise bag_io.BagError(f"the bag has several {what} topics {sorted(found)}: choose one")


# ---------------------------------------------------------------------------------- truth + scoring

@dataclass
class Truth:
    label: str | None = None
    landmarks: np.ndarray | None = None  # (68, 2) pixel centres
    box: np.ndarray | None = None
    classes: tuple[str, ...] = ()


@dataclass
class Face:
    face_id: int
    probs: np.ndarray
    landmarks: np.ndarray | None
    box: np.ndarray | None


@dataclass
class Frame:
    stamp_ns: int
    faces: list[Face]
    received_ns: int | None = None  # live / recorded: when the output arrived


def truth_from_emotions(msg: Any) -> Truth:
    if not msg.states:
        return Truth()
    state = msg.states[0]
    return Truth(label=canonical_name(state.emotion), classes=tuple(canonical_name(c) for c in state.class_names))


def landmarks_of(face_msg: Any) -> tuple[np.ndarray, np.ndarray]:
    points = np.asarray(face_msg.landmarks, np.float32).reshape(68, 2) - HALF_PIXEL
    box = np.array([face_msg.box_x, face_msg.box_y, face_msg.box_x + face_msg.box_width,
                    face_msg.box_y + face_msg.box_height], np.float32) - HALF_PIXEL
    return points, box


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


def _area(box: np.ndarray | None) -> float:
    return 0.0 if box is None else float((box[2] - box[0]) * (box[3] - box[1]))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def main_face(faces: list[Face], truth: Truth | None) -> Face | None:
    """The face scored against the truth: best overlap with the true box, else the largest."""
    if not faces:
        return None
    if truth is not None and truth.box is not None and all(f.box is not None for f in faces):
        return max(faces, key=lambda f: _iou(f.box, truth.box))
    return max(faces, key=lambda f: _area(f.box))


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r.stamp_ns is not None]
    if not rows:
        return
    t0 = rows[0].stamp_ns
    t = np.array([(r.stamp_ns - t0) / 1e9 for r in rows])
    probs = np.array([r.probs if r.probs is not None else np.full(len(class_names), np.nan) for r in rows])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
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
    plt.close(fig)


# ---------------------------------------------------------------------------------- the three modes

@dataclass
class BagInput:
    """Topics chosen in a bag and the truth read from it (or from a CSV)."""

    meta: dict[str, tuple[str, int]]
    image_topic: str | None
    truth_topic: str | None
    truth_landmarks_topic: str | None
    truths: dict[int, Truth] = field(default_factory=dict)


def resolve_inputs(bag: str | Path, image_topic: str | None, truth_topic: str | None,
                   truth_landmarks_topic: str | None, truth_csv: str | None, need_images: bool) -> BagInput:
    meta = bag_metadata(Path(bag))
    image = _pick_topic(meta, (IMAGE_TYPE, COMPRESSED_TYPE), image_topic, "image", required=need_images)
    truth = _pick_topic(meta, (EMOTIONS_TYPE,), truth_topic, "ground-truth emotions", required=False) \
        if truth_topic else (TRUTH_EMOTIONS if TRUTH_EMOTIONS in meta else None)
    truth_lm = _pick_topic(meta, (LANDMARKS_TYPE,), truth_landmarks_topic, "ground-truth landmarks",
                           required=False) if truth_landmarks_topic else \
        (TRUTH_LANDMARKS if TRUTH_LANDMARKS in meta else None)
    inputs = BagInput(meta, image, truth, truth_lm)
    if truth_csv:
        inputs.truths = read_truth_csv(truth_csv)
    return inputs


def _absorb_truth(inputs: BagInput, topic: str, msg: Any) -> bool:
    """Store a truth message; False if ``topic`` is not a truth topic."""
    if topic == inputs.truth_topic:
        stamp = stamp_of(msg.header)
        truth = truth_from_emotions(msg)
        old = inputs.truths.setdefault(stamp, Truth())
        old.label, old.classes = truth.label, truth.classes
        return True
    if topic == inputs.truth_landmarks_topic:
        if msg.faces:
            old = inputs.truths.setdefault(stamp_of(msg.header), Truth())
            old.landmarks, old.box = landmarks_of(msg.faces[0])
        return True
    return False


def run_offline(bag: str | Path, inputs: BagInput, pipeline: Any, status: ReadStatus) -> tuple[list[Frame], dict]:
    """The node's pipeline over the bag's images in recorded order."""
    from .image_codec import ImageDecodeError, decode_image

    topics = {t: inputs.meta[t][0] for t in (inputs.image_topic, inputs.truth_topic, inputs.truth_landmarks_topic)
              if t}
    frames: list[Frame] = []
    bad = 0
    process_ms: list[float] = []
    total = sum(inputs.meta[t][1] for t in topics)
    for topic, _, msg in progress(iter_bag(bag, topics, status), total, "bag eval (offline, messages)"):
        if _absorb_truth(inputs, topic, msg):
            continue
        try:
            image = decode_image(msg)
        except ImageDecodeError:
            bad += 1
            continue
        results = pipeline.process(image)
        process_ms.append(pipeline.stats.total_ms)
        frames.append(Frame(stamp_of(msg.header), [Face(r.face_id, r.probs, r.landmarks, r.box) for r in results]))
    extra = {"bad_frames": bad, "frames_processed": len(frames),
             "processing_ms": {f"p{q}": float(np.percentile(process_ms, q)) for q in (50, 90, 99)}
             if process_ms else {}}
    return frames, extra


def frames_from_outputs(emotions: list[tuple[int | None, Any]], landmarks: dict[int, Any],
                        class_names: Sequence[str] | None) -> tuple[list[Frame], tuple[str, ...]]:
    """Frames from the node's EmotionStateArray messages (+ FaceLandmarksArray by stamp), probabilities
    reordered into ``class_names`` (default: the first message's)."""
    names = tuple(class_names) if class_names else ()
    frames: list[Frame] = []
    for received, msg in emotions:
        stamp = stamp_of(msg.header)
        faces_lm = {}
        if stamp in landmarks:
            for face in landmarks[stamp].faces:
                faces_lm[int(face.face_id)] = landmarks_of(face)
        faces = []
        for state in msg.states:
            if not names:
                names = tuple(canonical_name(c) for c in state.class_names)
            own = [canonical_name(c) for c in state.class_names]
            probs = np.zeros(len(names), np.float32)
            mapping = class_mapping(own, names)
            for value, j in zip(state.probabilities, mapping):
                if j >= 0:
                    probs[j] += value
            points, box = faces_lm.get(int(state.face_id), (None, None))
            faces.append(Face(int(state.face_id), probs, points, box))
        frames.append(Frame(stamp, faces, received))
    return frames, names


def run_recorded(bag: str | Path, inputs: BagInput, pred_topic: str | None, pred_lm_topic: str | None,
                 status: ReadStatus) -> tuple[list[Frame], tuple[str, ...], list[int] | None]:
    """Frames from a bag holding the node's outputs (receive time = the bag's record time)."""
    exclude = [t for t in (inputs.truth_topic,) if t]
    emotions_topic = _pick_topic(inputs.meta, (EMOTIONS_TYPE,), pred_topic, "node emotions", exclude=exclude)
    lm_topic = _pick_topic(inputs.meta, (LANDMARKS_TYPE,), pred_lm_topic, "node landmarks",
                           exclude=[t for t in (inputs.truth_landmarks_topic,) if t], required=False)
    topics = {t: inputs.meta[t][0] for t in (emotions_topic, lm_topic, inputs.truth_topic,
                                             inputs.truth_landmarks_topic, inputs.image_topic) if t}
    emotions: list[tuple[int | None, Any]] = []
    landmarks: dict[int, Any] = {}
    image_stamps: list[int] = []
    for topic, received, msg in iter_bag(bag, topics, status):
        if _absorb_truth(inputs, topic, msg):
            continue
        if topic == emotions_topic:
            emotions.append((received, msg))
        elif topic == lm_topic:
            landmarks[stamp_of(msg.header)] = msg
        elif topic == inputs.image_topic:
            image_stamps.append(stamp_of(msg.header))
    frames, names = frames_from_outputs(emotions, landmarks, None)
    return frames, names, image_stamps or None


@dataclass
class LiveSettings:
    model: str | None = None
    speed: float = 1.0
    warmup_frames: int = 3
    node_running: bool = False
    namespace: str = ""
    startup_timeout: float = 120.0
    drain_timeout: float = 5.0
    storage: str = "mcap"
    node_params: dict[str, Any] = field(default_factory=dict)


def run_live(bag: str | Path, inputs: BagInput, settings: LiveSettings, out_dir: Path,
             status: ReadStatus) -> tuple[list[Frame], tuple[str, ...], list[int], dict[str, Any]]:
    """Publish the bag's images into the node over DDS at the recorded rate and record its output.

    Images are re-stamped with the wall-clock time they are sent (the node's latency and ours are
    then end-to-end); outputs are mapped back to the bag's stamps for scoring. The output bag holds
    the node's messages as received plus the ground truth with the new stamps, so `--mode recorded`
    on it scores the same run again.
    """
    use_fastdds_profile()  # before this process's participant exists
    from .ros_compat import require_ros

    try:
        require_ros("emodan bag eval --mode live")
        from emodan_ros.msg import EmotionStateArray, FaceLandmarksArray
    except ImportError as exc:
        raise RuntimeError(f"{exc} (the messages emodan_ros.msg must be importable: after `make setup` and "
                           "`. install/setup.sh`, run outside the source checkout, where `python -m` would "
                           "import the unbuilt source tree)") from exc
    import rclpy
    from sensor_msgs.msg import CompressedImage, Image
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    compressed = inputs.meta[inputs.image_topic][0] == COMPRESSED_TYPE
    topics = {t: inputs.meta[t][0] for t in (inputs.image_topic, inputs.truth_topic, inputs.truth_landmarks_topic)
              if t}
    images: list[Any] = []
    for topic, _, msg in progress(iter_bag(bag, topics, status), None, "reading bag"):
        if not _absorb_truth(inputs, topic, msg):
            images.append(msg)
    if not images:
        raise bag_io.BagError(f"bag {bag}: no images on {inputs.image_topic}")

    namespace = settings.namespace or ("/" if settings.node_running else f"/emodan_eval_{os.getpid()}")
    base = namespace.rstrip("/")
    in_topic = f"{base}/image/compressed" if compressed else f"{base}/image"
    out_emotions, out_landmarks = f"{base}/emotions", f"{base}/landmarks"
    node_proc = None if settings.node_running else _start_node(namespace, compressed, settings)

    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    node = rclpy.create_node(f"emodan_bag_eval_{os.getpid()}", context=context)
    executor.add_node(node)

    msg_cls = CompressedImage if compressed else Image
    publisher = node.create_publisher(msg_cls, in_topic, QoSProfile(
        depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=qos_profile_sensor_data.durability))
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    received: list[tuple[str, int, Any]] = []
    node.create_subscription(EmotionStateArray, out_emotions,
                             lambda m: received.append((out_emotions, time.time_ns(), m)), reliable)
    node.create_subscription(FaceLandmarksArray, out_landmarks,
                             lambda m: received.append((out_landmarks, time.time_ns(), m)), reliable)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    sent: dict[int, int] = {}  # new stamp -> bag stamp
    info: dict[str, Any] = {"input_topic": in_topic, "output_topics": [out_emotions, out_landmarks],
                            "speed": settings.speed, "fastdds_profile": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")}
    try:
        _wait_for_node(node, node_proc, in_topic, out_emotions, settings.startup_timeout)
        first = bag_io.to_rclpy(images[0], msg_cls)
        for k in range(settings.warmup_frames):  # model start-up (first inference) is not the node's speed
            first.header.stamp.sec, first.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
            publisher.publish(first)
            _wait_until(lambda: len(received) >= 2 * (k + 1), 30.0)
        time.sleep(0.3)
        received.clear()
        bag_stamps = [stamp_of(m.header) for m in images]
        t0 = time.monotonic()
        for msg, stamp in progress(list(zip(images, bag_stamps)), len(images), "publishing"):
            due = t0 + (stamp - bag_stamps[0]) / 1e9 / settings.speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            out = bag_io.to_rclpy(msg, msg_cls)
            now = time.time_ns()
            while now in sent:
                now += 1
            out.header.stamp.sec, out.header.stamp.nanosec = divmod(now, 1_000_000_000)
            sent[now] = stamp
            publisher.publish(out)
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() - last_change < settings.drain_timeout:
            answered = sum(1 for topic, _, _ in received if topic == out_emotions)
            if answered >= len(sent):
                break
            if answered != last_count:
                last_count, last_change = answered, time.monotonic()
            time.sleep(0.05)
    finally:
        stop.set()
        spinner.join(timeout=5)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        if node_proc is not None:
            node_proc.stop()
            time.sleep(0.2)
            (out_dir / "node.log").write_text("".join(node_proc.log))
    outputs = [(t, r, m) for t, r, m in received if stamp_of(m.header) in sent]
    _write_output_bag(out_dir / "output_bag", settings.storage, outputs, inputs, sent)
    emotions = [(r, m) for t, r, m in outputs if t == out_emotions]
    landmarks = {stamp_of(m.header): m for t, _, m in outputs if t == out_landmarks}
    frames, names = frames_from_outputs(emotions, landmarks, None)
    info["timing"] = timing(frames, list(sent))  # latency on the sent stamps
    for frame in frames:  # scoring on the bag's stamps
        frame.stamp_ns = sent[frame.stamp_ns]
    return frames, names, list(sent.values()), info


def _start_node(namespace: str, compressed: bool, settings: LiveSettings) -> NodeProcess:
    from .evaluate import find_default_model

    params = {"model_path": Path(settings.model or find_default_model()).resolve(), "compressed": compressed,
              "publish_debug_image": False, **settings.node_params}
    return NodeProcess(namespace, params)


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def _wait_for_node(node: Any, proc: NodeProcess | None, in_topic: str, out_topic: str, timeout: float) -> None:
    def ready() -> bool:
        if proc is not None and proc.exited():
            return True
        return node.count_subscribers(in_topic) > 0 and node.count_publishers(out_topic) > 0

    ok = _wait_until(ready, timeout)
    if proc is not None and proc.exited():
        time.sleep(0.2)
        raise RuntimeError(f"emotion_node exited with code {proc.process.returncode}:\n{proc.log_tail()}")
    if not ok:
        raise RuntimeError(f"no emotion_node subscribed to {in_topic} within {timeout:.0f} s")
    time.sleep(0.5)  # matched; let the data path settle


def _write_output_bag(path: Path, storage: str, outputs: list[tuple[str, int, Any]], inputs: BagInput,
                      sent: dict[int, int]) -> None:
    """The node's messages as received, plus the truth re-stamped to the sent stamps."""
    types = bag_io.typestore().types
    back = {orig: new for new, orig in sent.items()}
    if path.exists():
        raise bag_io.BagError(f"output bag {path} already exists")
    with bag_io.BagWriter(path, storage) as bag:
        for topic, received, msg in outputs:
            bag.write(topic, msg, received)
        for stamp, truth in sorted(inputs.truths.items()):
            if stamp not in back or truth.label is None:
                continue
            new = back[stamp]
            header = types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=new // 1_000_000_000, nanosec=new % 1_000_000_000),
                frame_id="")
            classes = list(truth.classes) or [truth.label]
            probs = np.array([1.0 if c == truth.label else 0.0 for c in classes], np.float32)
            state = types["emodan_ros/msg/EmotionState"](header=header, face_id=0, emotion=truth.label,
                                                          probability=1.0, class_names=classes,
                                                          probabilities=probs, smoothed=False)
            bag.write(TRUTH_EMOTIONS, types[EMOTIONS_TYPE](header=header, states=[state]), new)


def fetch_images(bag: str | Path, topic: str, kind: str, stamps: set[int]) -> dict[int, np.ndarray]:
    """Decoded frames of the given stamps (for the saliency figure)."""
    from .image_codec import ImageDecodeError, decode_image

    found: dict[int, np.ndarray] = {}
    if not stamps:
        return found
    for _, _, msg in iter_bag(bag, {topic: kind}, ReadStatus()):
        stamp = stamp_of(msg.header)
        if stamp in stamps:
            try:
                found[stamp] = decode_image(msg)
            except ImageDecodeError:
                pass
            if len(found) == len(stamps):
                break
    return found


def evaluate_bag(bag: str, out: str, mode: str = "offline", model: str | None = None, device: str = "auto",
                 precision: str = "auto", restrict: bool = False, image_topic: str | None = None,
                 truth_topic: str | None = None, truth_landmarks_topic: str | None = None,
                 truth_csv: str | None = None, stamp_tolerance: float = 0.001, pred_topic: str | None = None,
                 pred_landmarks_topic: str | None = None, detector: str = "haar", detector_model: str = "",
                 detector_max_side: int = 320, pipeline_settings: dict[str, Any] | None = None,
                 live: LiveSettings | None = None, saliency_per_class: int = 2, predictor: Any = None,
                 flip_average: bool = False) -> dict[str, Any]:
    """Score the node on a bag; writes metrics.json, predictions.csv, report.md (+ plots) into ``out``."""
    from .report import pick_examples, write_report

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
            from .evaluate import find_default_model
            from .predictor import Predictor

            predictor = Predictor.from_checkpoint(model or find_default_model(), device=device, precision=precision,
                                                  flip_average=flip_average)
        from .evaluate import make_eval_detector
        from .pipeline import EmotionPipeline

        pipeline = EmotionPipeline(predictor, make_eval_detector(detector, detector_max_side, detector_model),
                                   **pipeline_settings)
        frames, extra = run_offline(bag, inputs, pipeline, status)
        names = tuple(predictor.class_names)
    elif mode == "live":
        if detector == "full":
            raise ValueError("the node has no 'full' detector: use haar, dlib or yunet with --mode live")
        settings = live or LiveSettings()
        if not settings.node_running:
            from .evaluate import find_default_model

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
    from .classes import FERPLUS_CLASSES

    if not model:
        return tuple(FERPLUS_CLASSES)
    from .checkpoint import read_checkpoint

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
    pipeline_settings = {"redetect_every": args.redetect_every, "smoothing": args.smoothing,
                         "min_quality": args.min_quality, "max_faces": args.max_faces}
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
