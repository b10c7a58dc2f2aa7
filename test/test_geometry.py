"""Pure geometry of DAN's stage transitions and the crop convention."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emodan_ros.model import geometry
from emodan_ros.faces.crop import FLIP_INDEX, apply_affine, box_for_full_crop, crop_matrix, invert_affine, make_crop


def similarity(angle: float, scale: float, shift: tuple[float, float], batch: int = 2) -> torch.Tensor:
    linear = scale * torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return torch.cat([linear, torch.tensor(shift).view(2, 1)], dim=1).expand(batch, 2, 3).clone()


def test_estimate_similarity_recovers_a_known_transform() -> None:
    source = torch.rand(2, 68, 2, dtype=torch.float64)
    truth = similarity(0.4, 1.7, (0.3, -0.2)).double()
    estimate = geometry.estimate_similarity(source, geometry.transform_points(truth, source))
    assert torch.allclose(estimate, truth, atol=1e-10)


def test_estimate_similarity_is_least_squares_under_noise() -> None:
    torch.manual_seed(1)
    source = torch.rand(1, 68, 2, dtype=torch.float64)
    target = geometry.transform_points(similarity(-0.2, 0.8, (0.1, 0.1), 1).double(), source)
    noisy = target + 0.01 * torch.randn_like(target)
    best = geometry.estimate_similarity(source, noisy)
    residual = (geometry.transform_points(best, source) - noisy).pow(2).sum()
    for tweak in (1e-3, -1e-3):
        moved = best.clone()
        moved[:, 0, 0] += tweak
        moved[:, 1, 1] += tweak
        assert (geometry.transform_points(moved, source) - noisy).pow(2).sum() > residual


def test_invert_transform_round_trips_points() -> None:
    transform = similarity(1.1, 0.6, (0.5, 0.2))
    points = torch.rand(2, 68, 2)
    back = geometry.transform_points(geometry.invert_transform(transform),
                                     geometry.transform_points(transform, points))
    assert torch.allclose(back, points, atol=1e-5)


def test_warp_moves_a_pixel_where_the_transform_sends_it() -> None:
    image = torch.zeros(1, 1, 64, 64)
    image[0, 0, 20, 30] = 1.0  # x = 30, y = 20
    transform = torch.tensor([[[0.9, -0.1, 0.1], [0.1, 0.9, 0.05]]])
    warped = geometry.warp_image(image, transform)
    where = geometry.unit_to_pixels(geometry.transform_points(
        transform, geometry.pixels_to_unit(torch.tensor([[[30.0, 20.0]]]), 64)), 64)[0, 0]
    peak = int(warped[0, 0].argmax())
    assert (peak % 64, peak // 64) == (round(float(where[0])), round(float(where[1])))


def test_warp_then_inverse_warp_is_identity_inside_the_frame() -> None:
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    image = (torch.sin(xs / 7) * torch.cos(ys / 9)).view(1, 1, 64, 64)  # smooth, amplitude 1
    rotate = similarity(0.15, 0.9, (0.0, 0.0), 1)
    centre = torch.tensor([0.5, 0.5])
    shift = centre - rotate[0, :, :2] @ centre + torch.tensor([0.02, -0.03])
    transform = torch.cat([rotate[:, :, :2], shift.view(1, 2, 1)], dim=2)  # about the centre, stays inside
    back = geometry.warp_image(geometry.warp_image(image, transform), geometry.invert_transform(transform))
    inner = (slice(None), slice(None), slice(12, 52), slice(12, 52))
    assert (back[inner] - image[inner]).abs().max() < 0.02


def test_heatmap_is_one_on_landmarks_and_falls_with_distance() -> None:
    size = 32
    points_px = torch.tensor([[[5.0, 5.0], [20.0, 10.0]]])
    heatmap = geometry.landmark_heatmap(geometry.pixels_to_unit(points_px, size), size)[0, 0]
    assert heatmap[5, 5] == pytest.approx(1.0)
    assert heatmap[10, 20] == pytest.approx(1.0)
    assert heatmap[5, 8] == pytest.approx(1 / (1 + 3))  # 3 px right of the first point
    assert heatmap[9, 24] == pytest.approx(1 / (1 + math.hypot(4, 1)), rel=1e-5)  # nearest is the second


@pytest.mark.parametrize("chunk_floats", [1 << 19, 5 * 3 * 24 * 24, 0])  # all points at once, 5 a step, 1 a step
def test_heatmap_matches_the_exact_nearest_distance_everywhere(chunk_floats: int,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Brute force in float64 over every pixel and point: the heatmap is exact near points too
    # (the matrix-product distance it replaced was off by up to 0.05 px there), however many
    # points it takes per step (68 is not a multiple of 5: a short last step).
    monkeypatch.setattr(geometry, "HEATMAP_CHUNK_FLOATS", chunk_floats)
    size = 24
    points = torch.rand(3, 68, 2, generator=torch.Generator().manual_seed(3))
    heatmap = geometry.landmark_heatmap(points, size)
    centres = np.arange(size) + 0.5
    gx, gy = np.meshgrid(centres, centres)
    pts = points.double().numpy() * size
    d = np.hypot(gx[None, :, :, None] - pts[:, None, None, :, 0], gy[None, :, :, None] - pts[:, None, None, :, 1])
    expected = 1.0 / (1.0 + d.min(axis=-1))
    assert heatmap.shape == (3, 1, size, size)
    np.testing.assert_allclose(heatmap[:, 0].numpy(), expected, atol=2e-6)


@pytest.mark.parametrize("size", [7, 112])
def test_sampling_grid_is_affine_grid(size: int) -> None:
    theta = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(size), requires_grad=True)
    expected = F.affine_grid(theta, [3, 1, size, size], align_corners=False)
    grid = geometry.sampling_grid(theta, size)
    assert grid.shape == expected.shape
    assert torch.allclose(grid, expected, atol=1e-6)
    weights = torch.randn_like(grid)
    (mine,) = torch.autograd.grad((grid * weights).sum(), theta)
    (theirs,) = torch.autograd.grad((expected * weights).sum(), theta)
    assert torch.allclose(mine, theirs, atol=1e-3)


def test_inter_pupil_distance_uses_eye_centres() -> None:
    points = torch.zeros(68, 2)
    points[36:42] = torch.tensor([10.0, 0.0])
    points[42:48] = torch.tensor([40.0, 4.0])
    assert float(geometry.inter_pupil_distance(points)) == pytest.approx(math.hypot(30, 4))


def test_crop_matrix_centres_the_shifted_box_and_scales_it() -> None:
    box = np.array([100.0, 50.0, 180.0, 150.0])  # 80 x 100
    matrix = crop_matrix(box, 50, scale=1.25, shift=-0.1)
    # The crop centre is the box centre moved up by 0.1 box sides (10 px): FER's framing keeps the forehead.
    assert np.allclose(apply_affine(matrix, np.array([140.0, 90.0])), [24.5, 24.5])
    assert np.allclose(apply_affine(matrix, np.array([140.0, 100.0])), [24.5, 24.5 + 10 * 50 / 125])
    assert np.allclose(matrix[:, :2], np.eye(2) * 50 / 125)
    assert np.allclose(apply_affine(invert_affine(matrix), [24.5, 24.5]), [140, 90])
    centred = crop_matrix(box, 50, scale=1.25, shift=0.0)
    assert np.allclose(apply_affine(centred, np.array([140.0, 100.0])), [24.5, 24.5])


def test_default_crop_puts_the_landmark_box_where_fer_faces_have_it() -> None:
    from emodan_ros.faces.crop import CROP_SHIFT

    # FER2013Train (measured with the landmark model): box 0.8 of the image, centre 0.077 sides below.
    box = box_for_full_crop(48, 48)
    side = box[2] - box[0]
    assert side == pytest.approx(48 / 1.25)
    assert (box[1] + box[3]) / 2 - 23.5 == pytest.approx(-CROP_SHIFT * side)
    assert -0.09 < CROP_SHIFT < -0.06


def test_full_crop_box_reproduces_the_image() -> None:
    image = (np.arange(48 * 48) % 251).astype(np.uint8).reshape(48, 48)
    crop, _ = make_crop(image, box_for_full_crop(48, 48), 48)
    assert np.abs(crop.astype(int) - image).max() <= 1


def test_flip_mirrors_landmarks_and_reindexes_them() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(10, 38, size=(68, 2)).astype(np.float32)
    box = np.array([10.0, 10.0, 38.0, 38.0])
    from emodan_ros.faces.crop import Augmentation
    flip_only = Augmentation(0, 0, 0, True, 0, 0)
    image = np.zeros((48, 48), np.uint8)
    for seed in range(20):
        _, moved = make_crop(image, box, 48, points, flip_only, np.random.default_rng(seed))
        _, plain = make_crop(image, box, 48, points)
        if not np.allclose(moved, plain):
            assert np.allclose(moved, np.stack([47 - plain[FLIP_INDEX, 0], plain[FLIP_INDEX, 1]], axis=1), atol=1e-4)
            return
    pytest.fail("the flip augmentation never flipped in 20 draws")


def test_flip_index_is_an_involution_swapping_eye_corners() -> None:
    assert sorted(FLIP_INDEX.tolist()) == list(range(68))
    assert np.array_equal(FLIP_INDEX[FLIP_INDEX], np.arange(68))
    assert FLIP_INDEX[36] == 45 and FLIP_INDEX[48] == 54 and FLIP_INDEX[0] == 16 and FLIP_INDEX[30] == 30


def test_low_resolution_augmentation_softens_the_crop_and_keeps_the_landmarks() -> None:
    from dataclasses import replace

    import cv2

    from emodan_ros.faces.crop import NO_AUGMENTATION

    def detail(crop: np.ndarray) -> float:
        return float(cv2.Laplacian(crop.astype(np.float32), cv2.CV_32F).var())

    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, (200, 200), dtype=np.uint8)  # full of fine detail
    points = rng.uniform(60, 140, (68, 2))
    box = np.array([50.0, 50.0, 150.0, 150.0])
    sharp, sharp_points = make_crop(image, box, 48, points, NO_AUGMENTATION, np.random.default_rng(0))
    soft_augment = replace(NO_AUGMENTATION, low_resolution=1.0)
    soft, soft_points = make_crop(image, box, 48, points, soft_augment, np.random.default_rng(0))
    assert detail(soft) < 0.8 * detail(sharp)
    assert np.allclose(soft_points, sharp_points)
    assert abs(float(soft.mean()) - float(sharp.mean())) < 3  # same face, only softer
