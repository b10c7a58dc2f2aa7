"""The three ways to score the node on a bag.

- offline: the node's pipeline (detector, tracker, smoothing, model) in this process;
- live: the node as its own process (or one that runs) fed over DDS at the recorded rate; what it
  publishes is recorded into an output bag and scored, with latency and drops;
- recorded: a bag that already holds the node's output (e.g. `ros2 bag record` on a robot).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from emodan_ros.bags.scoring import TRUTH_EMOTIONS, TRUTH_LANDMARKS, Frame, Truth, read_truth_csv, timing, \
    truth_from_emotions
from emodan_ros.evaluation.records import progress
from emodan_ros.io import bag_io
from emodan_ros.io.bag_salvage import ReadStatus, bag_metadata, iter_bag
from emodan_ros.io.messages import (COMPRESSED_TYPE, EMOTIONS_TYPE, IMAGE_TYPE, LANDMARKS_TYPE, MessageTypes,
                                    DecodedFace, decode_faces, face_geometry, set_stamp, stamp_ns,
                                    state_message)


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
        stamp = stamp_ns(msg.header)
        truth = truth_from_emotions(msg)
        old = inputs.truths.setdefault(stamp, Truth())
        old.label, old.classes = truth.label, truth.classes
        return True
    if topic == inputs.truth_landmarks_topic:
        if msg.faces:
            old = inputs.truths.setdefault(stamp_ns(msg.header), Truth())
            old.landmarks, old.box = face_geometry(msg.faces[0])
        return True
    return False


def run_offline(bag: str | Path, inputs: BagInput, pipeline: Any, status: ReadStatus) -> tuple[list[Frame], dict]:
    """The node's pipeline over the bag's images in recorded order."""
    from emodan_ros.io.image_codec import ImageDecodeError, decode_image

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
        frames.append(Frame(stamp_ns(msg.header), [DecodedFace(r.face_id, r.probs, r.landmarks, r.box, r.score, r.quality)
                                                    for r in results]))
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
        stamp = stamp_ns(msg.header)
        faces, names = decode_faces(msg, landmarks.get(stamp), names)
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
            landmarks[stamp_ns(msg.header)] = msg
        elif topic == inputs.image_topic:
            image_stamps.append(stamp_ns(msg.header))
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
    import os

    from tqdm import tqdm

    from emodan_ros.compat import find_default_model
    from emodan_ros.ros.bag_bridge import to_rosbags
    from emodan_ros.ros.camera import LiveCamera

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
    params = {"model_path": Path(settings.model or find_default_model()).resolve(), "compressed": compressed,
              "publish_debug_image": False, **settings.node_params}
    camera = LiveCamera(namespace, node_params=params, start_node=not settings.node_running, compressed=compressed,
                        startup_timeout=settings.startup_timeout)
    info: dict[str, Any] = {"input_topic": camera.image_topic,
                            "output_topics": [camera.emotions_topic, camera.landmarks_topic],
                            "speed": settings.speed, "fastdds_profile": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")}
    try:
        camera.warm_up(images[0], settings.warmup_frames)
        bag_stamps = [stamp_ns(m.header) for m in images]
        due = [(s - bag_stamps[0]) / 1e9 / settings.speed for s in bag_stamps]
        with tqdm(total=len(images), desc="publishing", file=sys.stderr, mininterval=1.0) as bar:
            sent_stamps = camera.play(images, due, each=lambda index, stamp: bar.update(1))
        sent = dict(zip(sent_stamps, bag_stamps))  # new stamp -> bag stamp
        camera.drain(len(sent), settings.drain_timeout)
    finally:
        camera.close(log_to=None if settings.node_running else out_dir / "node.log")
    kinds = {"emotions": camera.emotions_topic, "landmarks": camera.landmarks_topic}
    outputs = [(kinds[k], r, to_rosbags(m)) for k, r, m in camera.received
               if k in kinds and stamp_ns(m.header) in sent]
    _write_output_bag(out_dir / "output_bag", settings.storage, outputs, inputs, sent)
    emotions = [(r, m) for t, r, m in outputs if t == camera.emotions_topic]
    landmarks = {stamp_ns(m.header): m for t, _, m in outputs if t == camera.landmarks_topic}
    frames, names = frames_from_outputs(emotions, landmarks, None)
    info["timing"] = timing(frames, list(sent))  # latency on the sent stamps
    for frame in frames:  # scoring on the bag's stamps
        frame.stamp_ns = sent[frame.stamp_ns]
    return frames, names, list(sent.values()), info


def _write_output_bag(path: Path, storage: str, outputs: list[tuple[str, int, Any]], inputs: BagInput,
                      sent: dict[int, int]) -> None:
    """The node's messages as received, plus the truth re-stamped to the sent stamps."""
    types = bag_io.typestore().types
    messages = MessageTypes.from_typestore(types)
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
            header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
                                                  frame_id="")
            set_stamp(header, new)
            classes = list(truth.classes) or [truth.label]
            probs = np.array([1.0 if c == truth.label else 0.0 for c in classes], np.float32)
            state = state_message(messages, header, 0, probs, classes)
            bag.write(TRUTH_EMOTIONS, messages.states(header=header, states=[state]), new)


def fetch_images(bag: str | Path, topic: str, kind: str, stamps: set[int]) -> dict[int, np.ndarray]:
    """Decoded frames of the given stamps (for the saliency figure)."""
    from emodan_ros.io.image_codec import ImageDecodeError, decode_image

    found: dict[int, np.ndarray] = {}
    if not stamps:
        return found
    for _, _, msg in iter_bag(bag, {topic: kind}, ReadStatus()):
        stamp = stamp_ns(msg.header)
        if stamp in stamps:
            try:
                found[stamp] = decode_image(msg)
            except ImageDecodeError:
                pass
            if len(found) == len(stamps):
                break
    return found
