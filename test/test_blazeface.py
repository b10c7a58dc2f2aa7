"""The default detector (BlazeFace short-range): range, landmark-box convention, bad input, clear errors."""

from __future__ import annotations

import argparse
import json
import shutil

import cv2
import numpy as np
import pytest
from skimage import data

from emodan_ros.bench import range as range_bench
from emodan_ros.bench import range_frames as rf
from emodan_ros.faces.blazeface import (
    BLAZE_CAL,
    DIM_LEVEL,
    TARGET_LEVEL,
    MODEL_RELATIVE_PATH,
    BlazeFaceDetector,
    auto_fine_side,
    default_model_path,
    parse_looks,
    pass_sides,
    short_range_anchors,
)
from emodan_ros.faces.boxes import iou_matrix
from emodan_ros.faces.config import DetectorConfig
from emodan_ros.faces.detector import DETECTOR_NAMES, DetectorError, make_detector

ASTRONAUT = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
LANDMARK_BOX = np.array([rf.ASTRONAUT_BOX], np.float32)  # the landmark-box convention, by hand


@pytest.fixture(scope="module")
def blaze() -> BlazeFaceDetector:
    return make_detector("blaze")  # type: ignore[return-value]


def _pasted(frame_w: int, frame_h: int, width: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut scaled so its landmark box is ``width`` px wide, pasted at (x, y) in a grey frame."""
    s = width / (rf.ASTRONAUT_BOX[2] - rf.ASTRONAUT_BOX[0])
    img = cv2.resize(ASTRONAUT, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    frame = np.full((frame_h, frame_w, 3), 110, np.uint8)
    h, w = min(img.shape[0], frame_h - y), min(img.shape[1], frame_w - x)
    frame[y:y + h, x:x + w] = img[:h, :w]
    return frame, LANDMARK_BOX * s + np.array([x, y, x, y], np.float32)


def test_is_the_default_and_the_model_ships_with_the_package() -> None:
    assert DetectorConfig().detector == "blaze" and "blaze" in DETECTOR_NAMES
    assert {"haar", "dlib", "yunet"} <= set(DETECTOR_NAMES)
    path = default_model_path()
    assert path is not None and path.stat().st_size == 229_032
    assert (path.parent / "LICENSE").is_file() and "MediaPipe" in (path.parent / "NOTICE").read_text()
    assert str(path).endswith(MODEL_RELATIVE_PATH)


def test_anchor_grid_matches_the_model_outputs() -> None:
    assert len(short_range_anchors(128, 128)) == 896  # MediaPipe's own count
    assert len(short_range_anchors(384, 288)) == 6048


def test_finds_the_astronaut_in_the_landmark_box_convention(blaze: BlazeFaceDetector) -> None:
    boxes, scores = blaze.detect(ASTRONAUT)
    assert boxes.shape == (1, 4) and boxes.dtype == np.float32 and scores.dtype == np.float32
    # 0.83 calibrated; the raw box (0.73) or Haar's calibration (0.75) would fail
    assert iou_matrix(boxes, LANDMARK_BOX)[0, 0] > 0.78
    assert 0.8 <= scores[0] <= 1.0


@pytest.mark.parametrize("frame", [(640, 480), (1280, 720)])
@pytest.mark.parametrize("width", [48, 96])
def test_finds_small_faces_in_camera_frames(blaze: BlazeFaceDetector, frame: tuple[int, int], width: int) -> None:
    """Haar finds none of these in 640x480 below ~67 px (the issue's measurement)."""
    image, truth = _pasted(*frame, width, frame[0] // 3, frame[1] // 4)
    boxes, _ = blaze.detect(image)
    assert len(boxes) == 1, boxes
    assert iou_matrix(boxes, truth)[0, 0] > 0.5


@pytest.mark.parametrize("size", [(640, 480), (800, 600), (1280, 720)])
def test_finds_the_face_of_a_stretched_photo(blaze: BlazeFaceDetector, size: tuple[int, int]) -> None:
    """The demo photo resized to a camera frame (a 4:3 or 16:9 stretch): Haar found 0 here."""
    image = cv2.resize(ASTRONAUT, size, interpolation=cv2.INTER_AREA)
    sx, sy = size[0] / 512, size[1] / 512
    truth = LANDMARK_BOX * np.array([sx, sy, sx, sy], np.float32)
    boxes, _ = blaze.detect(image)
    assert len(boxes) == 1 and iou_matrix(boxes, truth)[0, 0] > 0.5


@pytest.mark.parametrize("name", rf.NEGATIVE_SOURCES)
def test_no_faces_in_face_free_photos(blaze: BlazeFaceDetector, name: str) -> None:
    (_, rgb), = [b for b in rf.load_backgrounds() if b[0] == name]
    boxes, scores = blaze.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def _odd_inputs() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [("1x1", np.zeros((1, 1, 3), np.uint8)), ("5x300", np.full((5, 300, 3), 128, np.uint8)),
            ("black", np.zeros((480, 640, 3), np.uint8)), ("white", np.full((720, 1280, 3), 255, np.uint8)),
            ("grey", np.full((480, 640, 3), 128, np.uint8)),
            ("noise", rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)),
            ("noise720", rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)),
            ("huge", np.zeros((6000, 8000, 3), np.uint8)),
            ("strided", rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)[:, ::-1])]


