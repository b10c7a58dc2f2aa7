"""Face ids by overlap and per-face emotion smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from emodan_ros.faces.boxes import iou_matrix
from emodan_ros.faces.tracker import FaceTracker, greedy_match


def _box(x: float, y: float, side: float = 100.0) -> np.ndarray:
    return np.array([x, y, x + side, y + side], np.float32)


def test_iou_of_known_boxes() -> None:
    iou = iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])
    assert iou_matrix(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


def test_greedy_match_takes_best_pairs_once() -> None:
    iou = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert sorted(greedy_match(iou, 0.3)) == [(0, 0)]  # row 1's only good column is taken
    assert sorted(greedy_match(iou, 0.05)) == [(0, 0), (1, 1)]


def test_a_moving_face_keeps_its_id_and_a_new_face_gets_a_new_one() -> None:
    tracker = FaceTracker(iou_threshold=0.3)
    first = tracker.update(np.stack([_box(0, 0)]))
    ids = [tracker.update(np.stack([_box(10 * k, 5 * k)]))[0] for k in range(1, 10)]
    assert set(ids) == set(first)
    both = tracker.update(np.stack([_box(95, 45), _box(400, 400)]))
    assert both[0] == first[0] and both[1] != first[0]


def test_ids_survive_max_missed_frames_and_are_never_reused() -> None:
    tracker = FaceTracker(max_missed=2)
    (face,) = tracker.update(np.stack([_box(0, 0)]))
    for _ in range(2):
        assert tracker.update(np.zeros((0, 4))) == []
    assert tracker.update(np.stack([_box(0, 0)])) == [face]
    for _ in range(3):
        tracker.update(np.zeros((0, 4)))
    assert tracker.tracks == []
    (again,) = tracker.update(np.stack([_box(0, 0)]))
    assert again != face


def test_two_faces_swapping_sides_slowly_keep_their_ids() -> None:
    tracker = FaceTracker()
    a, b = tracker.update(np.stack([_box(0, 0), _box(300, 0)]))
    for k in range(1, 6):
        ids = tracker.update(np.stack([_box(300 - 20 * k, 0), _box(20 * k, 0)]))
        assert ids == [b, a]


def test_smoothing_is_an_ema_per_face_and_off_at_zero() -> None:
    tracker = FaceTracker(smoothing=0.75)
    (face,) = tracker.update(np.stack([_box(0, 0)]))
    p0 = np.array([1.0, 0.0], np.float32)
    p1 = np.array([0.0, 1.0], np.float32)
    out, smoothed = tracker.smooth(face, p0)
    assert not smoothed and np.allclose(out, p0)
    out, smoothed = tracker.smooth(face, p1)
    assert smoothed and np.allclose(out, [0.75, 0.25])
    assert np.isclose(out.sum(), 1.0)
    off = FaceTracker(smoothing=0.0)
    (face,) = off.update(np.stack([_box(0, 0)]))
    off.smooth(face, p0)
    out, smoothed = off.smooth(face, p1)
    assert not smoothed and np.allclose(out, p1)


@pytest.mark.parametrize("kwargs", [{"iou_threshold": 0.0}, {"iou_threshold": 1.5}, {"max_missed": -1},
                                    {"smoothing": 1.0}, {"smoothing": -0.1}])
def test_invalid_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        FaceTracker(**kwargs)
