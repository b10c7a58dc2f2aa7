"""ROS4HRI export: landmark layout against hri_msgs, expression names, face ids."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from emodan_ros.faces import ibug68 as ib
from emodan_ros.faces import rep155 as r
from emodan_ros.faces.affect import valence_arousal

FERPLUS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")


def _hri_msg_dir() -> Path:
    """hri_msgs' .msg files: an installed hri_msgs (ROS install or ros2-extra), else ../shared's sources."""
    if os.environ.get("HRI_MSGS_DIR"):
        return Path(os.environ["HRI_MSGS_DIR"])
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("hri_msgs")) / "msg"
    except Exception:  # not installed (or no ament index): the sources beside the repository
        return Path(__file__).resolve().parents[2] / "shared/ros2-extra/interfaces/hri_msgs/msg"


MSG_DIR = _hri_msg_dir()


def msg_constants(name: str) -> dict[str, str]:
    """NAME -> value text of the constants in an hri_msgs .msg file (skip if absent)."""
    path = MSG_DIR / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    consts = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*\w+\s+([A-Z_0-9]+)\s*=\s*(\S+)", line.split("#")[0])
        if m:
            consts[m.group(1)] = m.group(2).strip('"')
    return consts


def face_landmarks(width=640, height=480) -> np.ndarray:
    """A plausible frontal 68-point face, well inside the image."""
    rng = np.random.default_rng(0)
    pts = rng.uniform([200, 150], [400, 350], size=(68, 2))
    eye = np.array([[0, 5], [10, 0], [20, 0], [30, 5], [20, 10], [10, 10]], dtype=float)
    pts[list(ib.RIGHT_EYE)] = eye + [250, 195]
    pts[list(ib.LEFT_EYE)] = eye + [320, 195]
    return pts


# --- landmark layout -------------------------------------------------------------

def test_msg_layout_is_identity_plus_two_pupils():
    c = {k: int(v) for k, v in msg_constants("FacialLandmarks.msg").items()}
    assert sorted(c.values()) == list(range(70))
    assert c["RIGHT_PUPIL"] == r.RIGHT_PUPIL and c["LEFT_PUPIL"] == r.LEFT_PUPIL
    assert {v for k, v in c.items() if k.startswith("RIGHT_EYE_")} == set(ib.RIGHT_EYE)
    assert {v for k, v in c.items() if k.startswith("LEFT_EYE_")} == set(ib.LEFT_EYE)
    assert c["RIGHT_EYE_OUTSIDE"] == ib.RIGHT_EYE_OUTER and c["NOSE"] == ib.NOSE_TIP
    assert c["MENTON"] == ib.MENTON and c["SELLION"] == ib.SELLION
    assert c["MOUTH_OUTER_RIGHT"] == ib.MOUTH_RIGHT and c["LEFT_EYE_INSIDE"] == ib.LEFT_EYE_INNER
    assert r.IBUG_TO_ROS4HRI == tuple(range(68))
    text = (MSG_DIR / "FacialLandmarks.msg").read_text()
    assert "NormalizedPointOfInterest2D[70] landmarks" in text


def test_normalised_coordinates_and_pupils():
    lm = face_landmarks()
    out = r.ros4hri_landmarks(lm, 640, 480)
    assert len(out.x) == len(out.y) == len(out.c) == 70 and (out.width, out.height) == (640, 480)
    np.testing.assert_allclose(out.x[:68], lm[:, 0] / 640)
    np.testing.assert_allclose(out.y[:68], lm[:, 1] / 480)
    assert out.c[:68] == (1.0,) * 68
    # Subject's right eye (iBUG 36-41) is on the image left and feeds RIGHT_PUPIL.
    assert out.x[r.RIGHT_PUPIL] == pytest.approx(265 / 640)
    assert out.x[r.LEFT_PUPIL] == pytest.approx(335 / 640)
    assert out.y[r.RIGHT_PUPIL] == pytest.approx(200 / 480)
    assert out.c[r.RIGHT_PUPIL] == out.c[r.LEFT_PUPIL] == r.PUPIL_CONFIDENCE_FACTOR


def test_confidences_missing_and_outside_points():
    lm = face_landmarks()
    conf = np.full(68, 0.9)
    conf[37] = 0.4
    lm[5] = np.nan
    lm[10] = [700.0, 100.0]      # right of a 640-px image
    lm[44] = [np.nan, 200.0]     # breaks the left-eye contour
    out = r.ros4hri_landmarks(lm, 640, 480, confidences=conf)
    assert (out.x[5], out.y[5], out.c[5]) == (0.0, 0.0, 0.0)
    assert out.x[10] == 1.0 and out.c[10] == 0.0
    assert out.c[r.RIGHT_PUPIL] == pytest.approx(0.4 * r.PUPIL_CONFIDENCE_FACTOR)
    assert (out.x[r.LEFT_PUPIL], out.c[r.LEFT_PUPIL]) == (0.0, 0.0)
    assert all(0.0 <= v <= 1.0 for v in out.x + out.y + out.c)


def test_landmark_input_errors():
    with pytest.raises(ValueError):
        r.ros4hri_landmarks(np.zeros((67, 2)), 640, 480)
    with pytest.raises(ValueError):
        r.ros4hri_landmarks(face_landmarks(), 0, 480)
    with pytest.raises(ValueError):
        r.ros4hri_landmarks(face_landmarks(), 640, 480, confidences=[1.0] * 10)


def test_normalized_roi():
    assert r.normalized_roi((64, 48, 320, 240), 640, 480, 0.8) == pytest.approx(
        (0.1, 0.1, 0.5, 0.5, 0.8))
    assert r.normalized_roi((-10, 400, 700, 500), 640, 480) == (0.0, 400 / 480, 1.0, 1.0, 1.0)
    assert r.normalized_roi((320, 240, 64, 48), 640, 480)[:4] == pytest.approx((0.1, 0.1, 0.5, 0.5))
    with pytest.raises(ValueError):
        r.normalized_roi((0, 0, np.nan, 1), 640, 480)


# --- expressions -----------------------------------------------------------------

def test_expression_strings_exist_in_msg():
    consts = msg_constants("Expression.msg")
    strings = set(consts.values())
    assert set(r.EXPRESSION_BY_CLASS.values()) <= strings
    assert consts["HAPPY"] == r.expression_name("happiness")
    assert consts["SCARED"] == r.expression_name("fear")
    assert consts["SURPRISED"] == r.expression_name("surprise")


def test_every_ferplus_class_but_contempt_has_a_counterpart():
    assert [n for n in FERPLUS if r.expression_name(n) is None] == ["contempt"]
    assert r.expression_name(" Happiness ") == "happy"


def test_top_expression_by_name_and_order():
    p = [0.1, 0.6, 0.1, 0.1, 0.1]
    names = ("neutral", "happiness", "surprise", "sadness", "anger")
    assert r.top_expression(p, names) == ("happy", pytest.approx(0.6))
    assert r.top_expression(p[::-1], names[::-1]) == ("happy", pytest.approx(0.6))
    assert r.top_expression([2.0, 6.0], ("sadness", "anger")) == ("angry", pytest.approx(0.75))


def test_contempt_is_never_reported_and_keeps_its_mass():
    p = np.array([0.2, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.7])
    assert r.top_expression(p, FERPLUS) == ("neutral", pytest.approx(0.2))
    assert r.top_expression([1.0], ("contempt",)) is None
    fields = r.expression_fields([1.0], ("contempt",))
    assert (fields.expression, fields.confidence) == ("", 0.0)
    assert fields.valence < 0


def test_expression_fields_combines_affect():
    p = np.array([0.05, 0.8, 0.05, 0.05, 0.05, 0.0, 0.0, 0.0])
    f = r.expression_fields(p, FERPLUS)
    assert f.expression == "happy" and f.confidence == pytest.approx(0.8)
    assert (f.valence, f.arousal) == pytest.approx(valence_arousal(p, FERPLUS))


@pytest.mark.parametrize("probs", [[], [np.nan] * 8, [0.0] * 8, [-1.0] + [0.0] * 7])
def test_expression_bad_probs(probs):
    with pytest.raises(ValueError):
        r.top_expression(probs, FERPLUS if probs else ())


# --- face ids --------------------------------------------------------------------

def test_face_ids_are_five_letters_stable_and_unique():
    ids = r.face_ids(range(20000))
    assert all(len(i) == 5 and i.isalpha() and i.islower() for i in ids)
    assert len(set(ids)) == len(ids)
    assert r.face_id(7) == r.face_id(np.int64(7)) == ids[7]
    assert r.face_id(0) != "aaaaa" and r.face_id(1)[:3] != r.face_id(2)[:3]


def test_face_id_known_values_pin_the_scheme():
    """Changing the scheme renames every face in logs and TF: make it deliberate."""
    assert [r.face_id(t) for t in (0, 1, 2)] == ["kibbx", "alhqu", "qoofr"]


def test_face_id_round_trip_including_large_ids():
    for tid in [0, 1, 25, 26**5 - 1, 26**5, 26**5 + 1, 10**9, 2**63]:
        fid = r.face_id(tid)
        assert r.track_id_from_face_id(fid) == tid
        assert len(fid) == 5 if tid < 26**5 else len(fid) > 5
    big = r.face_ids(range(26**5 - 5, 26**5 + 5))
    assert len(set(big)) == 10


@pytest.mark.parametrize("bad", [1.5, "3", True, None])
def test_face_id_rejects_non_integers(bad):
    with pytest.raises(TypeError):
        r.face_id(bad)


def test_face_id_rejects_negative():
    with pytest.raises(ValueError):
        r.face_id(-1)


@pytest.mark.parametrize("bad", ["abc", "ABCDE", "abcd1", "kibbxaa"])
def test_track_id_from_bad_face_id(bad):
    with pytest.raises(ValueError):
        r.track_id_from_face_id(bad)