@pytest.mark.parametrize("name,image", _odd_inputs(), ids=[n for n, _ in _odd_inputs()])
def test_odd_input_gives_no_invented_faces(blaze: BlazeFaceDetector, name: str, image: np.ndarray) -> None:
    boxes, scores = blaze.detect(image)
    assert boxes.shape == (0, 4) and boxes.dtype == np.float32
    assert scores.shape == (0,) and scores.dtype == np.float32


@pytest.mark.parametrize("bad", [np.zeros((480, 640), np.uint8), np.zeros((480, 640, 3), np.uint16),
                                 np.zeros((480, 640, 4), np.uint8), np.zeros((480, 640, 3), np.float32)],
                         ids=["grey 2-D", "16-bit", "4-channel", "float"])
def test_wrong_image_types_are_a_clear_value_error(blaze: BlazeFaceDetector, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="expected"):
        blaze.detect(bad)


def test_missing_or_broken_model_file_is_a_detector_error(tmp_path) -> None:
    with pytest.raises(DetectorError, match="nope.tflite"):
        BlazeFaceDetector(model_path=tmp_path / "nope.tflite")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    with pytest.raises(DetectorError, match="cannot load"):
        make_detector("blaze", model_path=str(broken))
    with pytest.raises(ValueError, match="backend"):
        BlazeFaceDetector(backend="tensorflow")


def test_a_copied_model_file_is_used(tmp_path) -> None:
    copy = tmp_path / "copy.tflite"
    shutil.copy(default_model_path(), copy)
    boxes, _ = make_detector("blaze", model_path=str(copy)).detect(ASTRONAUT)
    assert len(boxes) == 1


def test_opencv_fallback_gives_the_same_boxes(blaze: BlazeFaceDetector) -> None:
    """Without ai-edge-litert the same model runs on cv2.dnn (slower, same answer)."""
    fallback = BlazeFaceDetector(backend="opencv")
    assert fallback.backend == "opencv"
    for image in (ASTRONAUT, _pasted(640, 480, 48, 200, 150)[0]):
        a, _ = blaze.detect(image)
        b, _ = fallback.detect(image)
        assert len(a) == len(b) == 1 and iou_matrix(a, b)[0, 0] > 0.95


def test_max_side_sets_the_fine_pass() -> None:
    """``detector_max_side`` 0 = the detector's own size; a 24 px face needs a larger fine pass."""
    assert make_detector("blaze").fine_side == 0  # type: ignore[attr-defined]
    image, truth = _pasted(640, 480, 24, 300, 200)
    small = make_detector("blaze", max_side=160).detect(image)[0]
    large = make_detector("blaze", max_side=640).detect(image)[0]
    assert len(small) == 0
    assert len(large) == 1 and iou_matrix(large, truth)[0, 0] > 0.4


def test_auto_fine_pass_follows_the_frame() -> None:
    """0.8 of the frame's long side within 384-1024: a 1280x720 frame's small faces keep their pixels."""
    sizes = {(640, 480): 512, (320, 240): 384, (800, 600): 640, (1280, 720): 1024, (1920, 1080): 1024}
    assert {wh: auto_fine_side(*wh) for wh in sizes} == sizes
    image, truth = _pasted(1280, 720, 40, 700, 300)
    auto = make_detector("blaze").detect(image)[0]
    fixed = make_detector("blaze", max_side=384).detect(image)[0]
    assert len(auto) == 1 and iou_matrix(auto, truth)[0, 0] > 0.4
    assert len(fixed) == 0


