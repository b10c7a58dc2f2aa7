"""Emotional DAN: Deep Alignment Network stages with an emotion head.

Kowalski et al. (2017) refine 68 landmarks over stages; each later stage sees the face warped to
the mean shape's pose, a heatmap of the current landmarks and a feature image from the previous
stage. Tautkute & Trzcinski (2018) add an emotion head. The paper-size network and a model that
runs in real time on a 2-core CPU are the same code with a different ``DANConfig``.
"""

from __future__ import annotations

import copy

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emodan_ros.model import geometry
from emodan_ros.faces.classes import FERPLUS_CLASSES

NUM_LANDMARKS = 68
BLOCKS = ("vgg", "dwsep")


@dataclass(frozen=True)
class DANConfig:
    """Everything that fixes the network's shape (stored in checkpoints)."""

    input_size: int = 112
    num_stages: int = 2
    width: float = 1.0  # channel multiplier on DAN's 64/128/256/512
    convs_per_block: int = 2
    fc_size: int = 256
    dropout: float = 0.5
    class_names: tuple[str, ...] = field(default_factory=lambda: tuple(FERPLUS_CLASSES))
    emotion_every_stage: bool = False
    # Per-stage input sizes (empty: every stage at input_size). The crop is cut at input_size; the
    # first stage sees it downsampled (a coarse shape needs few pixels), later stages warp it to theirs.
    stage_sizes: tuple[int, ...] = ()
    # Per-stage block type (empty: all "vgg"): "vgg" = 3x3 conv, "dwsep" = depthwise 3x3 + pointwise 1x1
    # (about 8x fewer multiply-adds, which is what lets a refining stage run at DAN's 112 px on a CPU).
    stage_blocks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.num_stages <= 3:
            raise ValueError(f"num_stages must be 1, 2 or 3, got {self.num_stages}")
        for name in ("stage_sizes", "stage_blocks"):
            value = getattr(self, name)
            if value and len(value) != self.num_stages:
                raise ValueError(f"{name} needs one entry per stage ({self.num_stages}), got {list(value)}")
        for size in (self.input_size, *self.stage_sizes):
            if size % 16 or size <= 0:
                raise ValueError(f"input and stage sizes must be a positive multiple of 16 (four 2x2 pools), got {size}")
        if self.stage_sizes and max(self.stage_sizes) > self.input_size:
            raise ValueError(f"no stage may be larger than the crop (input_size {self.input_size})")
        unknown = set(self.stage_blocks) - set(BLOCKS)
        if unknown:
            raise ValueError(f"stage_blocks must be among {BLOCKS}, got {sorted(unknown)}")
        if self.width <= 0:
            raise ValueError(f"width must be positive, got {self.width}")
        if len(self.class_names) < 2:
            raise ValueError("a model needs at least two emotion classes")

    def size_of(self, stage: int) -> int:
        return self.stage_sizes[stage] if self.stage_sizes else self.input_size

    def block_of(self, stage: int) -> str:
        return self.stage_blocks[stage] if self.stage_blocks else "vgg"

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(max(8, int(round(c * self.width))) for c in (64, 128, 256, 512))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DANConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown DANConfig fields: {sorted(unknown)}")
        values = dict(data)
        for key in ("class_names", "stage_sizes", "stage_blocks"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


PRESETS: dict[str, DANConfig] = {
    # DAN's own size (Kowalski et al.): 112 px, full-width VGG stages.
    "dan112": DANConfig(input_size=112, num_stages=2, width=1.0),
    # Emotional DAN's table: 224 px input, two stages.
    "paper224": DANConfig(input_size=224, num_stages=2, width=1.0),
    # Real time on a 2-core CPU and trainable on one in under an hour: FER faces are 48 px, so a
    # 48 px input loses nothing for emotion; one conv per block at half width.
    "cpu": DANConfig(input_size=48, num_stages=2, width=0.5, convs_per_block=1, emotion_every_stage=True),
    # Real time with landmarks at DAN's resolution: a coarse VGG stage at 64 px, then the refining stage
    # (the face warped to the mean pose, heatmap, feature image) at 112 px in depthwise-separable blocks;
    # emotion is read at both stages and published from the aligned 112 px face.
    "rt112": DANConfig(input_size=112, num_stages=2, width=0.5, convs_per_block=1, emotion_every_stage=True,
                       stage_sizes=(64, 112), stage_blocks=("vgg", "dwsep")),
}


class DANStage(nn.Module):
    """One VGG-style feed-forward stage: conv blocks, fc, landmark offsets and optional emotion logits."""

    def __init__(self, config: DANConfig, in_channels: int, with_emotion: bool, index: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        separable = config.block_of(index) == "dwsep"
        for block, width in enumerate(config.channels):
            for conv in range(config.convs_per_block):
                if separable and block == 0 and conv == 0:
                    # A strided full conv as the stem (MobileNet's): the stage sees every input pixel but
                    # its blocks run at half resolution, which is where most of a VGG stage's time goes.
                    layers.append(nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False))
                elif separable:
                    layers += [nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                               nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                               nn.Conv2d(channels, width, 1, bias=False)]
                else:
                    layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=False))
                layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
            if not (separable and block == 0):
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        spatial = config.size_of(index) // 16
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(channels * spatial * spatial, config.fc_size),
            nn.BatchNorm1d(config.fc_size),
            nn.ReLU(inplace=True),
        )
        self.landmarks = nn.Linear(config.fc_size, NUM_LANDMARKS * 2)
        nn.init.zeros_(self.landmarks.weight)
        nn.init.zeros_(self.landmarks.bias)
        self.emotion = nn.Linear(config.fc_size, len(config.class_names)) if with_emotion else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        hidden = self.fc(self.features(x))
        offsets = self.landmarks(hidden).view(-1, NUM_LANDMARKS, 2)
        logits = self.emotion(hidden) if self.emotion is not None else None
        return hidden, offsets, logits


