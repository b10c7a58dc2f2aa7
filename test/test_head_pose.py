"""Head pose: synthetic landmarks from known poses come back; signs and flags behave."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from emodan_ros.faces import head_pose as hp
from emodan_ros.faces import ibug68 as ib

CAM = hp.intrinsics_from_fov(640, 480, 60.0)
POSES = list(itertools.product((-45, -20, 0, 20, 45), (-20, 0, 20), (-30, 0, 30)))


def synth_landmarks(r: np.ndarray, t, cam: hp.CameraIntrinsics = CAM, noise_px: float = 0.0,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """(68, 2) landmarks: model points projected at (r, t); the rest at their centroid."""
    px = hp.project_head_model(r, np.asarray(t, dtype=float), cam)
    if noise_px:
        px = px + (rng or np.random.default_rng(0)).normal(0.0, noise_px, px.shape)
    lm = np.tile(px.mean(axis=0), (68, 1))
    lm[list(hp.MODEL_INDICES)] = px
    return lm.astype(np.float32)


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip((np.trace(a.T @ b) - 1.0) / 2.0, -1.0, 1.0)))


def quat_to_matrix(q) -> np.ndarray:
    x, y, z, w = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


@pytest.mark.parametrize("yaw,pitch,roll", POSES)
def test_known_pose_recovered(yaw, pitch, roll):
    t = np.array([0.06, -0.03, 0.9])
    r = hp.rotation_from_euler_deg(yaw, pitch, roll)
    pose = hp.estimate_head_pose(synth_landmarks(r, t), CAM)
    assert pose is not None
    assert abs(pose.yaw_deg - yaw) < 3 and abs(pose.pitch_deg - pitch) < 3
    assert abs(pose.roll_deg - roll) < 3
    assert rotation_angle_deg(quat_to_matrix(pose.quaternion_xyzw), r) < 3
    np.testing.assert_allclose(pose.translation_m, t, rtol=0.03, atol=0.003)
    assert pose.reprojection_error_px < 0.1


def test_quaternion_is_unit_with_nonnegative_w():
    r = hp.rotation_from_euler_deg(170, -10, 60)
    q = hp.quaternion_from_rotation(r)
    assert math.isclose(float(np.linalg.norm(q)), 1.0, abs_tol=1e-9) and q[3] >= 0
    np.testing.assert_allclose(quat_to_matrix(q), r, atol=1e-9)


def test_frontal_head_axes_in_optical_frame():
    """Facing the camera: forward is -z, subject's left is image right (+x), up is -y."""
    r = hp.rotation_from_euler_deg(0, 0, 0)
    np.testing.assert_allclose(r[:, 0], [0, 0, -1])
    np.testing.assert_allclose(r[:, 1], [1, 0, 0])
    np.testing.assert_allclose(r[:, 2], [0, -1, 0])


def _turn_about_head_up(angle_deg: float) -> np.ndarray:
    """Built by hand, not with the module's helpers: frontal head turned about its up axis."""
    a = math.radians(angle_deg)
    frontal = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
    turn = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    return frontal @ turn


@pytest.mark.parametrize("angle", [15.0, 35.0])
def test_yaw_positive_when_person_turns_to_their_left(angle):
    t = [0.0, 0.0, 0.8]
    for sign in (1, -1):
        r = _turn_about_head_up(sign * angle)
        lm = synth_landmarks(r, t)
        pose = hp.estimate_head_pose(lm, CAM)
        assert pose is not None and math.copysign(1, pose.yaw_deg) == sign
        assert abs(abs(pose.yaw_deg) - angle) < 1
        # Turning to their left (towards their left eye, image right) moves the nose right.
        nose_right_of_bridge = lm[ib.NOSE_TIP, 0] > lm[ib.SELLION, 0]
        assert nose_right_of_bridge == (sign > 0)


def test_pitch_positive_looks_down_and_roll_positive_raises_left_eye():
    t = [0.0, 0.0, 0.8]
    down = synth_landmarks(hp.rotation_from_euler_deg(0, 15, 0), t)
    front = synth_landmarks(hp.rotation_from_euler_deg(0, 0, 0), t)
    assert down[ib.NOSE_TIP, 1] - down[ib.SELLION, 1] > front[ib.NOSE_TIP, 1] - front[ib.SELLION, 1]
    tilt = synth_landmarks(hp.rotation_from_euler_deg(0, 0, 20), t)
    assert tilt[ib.LEFT_EYE_OUTER, 1] < tilt[ib.RIGHT_EYE_OUTER, 1]   # image y grows down


def test_looking_flag_flips_at_threshold():
    t = [0.0, 0.0, 1.0]
    threshold = 20.0
    for yaw in np.arange(0.0, 40.5, 2.5):
        r = hp.rotation_from_euler_deg(float(yaw), 0, 0)
        pose = hp.estimate_head_pose(synth_landmarks(r, t), CAM, looking_threshold_deg=threshold)
        assert pose is not None
        assert abs(pose.angle_to_camera_deg - yaw) < 0.5
        if abs(yaw - threshold) > 0.5:
            assert pose.looking_at_camera == (yaw < threshold)


