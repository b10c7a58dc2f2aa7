"""Run a trained Emotional DAN on faces in full frames: crops and warps on the model's device.

The node, the evaluation and the benchmarks all go through :class:`Predictor`, so a face is cut,
normalised and decoded the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emodan_ros.model import geometry
from emodan_ros.model.checkpoint import load_model
from emodan_ros.faces.crop import CROP_SCALE, FLIP_INDEX, aligned_face, apply_affine, crop_matrix, invert_affine, \
    to_gray
from emodan_ros.model.dan import PRESETS, DANConfig, EmotionalDAN, fold_batch_norms, standardize
from emodan_ros.model.device import PRECISIONS, faster_cpu_precision, resolve_device

@dataclass
class Prediction:
    """Per-face results for one call (N faces)."""

    landmarks: np.ndarray  # (N, 68, 2) float32, image pixels (OpenCV centres)
    probs: np.ndarray  # (N, C) float32, rows sum to 1
    quality: np.ndarray  # (N,) float32 in [0, 1]


def landmark_quality(output_landmarks: list[torch.Tensor], mean_shape: torch.Tensor) -> torch.Tensor:
    """How settled the landmarks are, in [0, 1].

    With several stages: the last stage's correction relative to the eye distance (a converged
    alignment barely moves). With one stage: how far the shape is from a similarity transform of
    the mean shape (non-faces give implausible shapes).
    """
    last = output_landmarks[-1].float()
    if len(output_landmarks) > 1:
        reference = output_landmarks[-2].float()
    else:
        mean = mean_shape.unsqueeze(0).expand_as(last)
        reference = geometry.transform_points(geometry.estimate_similarity(mean, last), mean)
    change = (last - reference).norm(dim=-1).mean(dim=-1)
    scale = geometry.inter_pupil_distance(last).clamp_min(1e-6)
    return torch.exp(-10.0 * change / scale)


class Predictor:
    """A loaded model on a device with a precision, turning (frame, boxes) into landmarks and emotions."""

    def __init__(self, model: EmotionalDAN, device: str = "auto", precision: str = "auto",
                 source: str = "", flip_average: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = resolve_device(device)
        self.source = source
        self.flip_average = flip_average
        self._mirror_index = torch.from_numpy(FLIP_INDEX).to(self.device)
        self.model = fold_batch_norms(model).to(self.device)
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.config: DANConfig = model.config
        self.class_names: tuple[str, ...] = tuple(model.config.class_names)
        self.input_size: int = model.config.input_size
        self.precision = self._choose_precision(precision)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "auto",
                        flip_average: bool = False) -> Predictor:
        model, _ = load_model(path)
        return cls(model, device, precision, source=str(path), flip_average=flip_average)

    @classmethod
    def random(cls, config: DANConfig | None = None, device: str = "cpu", precision: str = "fp32",
               seed: int = 0, flip_average: bool = False) -> Predictor:
        """An untrained model of the given (default: CPU preset) size, for plumbing tests and benchmarks."""
        torch.manual_seed(seed)
        return cls(EmotionalDAN(config or PRESETS["cpu"]), device, precision, source="random (untrained)",
                   flip_average=flip_average)

    def _choose_precision(self, precision: str) -> str:
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 inference is for CUDA; use bf16 or fp32 on the CPU")
        if precision != "auto":
            return precision
        if self.device.type == "cuda":
            return "fp16"
        return self._fastest_cpu_precision()

    def _fastest_cpu_precision(self) -> str:
        probe = torch.zeros(1, 1, self.input_size, self.input_size)

        def step(candidate: str) -> None:
            self.precision = candidate
            self._forward(probe)

        return faster_cpu_precision(step)

    @torch.inference_mode()
    def _forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Grey crops (B, 1, S, S) in 0..255 on the device -> unit landmarks, probabilities, quality.

        With ``flip_average`` the mirrored crops run in the same batch and both answers are averaged
        (mirrored landmarks re-indexed left/right): twice the network work for steadier outputs.
        """
        x = standardize(crops)
        if self.flip_average:
            x = torch.cat([x, x.flip(-1)])
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            output = self.model(x)
        landmarks = output.final_landmarks.float()
        probs = F.softmax(output.final_logits.float(), dim=-1)
        quality = landmark_quality(output.landmarks, self.model.mean_shape)
        if self.flip_average:
            count = len(crops)
            mirrored = landmarks[count:, self._mirror_index]
            mirrored[..., 0] = 1.0 - mirrored[..., 0]  # unit coordinates: pixel j -> S - 1 - j
            landmarks = (landmarks[:count] + mirrored) / 2
            probs = (probs[:count] + probs[count:]) / 2
            quality = (quality[:count] + quality[count:]) / 2
        return landmarks, probs, quality

    def aligned_face(self, image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The face warped onto the model's mean shape at its input size (uint8 grey)."""
        mean = geometry.unit_to_pixels(self.model.mean_shape, self.input_size).cpu().numpy()
        return aligned_face(image_bgr, landmarks, mean, self.input_size)

    def predict(self, image_bgr: np.ndarray, boxes: np.ndarray) -> Prediction:
        """Faces given by boxes (N, 4) xyxy in a BGR/grey frame -> per-face landmarks in frame pixels."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        count = len(boxes)
        if count == 0:
            return Prediction(np.zeros((0, 68, 2), np.float32),
                              np.zeros((0, len(self.class_names)), np.float32), np.zeros(0, np.float32))
        crops, to_image = self._prepare(image_bgr, boxes)
        return self._finish(crops, to_image)

    def _prepare(self, image_bgr: np.ndarray, boxes: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Grey crops (N, 1, S, S) cut on the device, and the crop->frame matrices (N, 2, 3)."""
        size = self.input_size
        gray = torch.from_numpy(np.ascontiguousarray(to_gray(image_bgr))).to(self.device).float()[None, None]
        crops = torch.empty(len(boxes), 1, size, size, device=self.device)
        to_image = np.empty((len(boxes), 2, 3))
        for index, box in enumerate(boxes):
            matrix = crop_matrix(box, size, CROP_SCALE)  # frame pixels -> crop pixels
            to_image[index] = invert_affine(matrix)
            crops[index] = cut_crop(gray, matrix, size)[0]
        return crops, to_image

    def _finish(self, crops: torch.Tensor, to_image: np.ndarray) -> Prediction:
        unit, probs, quality = self._forward(crops)
        crop_pixels = geometry.unit_to_pixels(unit, self.input_size).cpu().numpy().astype(np.float64)
        landmarks = np.einsum("nij,nkj->nki", to_image[:, :, :2], crop_pixels) + to_image[:, None, :, 2]
        return Prediction(landmarks.astype(np.float32), probs.cpu().numpy(), quality.cpu().numpy())

    def predict_images(self, images: np.ndarray, boxes: np.ndarray) -> Prediction:
        """One face per image, given by its box (N images of one size, N boxes), as one batch."""
        results = [self._prepare(image, box[None]) for image, box in zip(images, boxes)]
        crops = torch.cat([crop for crop, _ in results])
        to_image = np.concatenate([matrix for _, matrix in results])
        return self._finish(crops, to_image)

    def predict_crops(self, crops: np.ndarray) -> Prediction:
        """Images that already are face crops (FER style, crop convention of :mod:`emodan_ros.faces.crop`)."""
        batch = [to_gray(c) for c in crops]
        size = self.input_size
        tensor = torch.stack([torch.from_numpy(np.ascontiguousarray(c)) for c in batch]).to(self.device).float()
        tensor = tensor.unsqueeze(1)
        if tensor.shape[-1] != size or tensor.shape[-2] != size:
            tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        unit, probs, quality = self._forward(tensor)
        scale = np.array([batch[0].shape[1] / size, batch[0].shape[0] / size])
        pixels = (geometry.unit_to_pixels(unit, size).cpu().numpy() + 0.5) * scale - 0.5
        return Prediction(pixels.astype(np.float32), probs.cpu().numpy(), quality.cpu().numpy())


def cut_crop(image: torch.Tensor, matrix: np.ndarray, size: int) -> torch.Tensor:
    """The crop of :func:`emodan_ros.faces.crop.make_crop` for a (1, 1, H, W) float image, on its device.

    Training shrinks a big face's image with area averaging until the warp zooms by exactly 1/2,
    then warps bilinearly; the network learnt that sharpness, so the node does the same, computing
    only the shrunken pixels the crop reads. (The blurrier crop used before cost 0.3 points of NME.)
    """
    zoom = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    if zoom >= 0.5:
        return _sample_crop(image, matrix, size)
    factor = 2.0 * zoom
    height, width = image.shape[-2:]
    corners = apply_affine(invert_affine(matrix), np.array([[-1.0, -1.0], [size, -1.0], [-1.0, size], [size, size]]))
    low, high = (corners.min(axis=0) + 0.5) * factor - 0.5, (corners.max(axis=0) + 0.5) * factor - 0.5
    rows, y0, y1, first_row = _area_weights(low[1], high[1], height, factor, image.device)
    cols, x0, x1, first_col = _area_weights(low[0], high[0], width, factor, image.device)
    region = rows @ image[..., y0:y1, x0:x1] @ cols.T
    # region pixel r -> shrunken pixel r + first -> frame pixel (r + first + 0.5) / factor - 0.5
    linear = matrix[:, :2] / factor
    offset = matrix[:, :2] @ ((np.array([first_col, first_row]) + 0.5) / factor - 0.5) + matrix[:, 2]
    return _sample_crop(region, np.hstack([linear, offset[:, None]]), size)


def _area_weights(low: float, high: float, length: int, factor: float,
                  device: torch.device) -> tuple[torch.Tensor, int, int, int]:
    """OpenCV INTER_AREA by ``factor`` along one axis, for the shrunken pixels that cover [low, high].

    Returns the weights (shrunken pixels x source pixels), the source range [j0, j1) they read and
    the index of the first shrunken pixel.
    """
    total = max(1, round(length * factor))
    first = int(np.clip(np.floor(low) - 2, 0, total - 1))
    last = int(np.clip(np.ceil(high) + 3, first + 1, total))
    j0, j1 = int(np.floor(first / factor)), min(length, int(np.ceil(last / factor)) + 1)
    start = np.arange(first, last)[:, None] / factor
    pixel = np.arange(j0, j1)[None, :]
    overlap = (np.minimum(start + 1.0 / factor, np.minimum(pixel + 1, length)) - np.maximum(start, pixel)).clip(0.0)
    weights = overlap / overlap.sum(axis=1, keepdims=True).clip(1e-12)
    return torch.tensor(weights, dtype=torch.float32, device=device), j0, j1, first


def _sample_crop(image: torch.Tensor, matrix: np.ndarray, size: int) -> torch.Tensor:
    """Bilinear crop of (1, 1, H, W) ``image`` through the pixel affine ``matrix`` (image -> crop)."""
    height, width = image.shape[-2:]
    inverse = invert_affine(matrix)  # crop pixels -> image pixels
    # Crop grid coordinate u_out = (2j + 1) / size - 1; image pixel x -> u_in = (2x + 1) / W - 1.
    out_to_pix = np.array([[size / 2, 0, size / 2 - 0.5], [0, size / 2, size / 2 - 0.5], [0, 0, 1]])
    pix_to_in = np.array([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]])
    full = np.vstack([inverse, [0, 0, 1]])
    theta = (pix_to_in @ full @ out_to_pix)[:2]
    theta_t = torch.tensor(theta, dtype=torch.float32, device=image.device).unsqueeze(0)
    return F.grid_sample(image, geometry.sampling_grid(theta_t, size), mode="bilinear", padding_mode="border",
                         align_corners=False)