class FeatureImage(nn.Module):
    """DAN's feature image: the previous stage's fc features as a (size/2)^2 map, upsampled x2."""

    def __init__(self, fc_size: int, size: int) -> None:
        super().__init__()
        self.half = size // 2
        self.project = nn.Linear(fc_size, self.half * self.half)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        image = F.relu(self.project(hidden)).view(-1, 1, self.half, self.half)
        return F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)


@dataclass
class DANOutput:
    """Per-stage predictions: landmarks in unit crop coordinates, emotion logits where a head exists."""

    landmarks: list[torch.Tensor]
    logits: list[torch.Tensor | None]

    @property
    def final_landmarks(self) -> torch.Tensor:
        return self.landmarks[-1]

    @property
    def final_logits(self) -> torch.Tensor:
        logits = self.logits[-1]
        assert logits is not None, "the last stage always has an emotion head"
        return logits


class EmotionalDAN(nn.Module):
    """Multi-stage DAN with emotion classification (input: standardised grey crops)."""

    def __init__(self, config: DANConfig, mean_shape: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        if mean_shape is None:
            mean_shape = default_mean_shape()
        if tuple(mean_shape.shape) != (NUM_LANDMARKS, 2):
            raise ValueError(f"mean_shape must be (68, 2) unit coordinates, got {tuple(mean_shape.shape)}")
        self.register_buffer("mean_shape", mean_shape.float().clone())
        last = config.num_stages - 1
        self.stages = nn.ModuleList(
            DANStage(config, 1 if i == 0 else 3, with_emotion=config.emotion_every_stage or i == last, index=i)
            for i in range(config.num_stages)
        )
        self.feature_images = nn.ModuleList(
            FeatureImage(config.fc_size, config.size_of(i)) for i in range(1, config.num_stages)
        )

    def forward(self, image: torch.Tensor, stages: int | None = None) -> DANOutput:
        """image: (B, 1, S, S) standardised crops. ``stages`` runs only the first few (stage-wise training)."""
        stages = stages or self.config.num_stages
        batch = image.shape[0]
        mean = self.mean_shape.unsqueeze(0).expand(batch, -1, -1)
        first = self.config.size_of(0)
        coarse = image if first == image.shape[-1] else F.interpolate(
            image, size=(first, first), mode="bilinear", antialias=True, align_corners=False)
        hidden, offsets, logits = self.stages[0](coarse)
        shape = mean + offsets
        out = DANOutput([shape], [logits])
        for index in range(1, stages):
            # Each stage refines the previous estimate taken as given (as DAN trains stage by stage):
            # no gradient flows back through the transform and heatmap built from it.
            anchor = shape.detach()
            to_mean = geometry.estimate_similarity(anchor, mean)
            size = self.config.size_of(index)
            warped = geometry.warp_image(image, to_mean, size)
            aligned = geometry.transform_points(to_mean, anchor)
            heatmap = geometry.landmark_heatmap(aligned, size)
            feature = self.feature_images[index - 1](hidden)
            stage_input = torch.cat([warped, heatmap.to(warped.dtype), feature.to(warped.dtype)], dim=1)
            hidden, offsets, logits = self.stages[index](stage_input)
            shape = geometry.transform_points(geometry.invert_transform(to_mean), aligned + offsets)
            out.landmarks.append(shape)
            out.logits.append(logits)
        return out


def fold_batch_norms(model: EmotionalDAN) -> EmotionalDAN:
    """An inference copy with each BatchNorm folded into the conv or linear layer before it.

    Same outputs (eval statistics, to float rounding); a BatchNorm is a separate pass over every
    activation on the CPU, about a tenth of a forward. The original model (for training and
    checkpoints) is left as it is.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    folded = copy.deepcopy(model).eval()
    for sequence in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(sequence)):
            before, norm = sequence[i - 1], sequence[i]
            if isinstance(norm, nn.BatchNorm2d) and isinstance(before, nn.Conv2d):
                sequence[i - 1] = fuse_conv_bn_eval(before, norm)
            elif isinstance(norm, nn.BatchNorm1d) and isinstance(before, nn.Linear):
                sequence[i - 1] = fuse_linear_bn_eval(before, norm)
            else:
                continue
            sequence[i] = nn.Identity()
    return folded


def default_mean_shape() -> torch.Tensor:
    """A plausible frontal 68-point shape in unit crop coordinates, used until data gives the real one.

    Training replaces it with the mean of the landmark training set (stored in the checkpoint);
    this placeholder only lets an untrained model run with sane geometry.
    """
    t = torch.linspace(0, 1, 17)
    jaw = torch.stack([0.1 + 0.8 * t, 0.3 + 0.6 * torch.sin(torch.pi * t)], dim=1)
    brow = torch.linspace(0, 1, 5)
    right_brow = torch.stack([0.18 + 0.25 * brow, 0.3 - 0.04 * torch.sin(torch.pi * brow)], dim=1)
    left_brow = torch.stack([0.57 + 0.25 * brow, 0.3 - 0.04 * torch.sin(torch.pi * brow)], dim=1)
    nose_bridge = torch.stack([torch.full((4,), 0.5), torch.linspace(0.38, 0.55, 4)], dim=1)
    nostrils = torch.stack([torch.linspace(0.42, 0.58, 5), torch.full((5,), 0.62)], dim=1)
    angles = torch.linspace(0, 2 * torch.pi, 7)[:-1]
    eye = torch.stack([-torch.cos(angles) * 0.07, -torch.sin(angles) * 0.025], dim=1)
    right_eye = eye + torch.tensor([0.32, 0.4])
    left_eye = eye + torch.tensor([0.68, 0.4])
    outer = torch.linspace(0, 2 * torch.pi, 13)[:-1]
    outer_lip = torch.stack([-torch.cos(outer) * 0.15, -torch.sin(outer) * 0.06], dim=1) + torch.tensor([0.5, 0.77])
    inner = torch.linspace(0, 2 * torch.pi, 9)[:-1]
    inner_lip = torch.stack([-torch.cos(inner) * 0.1, -torch.sin(inner) * 0.02], dim=1) + torch.tensor([0.5, 0.77])
    return torch.cat([jaw, right_brow, left_brow, nose_bridge, nostrils, right_eye, left_eye, outer_lip, inner_lip])


def standardize(crops: torch.Tensor) -> torch.Tensor:
    """Per-crop standardisation of grey crops (B, 1, S, S) in 0..255: the input normalisation of every model.

    Per-image statistics make the network indifferent to exposure and camera gain, which vary far
    more on robots than in the training photos.
    """
    crops = crops.float()
    mean = crops.mean(dim=(1, 2, 3), keepdim=True)
    std = crops.std(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
    return (crops - mean) / std
