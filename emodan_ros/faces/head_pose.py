"""Head pose from 68 iBUG landmarks with cv2.solvePnP and a generic 3D face model.

Head frame (REP 103 body convention): origin at the sellion (iBUG 27, top of the
nose bridge), **x forward** out of the face, **y to the subject's left**, **z up**;
units millimetres in the model, metres in the output.

Generic model, :data:`HEAD_MODEL_MM`: 12 landmarks that are well defined and move
little with facial expression (eye corners, nose, nostrils, mouth corners, chin).
Widths and heights are rounded adult means (sexes pooled) of Farkas' norms,
L. G. Farkas, *Anthropometry of the Head and Face*, 2nd ed., Raven Press 1994:
biocular width ex-ex ~90 mm, intercanthal en-en ~32 mm, mouth width ch-ch ~52 mm,
nasal height n-sn ~53 mm, face height n-gn ~117 mm, nasal tip protrusion ~18 mm.
Depths (x) are approximate; they match the depth offsets of published mean face
shapes, e.g. the 68-point mean face of hysts/pytorch_mpiigaze (outer eye corners
~19 mm, inner ~13 mm behind the sellion, nose tip ~20 mm in front of it). A generic
model is only an approximation of any given head: expect a few degrees of bias on
real faces, none on landmarks synthesised from this same model.

Euler angles are of the head relative to a head squarely facing the camera along its
optical axis (not along the line of sight; use ``angle_to_camera_deg`` for that),
ROS RPY order R = Rz(yaw) Ry(pitch) Rx(roll) about the head axes above:

* yaw > 0: the person turns to **their own left** (nose moves to the image's right in
  an unmirrored image);
* pitch > 0: the person looks **down** (nose moves down in the image);
* roll > 0: the head tilts toward the person's **right shoulder** (their left eye
  rises; counter-clockwise in the image as the viewer sees it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from emodan_ros.faces import ibug68 as ib

# Head-frame model points, mm: (x forward, y subject's left, z up), origin sellion.
HEAD_MODEL_MM: dict[int, tuple[float, float, float]] = {
    ib.SELLION: (0.0, 0.0, 0.0),
    ib.NOSE_TIP: (20.0, 0.0, -38.0),
    ib.SUBNASALE: (7.0, 0.0, -51.0),
    ib.NOSTRIL_RIGHT: (3.0, -15.0, -46.0),
    ib.NOSTRIL_LEFT: (3.0, 15.0, -46.0),
    ib.RIGHT_EYE_OUTER: (-19.0, -45.0, -3.0),
    ib.RIGHT_EYE_INNER: (-13.0, -16.0, -4.0),
    ib.LEFT_EYE_INNER: (-13.0, 16.0, -4.0),
    ib.LEFT_EYE_OUTER: (-19.0, 45.0, -3.0),
    ib.MOUTH_RIGHT: (-15.0, -26.0, -70.0),
    ib.MOUTH_LEFT: (-15.0, 26.0, -70.0),
    ib.MENTON: (-18.0, 0.0, -114.0),
}
MODEL_INDICES: tuple[int, ...] = tuple(HEAD_MODEL_MM)
_MODEL_M = np.array([HEAD_MODEL_MM[i] for i in MODEL_INDICES], dtype=np.float64) / 1000.0

# Head axes expressed in the optical frame for a face squarely facing the camera:
# forward -> -z (toward the camera), left -> +x (image right), up -> -y.
_R_OPTICAL_FRONTAL = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])

DEFAULT_LOOKING_THRESHOLD_DEG = 20.0
# Reprojection error (RMS) above this share of the outer-eye-corner distance: no pose (not a face shape).
MAX_RELATIVE_ERROR = 0.25
_MIN_SPREAD_PX = 2.0   # landmarks tighter than this (or collinear) are degenerate


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics; ``dist`` in OpenCV order, ``fisheye`` for the equidistant model."""

    k: np.ndarray
    dist: np.ndarray
    fisheye: bool = False


@dataclass(frozen=True)
class HeadPose:
    """Pose of the head frame in the camera optical frame (x right, y down, z forward)."""

    quaternion_xyzw: tuple[float, float, float, float]
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    translation_m: tuple[float, float, float]
    reprojection_error_px: float
    angle_to_camera_deg: float
    looking_at_camera: bool


