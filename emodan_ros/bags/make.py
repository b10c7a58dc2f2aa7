"""`emodan bag make`: an image dataset becomes a camera-like rosbag2 with ground truth.

Images go on a camera topic at a fixed rate with increasing stamps and a frame_id; the ground
truth goes on separate topics as this package's messages (EmotionStateArray, FaceLandmarksArray)
with the frame's stamp, so any of the evaluation modes can join them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emodan_ros.data.formats import load_dataset
from emodan_ros.evaluation.records import progress
from emodan_ros.faces.classes import canonical_name
from emodan_ros.io import bag_io
from emodan_ros.io.messages import (COMPRESSED_TYPE, IMAGE_TYPE, MessageTypes, face_message, set_stamp,
                                    state_message)


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
    from emodan_ros.io.image_codec import compress_image, encode_image

    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    dataset = load_dataset(data, fmt, usage=usage, pts_offset=pts_offset)
    classes = [canonical_name(c) for c in dataset.classes]
    store = bag_io.typestore()
    types = store.types
    messages = MessageTypes.from_typestore(types)
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
            header = Header(stamp=Time(sec=0, nanosec=0), frame_id=frame_id)
            set_stamp(header, stamp)
            if compressed:
                msg = compress_image(frame, compressed, types[COMPRESSED_TYPE], header=header)
            else:
                msg = encode_image(frame, encoding, types[IMAGE_TYPE], header=header)
            bag.write(topic, msg, stamp)
            written["frames"] += 1
            if sample.label >= 0:
                probs = np.zeros(len(classes), np.float32)
                probs[sample.label] = 1.0
                state = state_message(messages, header, 0, probs, classes)
                bag.write(emotions_topic, messages.states(header=header, states=[state]), stamp)
                written["emotion_truths"] += 1
            if landmarks is not None:
                lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
                face = face_message(messages, header, 0, np.concatenate([lo, hi]), landmarks,
                                    frame.shape[1], frame.shape[0])
                bag.write(landmarks_topic, messages.faces(header=header, faces=[face]), stamp)
                written["landmark_truths"] += 1
    return {**written, "bag": str(out), "image_topic": topic, "truth_topics": [emotions_topic, landmarks_topic],
            "unreadable": len(dataset.bad_files), "classes": classes}
