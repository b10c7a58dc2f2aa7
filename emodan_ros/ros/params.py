"""The emotion_node's parameter schema: the pipeline's settings (from ``faces.config``) plus the
node's own, each with a default, a description, a range or choices and a read-only flag.

``config/emotion.yaml`` lists exactly these defaults (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from emodan_ros.faces.config import DetectorConfig, PipelineConfig, settings_of
from emodan_ros.model.device import DEVICES, PRECISIONS

RELIABILITIES = ("best_effort", "reliable")
TRANSPORTS = ("raw", "compressed")


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, description, range or choices, and whether it is fixed at start."""

    default: Any
    description: str
    read_only: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


def _from_settings(cls: type) -> dict[str, ParamSpec]:
    return {name: ParamSpec(default, info.description, not info.runtime, info.low, info.high, info.choices)
            for name, (default, info) in settings_of(cls).items()}


PIPELINE_PARAMS = tuple(settings_of(PipelineConfig))
DETECTOR_PARAMS = tuple(settings_of(DetectorConfig))

PARAMS: dict[str, ParamSpec] = {
    "image_transport": ParamSpec("raw", "Transport of the camera images, as image_transport names it: raw "
                                 "(`image`, sensor_msgs/Image) or compressed (`image/compressed`, "
                                 "sensor_msgs/CompressedImage). The subscription's QoS (sensor data: best effort) "
                                 "is overridable the standard way: qos_overrides.<topic>.subscription.reliability, "
                                 "depth, history, durability.", read_only=True, choices=TRANSPORTS),
    "compressed": ParamSpec(False, "Deprecated (removed in 0.3): true = image_transport compressed.",
                            read_only=True),
    "qos_reliability": ParamSpec("best_effort", "Deprecated (removed in 0.3): the default reliability of the "
                                 "image subscription; use qos_overrides.<topic>.subscription.reliability.",
                                 read_only=True, choices=RELIABILITIES),
    "qos_depth": ParamSpec(5, "Deprecated (removed in 0.3): the default history depth of the image "
                           "subscription; use qos_overrides.<topic>.subscription.depth.", read_only=True,
                           low=1, high=100),
    "model_path": ParamSpec("", "Model checkpoint (.pt). Empty: the package's default model "
                            "(share/emodan_ros/models/emodan_default.pt).", read_only=True),
    "allow_random_model": ParamSpec(False, "With no model file found, run an UNTRAINED random model "
                                    "instead of refusing to start. Outputs are meaningless: for plumbing "
                                    "tests and speed benchmarks only.", read_only=True),
    "device": ParamSpec("auto", "Inference device: auto (CUDA when available), cuda or cpu.",
                        read_only=True, choices=DEVICES),
    "precision": ParamSpec("auto", "Inference precision: auto (fp16 on CUDA, bf16 on a CPU with bf16 units "
                           "when faster), fp32, bf16 or fp16 (CUDA only).", read_only=True, choices=PRECISIONS),
    "flip_average": ParamSpec(False, "Also run each face mirrored (in the same batch) and average both "
                              "answers: a face and its mirror image get the same emotion. Slightly better "
                              "accuracy and landmarks for twice the network work (figures: README, Speed).",
                              read_only=True),
    "torch_threads": ParamSpec(1, "CPU threads for PyTorch (0 = PyTorch's default, all cores). One thread "
                               "is the default: the per-frame batch is small, and on a CPU shared with other "
                               "nodes more threads can make inference much slower.", read_only=True,
                               low=0, high=256),
    **_from_settings(DetectorConfig),
    **_from_settings(PipelineConfig),
    "assumed_hfov_deg": ParamSpec(60.0, "Horizontal field of view assumed for head pose when no matching "
                                  "camera_info arrives [deg] (diagnostics say which is used).", low=1.0, high=179.0),
    "looking_threshold_deg": ParamSpec(20.0, "A face looks at the camera when the angle between its forward "
                                       "axis and the ray to the camera is at most this [deg].", low=0.0, high=90.0),
    "hri_output": ParamSpec(False, "Also publish ROS4HRI (REP 155) topics under /humans/faces (needs hri_msgs).",
                            read_only=True),
    "publish_debug_image": ParamSpec(True, "Publish the annotated `debug_image` (only while it has "
                                     "subscribers)."),
    "max_image_pixels": ParamSpec(40_000_000, "Frames with more pixels than this are refused before any "
                                  "allocation (counted as bad input).", low=1, high=1_000_000_000),
    "diagnostics_period": ParamSpec(1.0, "Seconds between /diagnostics messages.", read_only=True,
                                    low=0.1, high=60.0),
    "latency_warn_ms": ParamSpec(250.0, "Diagnostics warn when the median latency (image stamp to "
                                 "publication) passes this [ms].", low=1.0, high=60_000.0),
    "drop_warn_ratio": ParamSpec(0.5, "Diagnostics warn when this fraction of incoming frames was "
                                 "dropped in a period.", low=0.0, high=1.0),
}


def descriptor(name: str, spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor of a parameter: what `ros2 param describe` shows and rclpy enforces."""
    text = spec.description
    if spec.choices:
        text += f" One of: {', '.join(spec.choices)}."
    d = ParameterDescriptor(name=name, description=text, read_only=spec.read_only)
    if spec.low is not None and spec.high is not None and not isinstance(spec.default, bool):
        if isinstance(spec.default, int):
            d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
        elif isinstance(spec.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                         to_value=float(spec.high), step=0.0)]
    return d


def invalid_reason(values: dict[str, Any]) -> str:
    """Why a (partial) parameter set is unusable, '' when fine (ranges are also checked by rclpy)."""
    for name, value in values.items():
        spec = PARAMS.get(name)
        if spec is not None and spec.choices and value not in spec.choices:
            return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if values.get("detector") == "yunet" and not values.get("detector_model_path"):
        return "detector 'yunet' needs detector_model_path (its ONNX file)"
    return ""


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f'`"{value}"`' if isinstance(value, str) else f"`{value}`"


def markdown_table() -> str:
    """The README's parameter table (written by tools/readme_params.py; a test keeps README equal)."""
    rows = ["| parameter | default | run-time | range / choices | meaning |", "|---|---|---|---|---|"]
    for name, spec in PARAMS.items():
        span = ", ".join(spec.choices) if spec.choices else (
            f"{spec.low:g} .. {spec.high:g}" if spec.low is not None and spec.high is not None else "")
        rows.append(f"| `{name}` | {_cell(spec.default)} | {'no' if spec.read_only else 'yes'} | {span} | "
                    f"{spec.description} |")
    return "\n".join(rows)