def test_pass_pyramid_and_large_faces_left_to_coarser_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass keeps boxes up to MAX_FACE_IN_PASS of its own pixels; larger ones come from the next pass."""
    assert pass_sides(384, 128) == [384, 128] and pass_sides(768, 128) == [768, 256, 128]
    assert pass_sides(480, 128) == [480, 128] and pass_sides(128, 128) == [128]
    detector = BlazeFaceDetector(fine_side=384, verify=False, score_threshold=0.5)
    image = np.zeros((480, 640, 3), np.uint8)
    small = np.array([[100, 100, 150, 150]], np.float32)  # 50 px: 30 px in the 384 pass
    large = np.array([[100, 100, 400, 400]], np.float32)  # 300 px: 180 px in the 384 pass
    answers = {384: np.concatenate([small, large]), 128: np.zeros((0, 4), np.float32)}
    monkeypatch.setattr(detector, "_pass", lambda bgr, side, border=0.0, shrunk=None: (
        answers[side], np.full(len(answers[side]), 0.9, np.float32)))
    boxes, _ = detector.detect(image)
    assert len(boxes) == 1 and iou_matrix(boxes, BLAZE_CAL.apply(small))[0, 0] > 0.99
    answers[128] = large
    assert len(detector.detect(image)[0]) == 2  # the coarse pass may report it


def _tight_astronaut(grow: float, out: int) -> np.ndarray:
    """The astronaut's face cropped to ``grow`` times its landmark box and resized to ``out`` px: it fills the frame."""
    x0, y0, x1, y1 = rf.ASTRONAUT_BOX
    cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * grow
    crop = ASTRONAUT[int(cy - s / 2):int(cy + s / 2), int(cx - s / 2):int(cx + s / 2)]
    return cv2.resize(crop, (out, out), interpolation=cv2.INTER_AREA)


def test_a_pass_with_a_border_maps_its_boxes_back_to_the_frame(blaze: BlazeFaceDetector) -> None:
    """The bordered pass sees the frame smaller inside a black margin; its boxes are in frame pixels all the same."""
    image = _tight_astronaut(1.3, 256)
    plain, plain_scores = blaze._pass(image, 128)
    framed, framed_scores = blaze._pass(image, 128, border=0.15)
    shrunk, shrunk_scores = blaze._pass(image, 128, border=0.15, shrunk=cv2.resize(image, (128, 128)))
    best = [b[np.argmax(s)][None] for b, s in ((plain, plain_scores), (framed, framed_scores), (shrunk, shrunk_scores))]
    assert iou_matrix(best[0], best[1])[0, 0] > 0.8 and iou_matrix(best[1], best[2])[0, 0] > 0.9
    assert not np.allclose(best[0], best[1])  # a different view of the face, not the same pass again


