"""Teacher landmarks on emotion photos (data/teacher.py) and the trainer's `landmark_teacher` and
`teacher_ferplus` options."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from emodan_ros.data.crop_dataset import CropDataset
from emodan_ros.data.readers import ManifestDataset
from emodan_ros.data.teacher import TeacherError, teacher_landmarks
from emodan_ros.faces.crop import NO_AUGMENTATION, box_for_full_crop, box_from_landmarks
from emodan_ros.faces.classes import FERPLUS_CLASSES
from emodan_ros.model.dan import default_mean_shape
from emodan_ros.training.trainer import Trainer
from test_multisource import FakeDetector, _emotion_set, _manifest, _sets, _write_images, sources  # noqa: F401
from test_train import config as train_config


def _shape_in(box: np.ndarray) -> np.ndarray:
    """The mean shape scaled into ``box`` (x0, y0, x1, y1)."""
    unit = default_mean_shape().numpy()
    unit = (unit - unit.min(0)) / (unit.max(0) - unit.min(0))
    return (box[:2] + unit * (box[2:] - box[:2])).astype(np.float32)


class FakeTeacher:
    """Labels images whose pixel (0, 0) is even, with the mean shape in the sample's box; counts calls."""

    def __init__(self, name: str = "fake") -> None:
        self.name, self.calls, self.priors = name, 0, []

    def __call__(self, image_bgr: np.ndarray, prior: np.ndarray | None) -> np.ndarray | None:
        self.calls += 1
        assert image_bgr.ndim == 3 and image_bgr.shape[2] == 3  # grey files reach it as BGR
        self.priors.append(prior)
        if int(image_bgr[0, 0, 0]) % 2:
            return None
        return _shape_in(np.asarray(prior if prior is not None else [4, 4, 60, 60], np.float32))


def test_teacher_labels_found_faces_keeps_the_rest_and_caches(tmp_path: Path) -> None:
    names = _write_images(tmp_path / "img", 4)
    grey = cv2.cvtColor(cv2.imread(str(tmp_path / "img" / names[2])), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "img" / names[2]), grey)
    rows = [(n, "anger", 8, 10, 50, 56) for n in names]
    dataset = ManifestDataset(_manifest(tmp_path / "img" / "m.csv", rows, boxes=True), classes=FERPLUS_CLASSES)
    teacher = FakeTeacher()
    counts = teacher_landmarks(dataset, tmp_path / "cache", teacher)
    assert counts == {"labelled": 2, "unlabelled": 2} and teacher.calls == 4
    assert all(np.allclose(p, [8, 10, 50, 56]) for p in teacher.priors)  # it is told which face is the sample's
    assert dataset.landmarks[1] is None and dataset.landmarks[3] is None
    assert np.allclose(box_from_landmarks(dataset.landmarks[0]), [8, 10, 50, 56], atol=1e-3)
    sample = CropDataset(dataset, FERPLUS_CLASSES, 32, NO_AUGMENTATION)[0]
    assert bool(sample["landmark_mask"]) and bool(sample["emotion_mask"])  # both heads learn from it
    assert not bool(CropDataset(dataset, FERPLUS_CLASSES, 32, NO_AUGMENTATION)[1]["landmark_mask"])

    again = ManifestDataset(tmp_path / "img" / "m.csv")
    silent = FakeTeacher()
    assert teacher_landmarks(again, tmp_path / "cache", silent) == counts and silent.calls == 0
    assert np.allclose(again.landmarks[0], dataset.landmarks[0])
    other = FakeTeacher("other")  # another teacher's labels are not this one's
    teacher_landmarks(ManifestDataset(tmp_path / "img" / "m.csv"), tmp_path / "cache", other)
    assert other.calls == 4


def test_full_crop_prior_is_the_face_the_whole_image_frames(tmp_path: Path) -> None:
    """Box-less items (FER+'s crops) tell the teacher the box the whole image implies, cached apart."""
    names = _write_images(tmp_path / "img", 3)
    dataset = ManifestDataset(_manifest(tmp_path / "img" / "m.csv", [(n, "anger") for n in names], boxes=False))
    plain = FakeTeacher()
    teacher_landmarks(dataset, tmp_path / "cache", plain)
    assert plain.priors == [None, None, None]
    framed = FakeTeacher()
    again = ManifestDataset(tmp_path / "img" / "m.csv")
    counts = teacher_landmarks(again, tmp_path / "cache", framed, full_crop_prior=True)
    assert framed.calls == 3  # the other rule's cache is not reused
    h, w = cv2.imread(str(tmp_path / "img" / names[0])).shape[:2]
    assert all(np.allclose(p, box_for_full_crop(w, h)) for p in framed.priors)
    labelled = [i for i, p in enumerate(again.landmarks) if p is not None]
    assert counts["labelled"] == len(labelled) > 0
    assert np.allclose(box_from_landmarks(again.landmarks[labelled[0]]), box_for_full_crop(w, h), atol=1e-3)