def test_looking_uses_line_of_sight_not_optical_axis():
    """A head off to the side that faces the lens looks at the camera despite its yaw."""
    t = np.array([0.4, 0.0, 1.0])
    toward_camera = -math.degrees(math.atan2(0.4, 1.0))   # turn to their right
    facing = hp.estimate_head_pose(
        synth_landmarks(hp.rotation_from_euler_deg(toward_camera, 0, 0), t), CAM)
    parallel = hp.estimate_head_pose(synth_landmarks(hp.rotation_from_euler_deg(0, 0, 0), t), CAM)
    assert facing is not None and parallel is not None
    assert facing.looking_at_camera and facing.angle_to_camera_deg < 1
    assert not parallel.looking_at_camera and abs(parallel.angle_to_camera_deg - 21.8) < 0.5


def test_one_pixel_noise_stays_within_five_degrees():
    """Face ~100 px between the outer eye corners (0.5 m, 60 deg hfov, 640 px)."""
    rng = np.random.default_rng(1234)
    t = np.array([0.0, 0.0, 0.5])
    errors = []
    for yaw, pitch, roll in POSES:
        r = hp.rotation_from_euler_deg(yaw, pitch, roll)
        for _ in range(3):
            pose = hp.estimate_head_pose(synth_landmarks(r, t, noise_px=1.0, rng=rng), CAM)
            assert pose is not None
            est = hp.rotation_from_euler_deg(pose.yaw_deg, pose.pitch_deg, pose.roll_deg)
            errors.append(rotation_angle_deg(est, r))
            assert 0.2 < pose.reprojection_error_px < 2.0
    assert max(errors) < 5.0 and float(np.mean(errors)) < 2.5


def test_camera_info_with_plumb_bob_distortion():
    cam = hp.intrinsics_from_camera_info(
        [600.0, 0, 330.0, 0, 605.0, 235.0, 0, 0, 1], [-0.25, 0.08, 0.001, -0.0005, 0.0])
    r, t = hp.rotation_from_euler_deg(25, -10, 5), np.array([0.15, 0.1, 0.8])
    pose = hp.estimate_head_pose(synth_landmarks(r, t, cam), cam)
    assert pose is not None
    assert rotation_angle_deg(quat_to_matrix(pose.quaternion_xyzw), r) < 0.5
    np.testing.assert_allclose(pose.translation_m, t, rtol=0.01)
    assert pose.reprojection_error_px < 0.05


def test_camera_info_equidistant():
    cam = hp.intrinsics_from_camera_info(
        np.array([[400.0, 0, 320], [0, 400, 240], [0, 0, 1]]), [0.05, -0.01, 0.0, 0.0],
        distortion_model="equidistant")
    r, t = hp.rotation_from_euler_deg(-30, 10, 0), np.array([-0.1, 0.05, 0.7])
    pose = hp.estimate_head_pose(synth_landmarks(r, t, cam), cam)
    assert pose is not None and cam.fisheye
    assert rotation_angle_deg(quat_to_matrix(pose.quaternion_xyzw), r) < 0.5


def test_intrinsics_from_fov_values_and_errors():
    cam = hp.intrinsics_from_fov(640, 480, 90.0)
    assert math.isclose(cam.k[0, 0], 320.0) and math.isclose(cam.k[1, 1], 320.0)
    assert (cam.k[0, 2], cam.k[1, 2]) == (319.5, 239.5)
    for bad in [(0, 480, 60), (640, 480, 0), (640, 480, 180)]:
        with pytest.raises(ValueError):
            hp.intrinsics_from_fov(*bad)
    with pytest.raises(ValueError):
        hp.intrinsics_from_camera_info([0, 0, 0, 0, 0, 0, 0, 0, 1])
    with pytest.raises(ValueError):
        hp.intrinsics_from_camera_info(CAM.k, distortion_model="unknown")


def _frontal_landmarks() -> np.ndarray:
    return synth_landmarks(hp.rotation_from_euler_deg(0, 0, 0), [0, 0, 0.8])


@pytest.mark.parametrize("make", [
    lambda: np.full((68, 2), 100.0),                       # all equal
    lambda: np.full((68, 2), np.nan),                      # all NaN
    lambda: np.where(np.arange(68)[:, None] == ib.NOSE_TIP, np.nan, _frontal_landmarks()),
    lambda: np.stack([np.linspace(0, 100, 68), np.linspace(0, 50, 68)], axis=1),  # collinear
    lambda: np.full((68, 2), np.inf),
    lambda: np.zeros((5, 2)),                              # wrong shape
    lambda: "not landmarks",
])
def test_degenerate_landmarks_give_none(make):
    assert hp.estimate_head_pose(make(), CAM) is None


def test_random_and_extreme_input_never_raises():
    rng = np.random.default_rng(7)
    inputs = [rng.uniform(0, 640, (68, 2)) for _ in range(100)]
    inputs += [np.full((68, 2), 1e30), rng.normal(0, 1e12, (68, 2)), np.full((68, 2), -5.0)]
    for lm in inputs:
        pose = hp.estimate_head_pose(lm, CAM)
        assert pose is None or np.all(np.isfinite(pose.translation_m))


def test_nan_in_unused_landmark_is_ignored():
    lm = _frontal_landmarks()
    lm[0] = np.nan          # jaw contour point, not in the model
    assert 0 not in hp.MODEL_INDICES
    assert hp.estimate_head_pose(lm, CAM) is not None


def test_bad_threshold_raises():
    with pytest.raises(ValueError):
        hp.estimate_head_pose(_frontal_landmarks(), CAM, looking_threshold_deg=-1)


def test_euler_round_trip():
    for yaw, pitch, roll in POSES:
        got = hp.euler_deg_from_rotation(hp.rotation_from_euler_deg(yaw, pitch, roll))
        np.testing.assert_allclose(got, (yaw, pitch, roll), atol=1e-9)