def test_the_bordered_pass_runs_only_where_nothing_was_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame-filling face that the plain passes miss is looked for once more, with a margin around the frame."""
    image = _tight_astronaut(1.3, 256)
    detector = BlazeFaceDetector()
    found, _ = detector.detect(image)
    real_pass, calls = detector._pass, []

    def counted(bgr: np.ndarray, side: int, border: float = 0.0, shrunk: np.ndarray | None = None):
        calls.append(border)
        return real_pass(bgr, side, border, shrunk)

    monkeypatch.setattr(detector, "_pass", counted)
    assert len(detector.detect(image)[0]) == 1 and max(calls) == 0.0  # found by the plain passes: no extra pass
    calls.clear()
    monkeypatch.setattr(detector, "_pass", lambda bgr, side, border=0.0, shrunk=None: (
        counted(bgr, side, border, shrunk) if border > 0 or bgr.shape[0] < 100 else (np.zeros((0, 4), np.float32),
                                                                                   np.zeros(0, np.float32))))
    blind, _ = detector.detect(image)  # the plain passes of the frame see nothing; the looks still work
    assert calls.count(0.15) == 1 and len(blind) == 1 and iou_matrix(blind, found)[0, 0] > 0.8
    detector.frame_border = 0.0
    assert len(detector.detect(image)[0]) == 0
    with pytest.raises(ValueError, match="frame_border"):
        BlazeFaceDetector(frame_border=1.5)


def test_a_dim_frame_is_brightened_for_the_detector_alone() -> None:
    """Auto-exposure after the fact: only frames whose 99th-percentile level is under DIM_LEVEL, by at most max_gain."""
    detector = BlazeFaceDetector()
    normal = np.full((480, 640, 3), 40, np.uint8)
    normal[:, :20] = 230  # a bright strip: the frame is not dim, whatever its mean
    assert detector._brightened(normal) is normal
    dim = np.full((480, 640, 3), 50, np.uint8)
    assert int(detector._brightened(dim)[0, 0, 0]) == round(50 * TARGET_LEVEL / 50)
    very_dim = np.full((480, 640, 3), 10, np.uint8)
    assert int(detector._brightened(very_dim)[0, 0, 0]) == 10 * 4  # capped at max_gain
    assert very_dim[0, 0, 0] == 10 and 50 < DIM_LEVEL  # the caller's frame is not touched
    assert BlazeFaceDetector(max_gain=1)._brightened(dim) is dim
    for bad in (0.5, 20):
        with pytest.raises(ValueError, match="max_gain"):
            BlazeFaceDetector(max_gain=bad)


def test_faces_in_a_dark_frame_are_found_after_the_gain() -> None:
    """Frames at 4 % of their exposure (levels under about 10): without the gain the model sees none of the faces."""
    with_gain, without = BlazeFaceDetector(), BlazeFaceDetector(max_gain=1)
    faces, backgrounds = rf.synthetic_faces(), rf.load_backgrounds()
    found, missed, total = 0, 0, 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        frame = rf.make_frame(640, 480, faces, backgrounds, rng, 0, sizes=(32, 48, 96), exposures=("normal",))
        dark = np.clip(frame.bgr * 0.04 + rng.normal(0, 1.0, frame.bgr.shape), 0, 255).astype(np.uint8)
        hit, extra = rf.match(frame.boxes, with_gain.detect(dark)[0])
        found, total = found + int(hit.sum()), total + len(hit)
        missed += len(hit) - int(rf.match(frame.boxes, without.detect(dark)[0])[0].sum())
        assert extra == 0
    assert found >= 0.85 * total and missed >= 0.8 * total


def _centred(side: int, factor: float, score: float) -> tuple[np.ndarray, np.ndarray]:
    """A look's answer that confirms the candidate: a box at its centre, 1 / factor of the crop."""
    lo, hi = side / 2 - side / factor / 2, side / 2 + side / factor / 2
    return np.array([[lo, lo, hi, hi]], np.float32), np.array([score], np.float32)


def test_looks_parse_from_text_and_pairs() -> None:
    assert parse_looks("80x1.6+64x1.4") == ((80, 1.6), (64, 1.4)) == parse_looks([(80, 1.6), (64, 1.4)])
    for bad in ("", "80", "80x9", "8x1.6", "ax1.6", [(80,)], []):
        with pytest.raises(ValueError, match="looks"):
            parse_looks(bad)
    with pytest.raises(ValueError, match="looks"):
        BlazeFaceDetector(looks="nonsense")
    old = range_bench.build_detector("blaze:looks=80x1.6,score_threshold=0.8")
    assert old.looks == ((80, 1.6),) and old.score_threshold == 0.8


@pytest.mark.parametrize("first,second,kept,second_run", [(0.9, 0.6, True, True), (0.5, 0.9, False, True),
                                                          (0.3, 1.0, False, False)])
def test_second_look_keeps_a_candidate_on_the_mean_of_its_looks(
        monkeypatch: pytest.MonkeyPatch, first: float, second: float, kept: bool, second_run: bool) -> None:
    """Two looks (80 px at 1.6, 64 px at 1.4) averaged at 0.72; a first look under 0.44 cannot reach
    that mean, so the second is not run."""
    detector = BlazeFaceDetector(fine_side=384, looks="80x1.6+64x1.4", score_threshold=0.72)
    candidate = np.array([[300, 200, 332, 232]], np.float32)
    looks = {80: first, 64: second}
    calls: list[int] = []

    def fake_pass(bgr: np.ndarray, side: int, border: float = 0.0,
                  shrunk: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        calls.append(side)
        if side == 384:
            return candidate, np.array([0.5], np.float32)  # doubtful: under the trust threshold
        if side in looks:
            return _centred(side, dict(detector.looks)[side], looks[side])
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)

    monkeypatch.setattr(detector, "_pass", fake_pass)
    boxes, scores = detector.detect(np.zeros((480, 640, 3), np.uint8))
    assert len(boxes) == int(kept)
    if kept:
        assert scores[0] == pytest.approx((first + second) / 2)
    assert (64 in calls) == second_run and 80 in calls


