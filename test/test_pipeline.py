"""Detector + tracker + predictor without ROS: detection cadence, following, caps, real model plumbing.

Most tests use a scripted scene: a stand-in detector reports where the faces are, and a stand-in
model puts its 68 points on the true face when the box it is given overlaps one (as a trained
model does) and reports low quality otherwise. That pins down the pipeline's own logic; the last
tests run the real (untrained) Predictor and the Haar detector on a real photo.
"""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from skimage import data

from emodan_ros.faces.pipeline import EmotionPipeline
from emodan_ros.faces.boxes import iou_matrix
from emodan_ros.faces.config import PipelineConfig

CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
GRID = np.stack(np.meshgrid(np.linspace(0, 1, 17), np.linspace(0, 1, 4)), -1).reshape(-1, 2)[:68]


class Scene:
    """True face boxes of the current frame, shared by the stand-in detector and model."""

    def __init__(self, faces: list[list[float]]) -> None:
        self.faces = np.array(faces, np.float32).reshape(-1, 4)
        self.detector_misses = False
        self.detector_calls = 0


class ScriptedDetector:
    name = "scripted"

    def __init__(self, scene: Scene) -> None:
        self.scene = scene

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.scene.detector_calls += 1
        centre = (self.scene.faces[:, :2] + self.scene.faces[:, 2:]) / 2
        h, w = image_bgr.shape[:2]
        seen = (centre[:, 0] < w) & (centre[:, 1] < h) & (not self.scene.detector_misses)
        return self.scene.faces[seen].copy(), np.full(int(seen.sum()), 0.8, np.float32)


class ScriptedModel:
    class_names = CLASSES

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.calls: list[np.ndarray] = []

    def predict(self, image_bgr: np.ndarray, boxes: np.ndarray) -> SimpleNamespace:
        self.calls.append(np.array(boxes))
        lms, quality = [], []
        for box in boxes:
            iou = iou_matrix(box[None], self.scene.faces)
            target = self.scene.faces[iou.argmax()] if iou.size and iou.max() > 0.2 else box
            lms.append(target[:2] + GRID * (target[2:] - target[:2]))
            quality.append(0.9 if target is not box else 0.05)
        probs = np.full((len(boxes), len(CLASSES)), 1.0 / len(CLASSES), np.float32)
        return SimpleNamespace(landmarks=np.array(lms, np.float32).reshape(-1, 68, 2), probs=probs,
                               quality=np.array(quality, np.float32))


