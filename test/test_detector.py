"""Face detectors: the embedded Haar default on real photos, calibration maths, clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from emodan_ros.faces.detector import (
    BoxCalibration,
    DetectorError,
    HaarDetector,
    make_detector,
    sort_by_area,
)
from emodan_ros.faces.boxes import iou_matrix

# The astronaut's face in skimage.data.astronaut() (512x512), by eye: forehead to chin.
ASTRONAUT_FACE = np.array([[180.0, 80.0, 270.0, 185.0]])


def _bgr(rgb_or_grey: np.ndarray) -> np.ndarray:
    if rgb_or_grey.ndim == 2:
        return cv2.cvtColor(rgb_or_grey, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(rgb_or_grey, cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def haar() -> HaarDetector:
    return HaarDetector()


def test_haar_finds_the_astronaut(haar: HaarDetector) -> None:
    boxes, scores = haar.detect(_bgr(data.astronaut()))
    assert boxes.shape == (1, 4) and scores.shape == (1,)
    assert boxes.dtype == np.float32
    assert iou_matrix(boxes, ASTRONAUT_FACE)[0, 0] > 0.5
    assert 0.0 < scores[0] <= 1.0


@pytest.mark.parametrize("name", ["coffee", "rocket", "chelsea"])
def test_haar_finds_nobody_in_photos_without_people(haar: HaarDetector, name: str) -> None:
    boxes, scores = haar.detect(_bgr(getattr(data, name)()))
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_largest_face_comes_first() -> None:
    face = _bgr(data.astronaut())
    small = cv2.resize(face, (300, 300), interpolation=cv2.INTER_AREA)
    canvas = np.full((512, 900, 3), 127, np.uint8)
    canvas[100:400, 0:300] = small
    canvas[:, 388:900] = face
    boxes, _ = HaarDetector(max_side=0).detect(canvas)
    assert len(boxes) == 2
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert areas[0] > areas[1]
    assert boxes[0, 0] > 388  # the full-size face is the right one


def test_faces_too_small_after_downscaling_are_missed_until_max_side_grows() -> None:
    """Why ``detector_max_side`` is a parameter: Haar needs a face of about 40 px after downscaling."""
    wide = np.full((1536, 1536, 3), 127, np.uint8)
    wide[:512, :512] = _bgr(data.astronaut())  # a 90 px face in a 1536 px frame
    assert len(HaarDetector(max_side=320, min_face_fraction=0.02).detect(wide)[0]) == 0
    assert len(HaarDetector(max_side=768, min_face_fraction=0.02).detect(wide)[0]) == 1


def test_detection_is_in_source_pixels_whatever_the_downscale() -> None:
    image = _bgr(data.astronaut())
    big = cv2.resize(image, (1024, 1024))
    small_boxes, _ = HaarDetector(max_side=320).detect(image)
    big_boxes, _ = HaarDetector(max_side=320).detect(big)
    assert iou_matrix(big_boxes / 2, small_boxes)[0, 0] > 0.8


def test_calibration_moves_and_scales_boxes() -> None:
    cal = BoxCalibration(dx=0.1, dy=-0.2, sw=0.5, sh=2.0)
    out = cal.apply(np.array([[0.0, 0.0, 100.0, 50.0]]))
    # centre (50, 25) -> (60, 15); size (100, 50) -> (50, 100)
    np.testing.assert_allclose(out, [[35.0, -35.0, 85.0, 65.0]])
    assert cal.apply(np.zeros((0, 4))).shape == (0, 4)


def test_sort_by_area_orders_scores_with_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 30, 30], [0, 0, 20, 20]], np.float32)
    b, s = sort_by_area(boxes, np.array([0.1, 0.3, 0.2], np.float32))
    np.testing.assert_allclose(s, [0.3, 0.2, 0.1])
    assert b[0, 2] == 30


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                                 np.zeros((10, 10, 4), np.uint8)])
def test_detector_rejects_non_bgr_input(haar: HaarDetector, bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        haar.detect(bad)


def test_unknown_detector_and_missing_files_fail_clearly(tmp_path) -> None:
    with pytest.raises(DetectorError, match="unknown detector"):
        make_detector("mtcnn")
    missing = str(tmp_path / "nope.onnx")
    with pytest.raises(DetectorError, match="nope.onnx"):
        make_detector("yunet", model_path=missing)
    with pytest.raises(DetectorError, match="cascade"):
        HaarDetector(cascade_path=str(tmp_path / "nope.xml"))


def test_dlib_is_optional_with_a_clear_message() -> None:
    try:
        import dlib  # noqa: F401
    except ImportError:
        with pytest.raises(DetectorError, match="pip install dlib-bin"):
            make_detector("dlib")
        return
    boxes, _ = make_detector("dlib", max_side=512).detect(_bgr(data.astronaut()))
    assert len(boxes) == 1 and iou_matrix(boxes, ASTRONAUT_FACE)[0, 0] > 0.5