@pytest.mark.parametrize("first,kept", [(0.85, True), (0.75, False)])
def test_a_large_candidate_gets_the_first_look_alone_at_its_own_threshold(
        monkeypatch: pytest.MonkeyPatch, first: float, kept: bool) -> None:
    """A face of 96 px or more: the narrower views would shrink it into black padding at the frame's
    edge, so the first look decides, at 0.8 (0.75 would pass the small candidates' mean of 0.7)."""
    detector = BlazeFaceDetector(fine_side=384)
    candidate = np.array([[10, 10, 130, 130]], np.float32)  # 120 px, touching the frame's corner
    calls: list[int] = []

    def fake_pass(bgr: np.ndarray, side: int, border: float = 0.0,
                  shrunk: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        calls.append(side)
        if side == 384:
            return candidate, np.array([0.5], np.float32)
        if side == 80:
            return _centred(80, 1.6, first)
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)

    monkeypatch.setattr(detector, "_pass", fake_pass)
    boxes, scores = detector.detect(np.zeros((480, 640, 3), np.uint8))
    assert len(boxes) == int(kept) and 64 not in calls
    if kept:
        assert scores[0] == pytest.approx(first)


def test_range_bench_runs_on_a_tiny_config(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    range_bench.add_args(parser)
    args = parser.parse_args(["--out", str(tmp_path), "--frames", "2", "--negatives", "2",
                              "--frame-sizes", "640x480", "--sizes", "48,96",
                              "--detectors", "blaze;haar;blaze:verify=false;nope"])
    assert range_bench.main(args) == 0
    report = json.loads((tmp_path / "detectors.json").read_text())
    assert set(report["detectors"]) == {"blaze", "haar", "blaze:verify=false"}
    assert "nope" in report["skipped"]
    blaze = report["detectors"]["blaze"]
    assert set(blaze["recall"]["640x480"]) == {"48", "96"}
    assert blaze["n"]["640x480"] == {"48": 2, "96": 2}
    assert blaze["recall"]["640x480"]["96"] == 1.0  # the astronaut at 96 px: found in both frames
    assert blaze["fp_per_negative_frame"]["640x480"] == 0.0
    assert blaze["ms"]["640x480"]["median"] > 0 and blaze["vs_haar"]["ms_median"]["640x480"] > 0
    assert report["detectors"]["haar"]["vs_haar"]["ms_median"]["640x480"] == pytest.approx(1.0)
    md = (tmp_path / "detectors.md").read_text()
    assert "| blaze |" in md and "skipped nope" in md and "640x480" in capsys.readouterr().out


def test_range_frames_put_truth_boxes_where_the_faces_are() -> None:
    rng = np.random.default_rng(1)
    fr = rf.make_frame(640, 480, rf.synthetic_faces(), rf.load_backgrounds(), rng, 0, sizes=(64, 160))
    assert fr.boxes.shape == (2, 4)
    widths = np.sort(fr.boxes[:, 2] - fr.boxes[:, 0])
    assert 55 < widths[0] < 100 and 140 < widths[1] < 240  # rotation grows the axis-aligned box
    hit, extra = rf.match(fr.boxes, fr.boxes[::-1].copy())
    assert hit.all() and extra == 0
    hit, extra = rf.match(fr.boxes, fr.boxes + 300)
    assert not hit.any() and extra == 2


def test_node_with_a_missing_detector_model_exits_1_with_a_clear_message(tmp_path) -> None:
    """The issue's 'a detector that fails to load gives a clear error at start (node exit 1)'."""
    import subprocess
    import sys

    pytest.importorskip("rclpy")
    missing = tmp_path / "missing_detector.tflite"
    proc = subprocess.run([sys.executable, "-m", "emodan_ros.ros.node", "--ros-args", "-p", "allow_random_model:=true",
                           "-p", "detector:=blaze", "-p", f"detector_model_path:={missing}"],
                          cwd="/", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "missing_detector.tflite" in proc.stdout + proc.stderr