def _texture(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """A still, textured frame: the scripted faces sit on it, and the appearance check sees them stay."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 3), None, 0, 255, cv2.NORM_MINMAX)


FRAME = _texture()


def _pipeline(scene: Scene, **kwargs) -> tuple[EmotionPipeline, ScriptedModel]:
    """A pipeline in the synchronous mode, whose cadence these tests pin down frame by frame
    (the detector thread's mode: test_async_detect.py)."""
    kwargs.setdefault("detect_async", False)
    model = ScriptedModel(scene)
    return EmotionPipeline(model, ScriptedDetector(scene), PipelineConfig(**kwargs)), model


def test_detects_every_n_frames_and_follows_landmarks_in_between() -> None:
    scene = Scene([[100, 100, 200, 200]])
    pipe, model = _pipeline(scene, redetect_every=3)
    detected = []
    for k in range(9):
        scene.faces += 4  # the face drifts down-right
        (face,) = pipe.process(FRAME)
        detected.append(pipe.stats.detected)
        assert face.face_id == 1
        np.testing.assert_allclose(face.box, scene.faces[0], atol=1e-4)
    assert detected == [True, False, False] * 3
    # between detections the model gets last frame's landmark box, 4 px behind the moving face
    np.testing.assert_allclose(model.calls[1][0], [104, 104, 204, 204], atol=1e-4)
    np.testing.assert_allclose(model.calls[2][0], [108, 108, 208, 208], atol=1e-4)
    assert pipe.counters.detector_calls == 3


def test_nobody_means_detecting_every_frame_and_no_results() -> None:
    scene = Scene([])
    pipe, model = _pipeline(scene, redetect_every=10)
    for _ in range(4):
        assert pipe.process(FRAME) == []
    assert scene.detector_calls == 4 and model.calls == []


def test_low_quality_triggers_a_detection_next_frame() -> None:
    scene = Scene([[100, 100, 200, 200]])
    pipe, _ = _pipeline(scene, redetect_every=50, min_quality=0.5)
    pipe.process(FRAME)
    scene.faces[:] = [[400, 300, 500, 400]]  # jumps away: the followed box sees no face
    (lost,) = pipe.process(FRAME)
    assert not pipe.stats.detected and lost.quality < 0.5
    (found,) = pipe.process(FRAME)
    assert pipe.stats.detected and found.quality > 0.5 and found.face_id != lost.face_id


def test_a_detector_miss_keeps_the_id_and_retries_at_once() -> None:
    scene = Scene([[100, 100, 200, 200]])
    pipe, _ = _pipeline(scene, redetect_every=2, max_missed=3)
    (face,) = pipe.process(FRAME)
    pipe.process(FRAME)
    scene.detector_misses = True
    assert pipe.process(FRAME) == [] and pipe.stats.detected
    scene.detector_misses = False
    (again,) = pipe.process(FRAME)
    assert pipe.stats.detected and again.face_id == face.face_id


def test_faces_are_capped_largest_first() -> None:
    faces = [[20 * i, 0, 20 * i + 10 + i, 10 + i] for i in range(30)]
    scene = Scene(faces[::-1])  # the scripted detector, like the real ones, reports largest first
    pipe, model = _pipeline(scene, max_faces=4)
    assert len(pipe.process(FRAME)) == 4
    assert len(model.calls[-1]) == 4 and pipe.counters.capped_frames == 1


def test_a_face_leaving_the_image_is_dropped() -> None:
    scene = Scene([[500, 100, 600, 200]])
    pipe, _ = _pipeline(scene, redetect_every=100)
    counts = []
    for _ in range(8):
        counts.append(len(pipe.process(FRAME)))
        scene.faces += [30, 0, 30, 0]
    assert counts[0] == 1 and counts[-1] == 0
    assert pipe.tracker.visible() == []


def test_smoothing_reaches_the_results() -> None:
    scene = Scene([[100, 100, 200, 200]])
    pipe, _ = _pipeline(scene, smoothing=0.5)
    assert not pipe.process(FRAME)[0].smoothed
    assert pipe.process(FRAME)[0].smoothed


def test_bad_settings_are_refused_and_change_nothing() -> None:
    pipe, _ = _pipeline(Scene([]))
    for bad in ({"redetect_every": 0}, {"min_quality": 1.5}, {"max_faces": 0}, {"smoothing": 1.0},
                {"iou_threshold": 0.0}, {"max_missed": -1}):
        with pytest.raises(ValueError):
            pipe.configure(**bad)
    assert pipe.config == PipelineConfig(detect_async=False)


@pytest.fixture(scope="module")
def real_pipeline() -> EmotionPipeline:
    predictor_mod = pytest.importorskip("emodan_ros.model.predictor")
    from emodan_ros.faces.detector import HaarDetector

    return EmotionPipeline(predictor_mod.Predictor.random(), HaarDetector(),
                          PipelineConfig(redetect_every=1, detect_async=False))


def test_untrained_model_on_the_astronaut_gives_one_plausible_face(real_pipeline: EmotionPipeline) -> None:
    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    (face,) = real_pipeline.process(image)
    assert face.landmarks.shape == (68, 2) and np.isfinite(face.landmarks).all()
    assert face.probs.shape == (len(real_pipeline.class_names),)
    assert np.isclose(face.probs.sum(), 1.0, atol=1e-4)
    assert 0.0 <= face.quality <= 1.0
    centre = face.landmarks.mean(axis=0)
    assert 170 < centre[0] < 280 and 70 < centre[1] < 200  # around the astronaut's face


def test_untrained_model_finds_nobody_in_a_photo_without_people(real_pipeline: EmotionPipeline) -> None:
    real_pipeline.reset()
    image = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)
    assert real_pipeline.process(image) == []