def test_training_with_teacher_on_ferplus(tmp_path: Path, sources: dict[str, str],  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`teacher_ferplus` labels the FER+ training crops (never its validation set); it needs a teacher."""
    with pytest.raises(ValueError, match="teacher_ferplus needs a landmark_teacher"):
        train_config(tmp_path, sources, "teacher_ferplus=true")
    teacher = FakeTeacher("dlib")
    monkeypatch.setattr("emodan_ros.data.teacher.DlibTeacher", lambda: teacher)
    config = train_config(tmp_path, sources, "epochs=[1]", "max_batches=2", "landmark_teacher=dlib",
                          "teacher_ferplus=true")
    trainer = Trainer(config)
    counts = trainer.data_info["ferplus_train"]["teacher_landmarks"]
    fer = trainer.train_set.samples.datasets[0]
    fer = getattr(fer, "dataset", fer)
    assert counts["labelled"] > 0 and counts["labelled"] + counts["unlabelled"] == len(fer) == teacher.calls
    assert all(np.allclose(p, box_for_full_crop(48, 48)) for p in teacher.priors)
    assert sum(p is not None for p in fer.landmarks) == counts["labelled"]
    assert all(p is None for p in trainer.valid_emotion["ferplus"].samples.landmarks)
    without = Trainer(train_config(tmp_path / "b", sources, "epochs=[1]", "landmark_teacher=dlib"))
    assert "teacher_landmarks" not in without.data_info["ferplus_train"]
    assert np.isfinite(trainer.run()["train_loss"])


def test_unknown_teacher_is_refused(tmp_path: Path, sources: dict[str, str]) -> None:  # noqa: F811
    names = _write_images(tmp_path / "img", 1)
    dataset = ManifestDataset(_manifest(tmp_path / "img" / "m.csv", [(names[0], "anger")], boxes=False))
    with pytest.raises(TeacherError, match="landmark_teacher must be one of"):
        teacher_landmarks(dataset, None, "mediapipe")
    with pytest.raises(ValueError, match="landmark_teacher must be empty or one of"):
        train_config(tmp_path, sources, "landmark_teacher=mediapipe")


def test_training_with_teacher_landmarks(tmp_path: Path, sources: dict[str, str],  # noqa: F811
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The emotion set's training faces carry teacher landmarks into the mix; its validation faces do not."""
    detector = FakeDetector({i: [[8, 8, 56, 56]] for i in range(8)}, name="blaze")
    monkeypatch.setattr("emodan_ros.data.face_boxes.make_detector", lambda name: detector)
    teacher = FakeTeacher("dlib")
    monkeypatch.setattr("emodan_ros.data.teacher.DlibTeacher", lambda: teacher)
    entry = f"{{name: lfw, train: '{sources['extra_train']}', valid: '{sources['extra_valid']}', weight: 0.3}}"
    config = train_config(tmp_path, sources, _sets(entry), "epochs=[1]", "max_batches=2",
                          "landmark_teacher=dlib")
    trainer = Trainer(config)
    assert trainer.data_info["lfw"]["teacher_landmarks"] == {"labelled": 4, "unlabelled": 4}
    assert teacher.calls == 8  # the training images only
    extra = trainer.train_set.samples.datasets[1]
    assert sum(p is not None for p in extra.landmarks) == 4
    assert all(p is None for p in trainer.valid_emotion["lfw"].samples.landmarks)
    record = trainer.run()
    assert np.isfinite(record["train_loss"])


def test_dlib_teacher_on_a_real_face() -> None:
    """dlib's points on the astronaut's face: inside her face box, none for a box elsewhere, and in the
    package's 0-based pixel convention (the same points, doubled, on the image enlarged 2x)."""
    pytest.importorskip("dlib", reason="dlib not installed (pip install dlib-bin: the bench extra)")
    pytest.importorskip("face_recognition_models", reason="dlib's model file not installed (bench extra)")
    from skimage import data

    from emodan_ros.data.teacher import DlibTeacher
    from emodan_ros.faces.detector import make_detector

    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    box = make_detector("haar").detect(image)[0][0]
    teacher = DlibTeacher()
    points = teacher(image, box)
    assert points is not None and points.shape == (68, 2)
    span = box_from_landmarks(points)
    assert np.all(np.abs(span - box) < 0.25 * (box[2] - box[0]))
    assert teacher(image, box + np.array([300, 300, 300, 300])) is None  # not the sample's face
    big = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    doubled = teacher(big, box * 2)
    assert doubled is not None
    assert np.abs(doubled - (2 * points + 0.5)).mean() < 1.0
    # whole-pixel points, so no point-wise match; but no bias: without the half-pixel centre shift it is -0.25
    assert np.abs((doubled - (2 * points + 0.5)).mean(0)).max() < 0.2
