"""Emotional DAN's joint loss with per-sample masks.

``L = alpha * sum_t NME(S_t, S*) + beta * CE(E*, E_t)``, landmark error normalised by the distance
between the eye centres. Masks let emotion-only data (FER+) and landmark-only data (300-W) train
one network: a sample adds only the terms it has labels for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from emodan_ros.model.dan import DANOutput
from emodan_ros.model.geometry import inter_pupil_distance


@dataclass(frozen=True)
class LossConfig:
    alpha: float = 0.5  # landmark weight (EmotionalDAN's code uses 0.5 / 0.5)
    beta: float = 0.5  # emotion weight
    scheme: str = "crossentropy"  # FER+ scheme; 'multilabel' uses -log max_k t_k q_k
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.scheme not in ("majority", "multilabel", "probability", "crossentropy"):
            raise ValueError(f"unknown label scheme {self.scheme!r}")


def landmark_nme(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-sample mean point error over the truth's eye-centre (inter-pupil) distance. (B, 68, 2) -> (B,)."""
    error = (predicted - truth).norm(dim=-1).mean(dim=-1)
    return error / inter_pupil_distance(truth).clamp_min(1e-6)


def emotion_loss(logits: torch.Tensor, target: torch.Tensor, scheme: str, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample emotion loss for a target distribution (one-hot, votes, or a multi-label mask)."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    if scheme == "multilabel":
        # FER+ multi-label: any class the annotators chose is an acceptable answer.
        return -log_probs.masked_fill(target <= 0, -1e4).amax(dim=-1)
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / target.shape[-1]
    return -(target * log_probs).sum(dim=-1)


@dataclass
class LossTerms:
    total: torch.Tensor
    landmark: torch.Tensor  # mean NME of the last stage over samples with landmarks
    emotion: torch.Tensor  # mean emotion loss over samples with an emotion label


def joint_loss(
    output: DANOutput,
    landmarks: torch.Tensor,
    landmark_mask: torch.Tensor,
    emotion_target: torch.Tensor,
    emotion_mask: torch.Tensor,
    config: LossConfig,
    stages: list[int] | None = None,
) -> LossTerms:
    """Masked joint loss summed over ``stages`` (default: every stage the output has).

    landmarks: (B, 68, 2) unit coordinates; masks: (B,) bool; emotion_target: (B, C).
    """
    stages = stages if stages is not None else list(range(len(output.landmarks)))
    zero = output.landmarks[0].new_zeros(())
    lm_weight = landmark_mask.float()
    em_weight = emotion_mask.float()
    lm_count = lm_weight.sum().clamp_min(1.0)
    em_count = em_weight.sum().clamp_min(1.0)
    total = zero
    last_lm, last_em = zero, zero
    for index in stages:
        nme = landmark_nme(output.landmarks[index].float(), landmarks.float())
        last_lm = (nme * lm_weight).sum() / lm_count
        total = total + config.alpha * last_lm
        logits = output.logits[index]
        if logits is not None:
            ce = emotion_loss(logits, emotion_target, config.scheme, config.label_smoothing)
            last_em = (ce * em_weight).sum() / em_count
            total = total + config.beta * last_em
    return LossTerms(total, last_lm.detach(), last_em.detach())
