"""Pure, batched, differentiable geometry for DAN's stage transitions.

Shapes live in *unit* crop coordinates: ``q = (pixel + 0.5) / size`` (OpenCV pixel centres), so
``q`` spans [0, 1] over the crop whatever its size, and ``2q - 1`` is exactly the coordinate
``torch.nn.functional.affine_grid`` uses with ``align_corners=False``.
A similarity transform is a (B, 2, 3) matrix ``[A | t]`` acting as ``p -> A p + t``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Squared distances held at once by landmark_heatmap when it takes several points per step (2 MiB in fp32).
HEATMAP_CHUNK_FLOATS = 1 << 19


def estimate_similarity(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Closed-form least-squares similarity transform taking ``source`` onto ``target``.

    source, target: (B, N, 2). Returns (B, 2, 3). Rotation + uniform scale + translation, no
    reflection, as DAN uses to bring each stage's shape to the mean shape.
    """
    src_mean = source.mean(dim=1, keepdim=True)
    dst_mean = target.mean(dim=1, keepdim=True)
    src = source - src_mean
    dst = target - dst_mean
    norm = (src**2).sum(dim=(1, 2)).clamp_min(1e-12)
    a = (src * dst).sum(dim=(1, 2)) / norm
    b = (src[..., 0] * dst[..., 1] - src[..., 1] * dst[..., 0]).sum(dim=1) / norm
    linear = torch.stack([torch.stack([a, -b], dim=-1), torch.stack([b, a], dim=-1)], dim=-2)
    shift = dst_mean.squeeze(1) - (linear @ src_mean.transpose(1, 2)).squeeze(-1)
    return torch.cat([linear, shift.unsqueeze(-1)], dim=-1)


def transform_points(transform: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply (B, 2, 3) transforms to (B, N, 2) points."""
    return points @ transform[:, :, :2].transpose(1, 2) + transform[:, :, 2].unsqueeze(1)


def invert_transform(transform: torch.Tensor) -> torch.Tensor:
    """Inverse of (B, 2, 3) affine transforms."""
    linear_inv = torch.linalg.inv(transform[:, :, :2])
    shift = -(linear_inv @ transform[:, :, 2:])
    return torch.cat([linear_inv, shift], dim=-1)


def warp_image(image: torch.Tensor, transform: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Resample (B, C, H, W) images so that unit point ``p`` moves to ``transform(p)``.

    Differentiable in both the image and the transform (bilinear ``grid_sample``).
    """
    size = size or image.shape[-1]
    inverse = invert_transform(transform)
    # grid coordinate u = 2q - 1: u_in = A^-1 u_out + (A^-1 (1 - 2 t') ...) folded below.
    linear = inverse[:, :, :2]
    shift = inverse[:, :, 2]
    ones = torch.ones_like(shift)
    theta_shift = 2 * shift + (linear @ ones.unsqueeze(-1)).squeeze(-1) - ones
    theta = torch.cat([linear, theta_shift.unsqueeze(-1)], dim=-1)
    return F.grid_sample(image, sampling_grid(theta, size), mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def sampling_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, size, size), align_corners=False)`` for (B, 2, 3) ``theta``.

    Built from one row and one column term per output coordinate (the grid is separable), not
    a (size*size, 3) base grid times ``theta``: 1.5x (one crop) to 3x (a training batch) faster on
    the CPU, where affine_grid, with the node's per-face crops, was a tenth of a batch-8 predict;
    differentiable in ``theta``.
    """
    u = (torch.arange(size, device=theta.device, dtype=theta.dtype) * 2 + 1) / size - 1
    col, row = u.view(1, 1, size), u.view(1, size, 1)
    axes = [theta[:, k, 0, None, None] * col + (theta[:, k, 1, None, None] * row + theta[:, k, 2, None, None])
            for k in (0, 1)]
    return torch.stack(axes, dim=-1)


def landmark_heatmap(points: torch.Tensor, size: int) -> torch.Tensor:
    """DAN's landmark heatmap ``H(x, y) = 1 / (1 + min_i ||(x, y) - s_i||)`` in crop pixels.

    points: (B, N, 2) in unit coordinates. Returns (B, 1, size, size).
    Squared distances split into x and y parts, a running minimum over the points, one square
    root at the end: exact (``torch.cdist``'s matrix-product form is off by up to 0.05 px near a
    point) and 4-6x faster at training batch sizes, where the heatmap was about a quarter of a step.
    Not differentiable: DAN builds it from the previous stage's shape taken as given. The points
    are taken a few at a time where those distances fit in :data:`HEATMAP_CHUNK_FLOATS` (the
    node's batches of 1-8 faces: 1.6-2.8x faster than one point at a time, where per-call
    overhead dominated), otherwise one at a time in place (training batches).
    """
    with torch.no_grad():
        coords = torch.arange(size, device=points.device, dtype=points.dtype) + 0.5
        pixels = points * size
        dx = (coords.view(1, 1, size) - pixels[..., 0:1]).square()  # (B, N, size): columns
        dy = (coords.view(1, 1, size) - pixels[..., 1:2]).square()  # rows
        count = pixels.shape[1]
        step = HEATMAP_CHUNK_FLOATS // max(1, pixels.shape[0] * size * size)
        if step >= 4:
            nearest = (dy[:, :step, :, None] + dx[:, :step, None, :]).amin(1)
            for i in range(step, count, step):
                torch.minimum(nearest, (dy[:, i:i + step, :, None] + dx[:, i:i + step, None, :]).amin(1),
                              out=nearest)
        else:
            nearest = dy[:, 0, :, None] + dx[:, 0, None, :]
            candidate = torch.empty_like(nearest)
            for i in range(1, count):
                torch.add(dy[:, i, :, None], dx[:, i, None, :], out=candidate)
                torch.minimum(nearest, candidate, out=nearest)
        return nearest.sqrt_().add_(1.0).reciprocal_().unsqueeze(1)


def pixels_to_unit(points: torch.Tensor, size: int) -> torch.Tensor:
    """Crop pixels (OpenCV centres) to unit coordinates."""
    return (points + 0.5) / size


def unit_to_pixels(points: torch.Tensor, size: int) -> torch.Tensor:
    """Unit coordinates to crop pixels (OpenCV centres)."""
    return points * size - 0.5


def inter_pupil_distance(points: torch.Tensor) -> torch.Tensor:
    """Distance between the eye centres (means of points 36-41 and 42-47): the inter-pupil distance of
    ``evaluation.metrics``, which EmotionalDAN normalises its loss by (not the inter-ocular corners)."""
    right = points[..., 36:42, :].mean(dim=-2)
    left = points[..., 42:48, :].mean(dim=-2)
    return (left - right).norm(dim=-1)
