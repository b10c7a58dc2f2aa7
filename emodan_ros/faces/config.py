"""The face pipeline's settings: one definition of each default, range and description.

The node's ROS parameters (descriptors, ranges, read-only flags), the CLI options of `emodan bag
eval` and the demo, the pipeline's validation and `config/emotion.yaml` (checked by a test) all
derive from the dataclasses here, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from emodan_ros.faces.blazeface import AUTO_FINE_FRACTION, AUTO_FINE_MAX, AUTO_FINE_MIN, auto_fine_side
from emodan_ros.faces.detector import DEFAULT_MAX_SIDE, DETECTOR_NAMES


@dataclass(frozen=True)
class SettingInfo:
    """What a user is told about a setting and what values it takes (ranges are inclusive)."""

    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    runtime: bool = True  # may change while frames flow (else fixed when the pipeline is built)


def setting(default: Any, description: str, low: float | None = None, high: float | None = None,
            choices: tuple[str, ...] = (), runtime: bool = True) -> Any:
    """A dataclass field carrying its :class:`SettingInfo`."""
    return field(default=default, metadata={"setting": SettingInfo(description, low, high, choices, runtime)})


def settings_of(cls: type) -> dict[str, tuple[Any, SettingInfo]]:
    """{name: (default, info)} of a settings dataclass, in declaration order."""
    return {f.name: (f.default, f.metadata["setting"]) for f in dataclasses.fields(cls)}


def check_setting(cls: type, name: str, value: Any) -> Any:
    """``value`` converted to the field's type, or a ValueError that names the setting and its range."""
    default, info = settings_of(cls)[name]
    kind = type(default)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    elif kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        value = kind(value)
        if (info.low is not None and value < info.low) or (info.high is not None and value > info.high):
            raise ValueError(f"{name} must be in [{info.low:g}, {info.high:g}], got {value:g}")
    elif not isinstance(value, kind):
        raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}")
    if info.choices and value not in info.choices:
        raise ValueError(f"{name} must be one of {', '.join(info.choices)}, got {value!r}")
    return value


class _Checked:
    """Validation on construction and a validated ``replace``."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, f.name, check_setting(type(self), f.name, getattr(self, f.name)))

    def replace(self, **changes: Any) -> Any:
        unknown = set(changes) - set(settings_of(type(self)))
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class PipelineConfig(_Checked):
    """How faces are followed between detections and how their emotions are smoothed."""

    redetect_every: int = setting(5, "Run the detector every N processed frames; faces are followed by "
                                     "their landmarks in between (1 = detect every frame).", 1, 1000)
    min_quality: float = setting(0.3, "Landmark quality below which a face is re-detected in the next "
                                      "frame.", 0.0, 1.0)
    max_faces: int = setting(8, "At most this many faces per frame (the largest are kept).", 1, 100)
    iou_threshold: float = setting(0.3, "Box overlap (IoU) for a face to keep its id between frames.",
                                   0.01, 1.0)
    max_missed: int = setting(5, "Frames a face may go unseen before its id is forgotten.", 0, 1000)
    smoothing: float = setting(0.5, "Emotion smoothing per face: weight of the past in an exponential "
                                    "moving average (0 = off, 0.9 = slow).", 0.0, 0.99)
    detect_async: bool = setting(True, "Run the face detector on its own thread: followed faces never wait "
                                       "for it, new faces appear one detector run later (false: a detection "
                                       "frame waits for the detector; same answers on any machine).")
    idle_detector_share: float = setting(0.5, "With detect_async and nobody to follow, the share of the time "
                                              "the detector may take: a frame waits for it only when its last "
                                              "run ended long enough ago; the frames between are answered at "
                                              "once, with no face (1 = every frame waits; an empty 1280x720 "
                                              "scene then takes a whole core).", 0.05, 1.0)


@dataclass(frozen=True)
class DetectorConfig(_Checked):
    """Which face detector runs and at what resolution (fixed when the pipeline is built)."""

    detector: str = setting("blaze", "Face detector: blaze (MediaPipe BlazeFace short-range, shipped; finds "
                                     "faces from about 24 px), haar (OpenCV cascade, needs about 48-80 px), "
                                     "dlib (needs `pip install dlib-bin`) or yunet (needs detector_model_path).",
                            choices=DETECTOR_NAMES, runtime=False)
    detector_model_path: str = setting("", "Model file: yunet's ONNX (required), or another BlazeFace short-range "
                                           ".tflite for blaze (empty: the shipped one).", runtime=False)
    detector_max_side: int = setting(0, "The detector sees the frame downscaled to this longer side [px]; for "
                                        f"blaze, its fine pass. 0 = the detector's own size (blaze: "
                                        f"{AUTO_FINE_FRACTION:g} of the frame's longer side within "
                                        f"{AUTO_FINE_MIN}-{AUTO_FINE_MAX}, so {auto_fine_side(640, 480)} for "
                                        f"640x480 and {auto_fine_side(1280, 720)} for 1280x720; others "
                                        f"{DEFAULT_MAX_SIDE['haar']}). Haar needs faces of about 40 px at that size.",
                                     0, 8192, runtime=False)
    detector_min_face_fraction: float = setting(0.08, "Smallest face the haar detector looks for, as a fraction "
                                                      "of the shorter image side.", 0.0, 1.0, runtime=False)