def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> CameraIntrinsics:
    """Intrinsics assumed from a horizontal field of view, when no camera_info exists.

    Square pixels, no distortion, principal point at the image centre in 0-based
    pixel-centre coordinates, ``((width - 1) / 2, (height - 1) / 2)``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 0.0 < hfov_deg < 180.0:
        raise ValueError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    k = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return CameraIntrinsics(k=k, dist=np.zeros(5))


def intrinsics_from_camera_info(
    k: Sequence[float] | np.ndarray,
    d: Sequence[float] | np.ndarray = (),
    distortion_model: str = "plumb_bob",
) -> CameraIntrinsics:
    """Intrinsics from a sensor_msgs/CameraInfo ``k`` (9 values or 3x3) and ``d``.

    ``plumb_bob`` and ``rational_polynomial`` share OpenCV's coefficient order;
    ``equidistant`` is OpenCV's fisheye model. An empty ``d`` means no distortion.
    """
    kk = np.asarray(k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(kk)) or kk[0, 0] <= 0 or kk[1, 1] <= 0:
        raise ValueError(f"camera matrix needs positive finite fx, fy: {kk.tolist()}")
    dd = np.asarray(d, dtype=np.float64).ravel()
    model = distortion_model.strip().lower()
    if model == "equidistant":
        dd = np.pad(dd, (0, max(0, 4 - dd.size)))[:4]
        return CameraIntrinsics(k=kk, dist=dd, fisheye=True)
    if model not in ("plumb_bob", "rational_polynomial", ""):
        raise ValueError(f"unsupported distortion model {distortion_model!r}")
    if dd.size == 0:
        dd = np.zeros(5)
    return CameraIntrinsics(k=kk, dist=dd)


def rotation_from_euler_deg(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head-to-optical rotation for the documented yaw/pitch/roll (inverse of
    :func:`euler_deg_from_rotation`); handy for synthesising poses."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    return _R_OPTICAL_FRONTAL @ (rz @ ry @ rx)


def euler_deg_from_rotation(r_optical_head: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a head-to-optical rotation matrix."""
    r = _R_OPTICAL_FRONTAL.T @ np.asarray(r_optical_head, dtype=np.float64)
    pitch = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    yaw = math.atan2(r[1, 0], r[0, 0])
    roll = math.atan2(r[2, 1], r[2, 2])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def quaternion_from_rotation(r: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w), w >= 0, of a rotation matrix (Shepperd's method)."""
    m = np.asarray(r, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4
    elif m[0, 0] >= m[1, 1] and m[0, 0] >= m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s
    elif m[1, 1] >= m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = (m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s
    qa = np.array(q) / np.linalg.norm(q)
    if qa[3] < 0:
        qa = -qa
    return float(qa[0]), float(qa[1]), float(qa[2]), float(qa[3])


def angle_to_camera_deg(r_optical_head: np.ndarray, t_optical_m: np.ndarray) -> float:
    """Angle between the face's forward axis and the ray from the face to the camera."""
    forward = np.asarray(r_optical_head, dtype=np.float64)[:, 0]
    t = np.asarray(t_optical_m, dtype=np.float64).ravel()
    to_camera = -t / np.linalg.norm(t)
    return math.degrees(math.acos(float(np.clip(forward @ to_camera, -1.0, 1.0))))


def project_head_model(
    r_optical_head: np.ndarray, t_optical_m: np.ndarray, intrinsics: CameraIntrinsics
) -> np.ndarray:
    """Image pixels ``(len(MODEL_INDICES), 2)`` of the model points at a given pose."""
    rvec, _ = cv2.Rodrigues(np.asarray(r_optical_head, dtype=np.float64))
    tvec = np.asarray(t_optical_m, dtype=np.float64).reshape(3, 1)
    if intrinsics.fisheye:
        pts, _ = cv2.fisheye.projectPoints(
            _MODEL_M.reshape(1, -1, 3), rvec, tvec, intrinsics.k, intrinsics.dist)
    else:
        pts, _ = cv2.projectPoints(_MODEL_M, rvec, tvec, intrinsics.k, intrinsics.dist)
    return pts.reshape(-1, 2)


def _is_degenerate(image_pts: np.ndarray) -> bool:
    """NaN/inf, coincident or collinear points cannot constrain a 6-DoF pose."""
    if not np.all(np.isfinite(image_pts)):
        return True
    centred = image_pts - image_pts.mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False)
    return bool(sv[1] / math.sqrt(len(image_pts)) < _MIN_SPREAD_PX / 4 or
                sv[0] / math.sqrt(len(image_pts)) < _MIN_SPREAD_PX)


def _solve(image_pts: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """rvec, tvec of the model for undistorted pixels; SQPnP (global) then LM refine."""
    obj, img = _MODEL_M, image_pts.reshape(-1, 1, 2)
    zero = np.zeros(5)
    for flag in (getattr(cv2, "SOLVEPNP_SQPNP", None), cv2.SOLVEPNP_EPNP):
        if flag is None:
            continue
        try:
            ok, rvec, tvec = cv2.solvePnP(obj, img, k, zero, flags=flag)
            if ok:
                rvec, tvec = cv2.solvePnPRefineLM(obj, img, k, zero, rvec, tvec)
                return rvec, tvec
        except cv2.error:
            continue
    return None


def _undistort(image_pts: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Pixels as an ideal pinhole camera with the same K would see them."""
    pts = image_pts.reshape(-1, 1, 2)
    if intrinsics.fisheye:
        out = cv2.fisheye.undistortPoints(pts, intrinsics.k, intrinsics.dist, P=intrinsics.k)
    elif np.any(intrinsics.dist):
        out = cv2.undistortPoints(pts, intrinsics.k, intrinsics.dist, P=intrinsics.k)
    else:
        out = pts
    return out.reshape(-1, 2)


def estimate_head_pose(
    landmarks: np.ndarray,
    intrinsics: CameraIntrinsics,
    looking_threshold_deg: float = DEFAULT_LOOKING_THRESHOLD_DEG,
) -> HeadPose | None:
    """Head pose from ``(68, 2)`` pixel landmarks, or None when it cannot be trusted.

    Only the model points (:data:`MODEL_INDICES`) are used; NaN, coincident or
    collinear model points, a failed solve, a head behind the camera, or a fit whose
    reprojection error exceeds :data:`MAX_RELATIVE_ERROR` of the eye-corner span give None.
    ``looking_at_camera`` is ``angle_to_camera_deg <= looking_threshold_deg``.
    """
    if not 0.0 <= looking_threshold_deg <= 180.0:
        raise ValueError(f"looking_threshold_deg must be in [0, 180], got {looking_threshold_deg}")
    pts = ib.as_landmarks(landmarks)
    if pts is None:
        return None
    image_pts = pts[list(MODEL_INDICES)]
    if _is_degenerate(image_pts):
        return None
    try:
        ideal = _undistort(image_pts, intrinsics)
    except cv2.error:
        return None
    if not np.all(np.isfinite(ideal)):
        return None
    solved = _solve(ideal, intrinsics.k)
    if solved is None:
        return None
    rvec, tvec = solved
    r, _ = cv2.Rodrigues(rvec)
    t = tvec.ravel()
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(t))):
        return None
    if np.any((_MODEL_M @ r.T + t)[:, 2] <= 0):   # some model point behind the camera
        return None
    try:
        err = project_head_model(r, t, intrinsics) - image_pts
    except cv2.error:
        return None
    rms = float(np.sqrt(np.mean(np.sum(err**2, axis=1))))
    eye_span = float(np.linalg.norm(image_pts[MODEL_INDICES.index(ib.LEFT_EYE_OUTER)]
                                    - image_pts[MODEL_INDICES.index(ib.RIGHT_EYE_OUTER)]))
    if rms > MAX_RELATIVE_ERROR * max(eye_span, _MIN_SPREAD_PX):  # the model does not fit these points
        return None
    yaw, pitch, roll = euler_deg_from_rotation(r)
    angle = angle_to_camera_deg(r, t)
    return HeadPose(
        quaternion_xyzw=quaternion_from_rotation(r),
        yaw_deg=yaw,
        pitch_deg=pitch,
        roll_deg=roll,
        translation_m=(float(t[0]), float(t[1]), float(t[2])),
        reprojection_error_px=rms,
        angle_to_camera_deg=angle,
        looking_at_camera=angle <= looking_threshold_deg,
    )
