"""Multi-source training: rt112 stages, class balancing, camera effects, face boxes, extra emotion sets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from emodan_ros.compat import package_file
from emodan_ros.data.crop_dataset import CropDataset
from emodan_ros.data.face_boxes import detect_boxes
from emodan_ros.data.mix import ClassBalanced, WeightedMix
from emodan_ros.data.readers import ManifestDataset, Sample, one_hot
from emodan_ros.faces.classes import FERPLUS_CLASSES
from emodan_ros.faces.crop import (NO_AUGMENTATION, Augmentation, box_for_full_crop, box_from_landmarks,
                                   camera_effects, make_crop)
from emodan_ros.model.checkpoint import load_model, read_checkpoint, save_checkpoint
from emodan_ros.model.dan import PRESETS, DANConfig, EmotionalDAN, default_mean_shape
from emodan_ros.model.predictor import Predictor
from emodan_ros.training.trainer import Trainer
from test_train import config as train_config, make_ferplus, make_pts

SMALL_RT112 = replace(PRESETS["rt112"], width=0.125, fc_size=32)
CAMERA = ("blur", "jpeg", "gamma", "occlusion", "noise")


# ------------------------------------------------------------------ DANConfig / rt112 ---

@pytest.mark.parametrize("kwargs, message", [
    ({"stage_sizes": (64,)}, "one entry per stage"),
    ({"stage_blocks": ("vgg",)}, "one entry per stage"),
    ({"stage_sizes": (64, 100)}, "multiple of 16"),
    ({"input_size": 112, "stage_sizes": (64, 128)}, "larger than the crop"),
    ({"stage_blocks": ("vgg", "resnet")}, "stage_blocks must be among"),
])
def test_stage_options_are_validated(kwargs: dict[str, Any], message: str) -> None:
    """Bad per-stage settings fail at config time, not as a shape error deep in the forward pass."""
    with pytest.raises(ValueError, match=message):
        DANConfig(**{"num_stages": 2, **kwargs})


def test_config_round_trip_keeps_stage_tuples() -> None:
    """Checkpoints store the config as JSON-like data; reading it back must give the same frozen config."""
    config = PRESETS["rt112"]
    back = DANConfig.from_dict(json.loads(json.dumps(config.to_dict())))  # lists after JSON
    assert back == config
    assert isinstance(back.stage_sizes, tuple) and isinstance(back.stage_blocks, tuple)
    assert [config.size_of(i) for i in range(2)] == [64, 112]
    assert [config.block_of(i) for i in range(2)] == ["vgg", "dwsep"]
    plain = PRESETS["cpu"]  # no per-stage lists: every stage at input_size in VGG blocks
    assert plain.size_of(1) == plain.input_size and plain.block_of(1) == "vgg"


def test_rt112_stages_see_their_own_sizes() -> None:
    """The first stage gets the 64 px downsampled crop, the second the 112 px warped face + heatmap + feature."""
    torch.manual_seed(0)
    model = EmotionalDAN(PRESETS["rt112"]).eval()
    seen: dict[int, tuple[int, ...]] = {}
    hooks = [stage.register_forward_pre_hook(lambda _m, args, i=i: seen.__setitem__(i, tuple(args[0].shape)))
             for i, stage in enumerate(model.stages)]
    with torch.no_grad():
        output = model(torch.randn(2, 1, 112, 112))
    for hook in hooks:
        hook.remove()
    assert seen == {0: (2, 1, 64, 64), 1: (2, 3, 112, 112)}
    assert len(output.landmarks) == 2 and all(p.shape == (2, 68, 2) for p in output.landmarks)
    assert all(z is not None and z.shape == (2, len(PRESETS["rt112"].class_names)) for z in output.logits)


def test_dwsep_stage_has_a_strided_stem_and_depthwise_convs() -> None:
    """The refining stage's speed comes from these layers; a silent fallback to VGG would cost 8x."""
    model = EmotionalDAN(SMALL_RT112)
    vgg, dwsep = ([m for m in stage.features if isinstance(m, torch.nn.Conv2d)] for stage in model.stages)
    assert all(c.groups == 1 and c.stride == (1, 1) and c.kernel_size == (3, 3) for c in vgg)
    assert dwsep[0].stride == (2, 2) and dwsep[0].groups == 1 and dwsep[0].in_channels == 3
    depthwise = [c for c in dwsep[1:] if c.kernel_size == (3, 3)]
    assert depthwise and all(c.groups == c.in_channels == c.out_channels > 1 for c in depthwise)
    assert any(c.kernel_size == (1, 1) for c in dwsep)
    pools = [sum(isinstance(m, torch.nn.MaxPool2d) for m in s.features) for s in model.stages]
    assert pools == [4, 3]  # the stride-2 stem replaces the first pool: both stages still reduce by 16


def test_rt112_checkpoint_round_trip_and_predictor(tmp_path: Path) -> None:
    """A saved rt112 model reloads to the same outputs, and the node's Predictor runs it on raw crops."""
    torch.manual_seed(1)
    model = EmotionalDAN(SMALL_RT112).eval()
    path = tmp_path / "rt112.pt"
    save_checkpoint(path, model)
    assert DANConfig.from_dict(read_checkpoint(path)["config"]) == SMALL_RT112
    loaded, _ = load_model(path)
    x = torch.randn(3, 1, 112, 112)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(a.landmarks, b.landmarks))
    assert torch.allclose(a.final_logits, b.final_logits, atol=1e-5)
    crops = np.random.default_rng(0).integers(0, 256, (2, 96, 96), dtype=np.uint8)
    predicted = Predictor.from_checkpoint(path, device="cpu", precision="fp32").predict_crops(crops)
    direct = Predictor(model, device="cpu", precision="fp32").predict_crops(crops)
    assert predicted.landmarks.shape == (2, 68, 2) and predicted.probs.shape == (2, len(SMALL_RT112.class_names))
    assert np.allclose(predicted.probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(predicted.probs, direct.probs, atol=1e-5)
    assert np.allclose(predicted.landmarks, direct.landmarks, atol=1e-3)


# ------------------------------------------------------------------ ClassBalanced ---

class Labelled:
    """Minimal dataset: 90 items of class a, 10 of class b, one unlabelled; items are their own index."""

    classes = ("a", "b")

    def __init__(self) -> None:
        self.targets: list[np.ndarray | None] = [one_hot(0, 2)] * 90 + [one_hot(1, 2)] * 10 + [None]
        self.epochs: list[int] = []

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> int:
        return index

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def _fraction_b(balanced: ClassBalanced, epochs: int = 5) -> float:
    drawn = []
    for epoch in range(epochs):
        balanced.set_epoch(epoch)
        drawn += [balanced[i] for i in range(len(balanced))]
    assert 100 not in drawn  # the unlabelled item has no class weight
    return float(np.mean([90 <= i < 100 for i in drawn]))


def test_class_balance_power_tempers_the_prior() -> None:
    """Power 0 keeps FER+'s skew, power 1 draws every class equally often."""
    assert 0.05 < _fraction_b(ClassBalanced(Labelled(), 0.0)) < 0.16
    balanced = ClassBalanced(Labelled(), 1.0)
    assert np.isclose(balanced.probabilities[90:100].sum(), 0.5)
    assert 0.42 < _fraction_b(balanced) < 0.58
    half = ClassBalanced(Labelled(), 0.5)  # in between: sqrt(90) : sqrt(10) = 3 : 1
    assert np.isclose(half.probabilities[90:100].sum(), 0.25)


def test_class_balance_draw_is_fixed_by_seed_and_epoch() -> None:
    """Resumed runs must redraw the same epoch; set_epoch must redraw and reach the wrapped dataset."""
    inner = Labelled()
    a, b = ClassBalanced(inner, 0.7, seed=3), ClassBalanced(Labelled(), 0.7, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    assert np.array_equal(a.order, b.order) and inner.epochs[-1] == 4 and len(a) == len(inner)
    first = a.order.copy()
    a.set_epoch(5)
    assert not np.array_equal(first, a.order)
    assert not np.array_equal(ClassBalanced(Labelled(), 0.7, seed=4).order, ClassBalanced(inner, 0.7, seed=3).order)


@pytest.mark.parametrize("power", [-0.1, 1.5])
def test_class_balance_power_outside_unit_interval_raises(power: float) -> None:
    with pytest.raises(ValueError, match="class balance power"):
        ClassBalanced(Labelled(), power)


# ------------------------------------------------------------------ camera effects ---

def _texture(size: int = 48) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (size, size), dtype=np.uint8)


@pytest.mark.parametrize("name", CAMERA + ("low_resolution",))
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_camera_probabilities_must_be_probabilities(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        Augmentation(**{name: value})


def test_camera_effects_off_leave_the_crop_alone() -> None:
    """Evaluation crops (and default training) must not be touched by the new effects."""
    crop = _texture()
    for augment in (NO_AUGMENTATION, Augmentation()):
        assert np.array_equal(camera_effects(crop, augment, np.random.default_rng(0)), crop)


@pytest.mark.parametrize("name", CAMERA)
def test_each_camera_effect_changes_the_crop(name: str) -> None:
    crop = _texture()
    original = crop.copy()
    out = camera_effects(crop, replace(NO_AUGMENTATION, **{name: 1.0}), np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == crop.shape
    assert not np.array_equal(out, crop)
    assert np.array_equal(crop, original)  # never in place: the caller's crop is the dataset's image


def test_make_crop_with_every_camera_effect_keeps_its_shape() -> None:
    image = np.random.default_rng(2).integers(0, 256, (120, 100, 3), dtype=np.uint8)
    points = default_mean_shape().numpy() * 60 + 20
    augment = Augmentation(low_resolution=1.0, **{name: 1.0 for name in CAMERA})
    crop, moved = make_crop(image, box_from_landmarks(points), 40, points, augment, np.random.default_rng(0))
    assert crop.shape == (40, 40) and crop.dtype == np.uint8 and moved.shape == (68, 2)


# ------------------------------------------------------------------ boxes in readers ---

def _write_images(root: Path, count: int, size: int = 64) -> list[str]:
    """Textured colour images whose pixel (0, 0) holds the index, so a fake detector knows which it sees."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    names = []
    for index in range(count):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        image[0, 0] = index
        names.append(f"img{index}.png")
        cv2.imwrite(str(root / names[-1]), image)
    return names


def _manifest(path: Path, rows: list[tuple], boxes: bool) -> Path:
    header = "path,label" + (",box_x0,box_y0,box_x1,box_y1" if boxes else "")
    path.write_text("\n".join([header] + [",".join(map(str, row)) for row in rows]) + "\n")
    return path


def test_manifest_boxes_follow_the_rows_that_are_kept(tmp_path: Path) -> None:
    """Skipped rows (unknown label, unreadable image) must not shift the remaining faces' boxes."""
    names = _write_images(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rows = [(names[0], "happiness", 1, 2, 30, 40), (names[1], "unicorn", 5, 5, 9, 9),
            ("broken.png", "sadness", 6, 6, 10, 10), (names[2], "neutral", 10, 11, 50, 60)]
    dataset = ManifestDataset(_manifest(tmp_path / "m.csv", rows, boxes=True), classes=FERPLUS_CLASSES)
    assert len(dataset) == 2 and dataset.unknown_classes == {"unicorn": 1} and len(dataset.bad_files) == 1
    assert np.array_equal(dataset.box(0), [1, 2, 30, 40]) and np.array_equal(dataset.box(1), [10, 11, 50, 60])
    sample = dataset[1]
    assert sample.path.endswith(names[2]) and np.array_equal(sample.box, [10, 11, 50, 60])


def test_manifest_box_cells_empty_or_bad(tmp_path: Path) -> None:
    """An empty box is 'no box' (the detector or the whole image frames the face); text fails by row."""
    names = _write_images(tmp_path, 2)
    path = tmp_path / "m.csv"
    path.write_text("path,label,box_x0,box_y0,box_x1,box_y1\n"
                    f"{names[0]},anger,,,,\n{names[1]},anger,1,2,30,40\n")
    dataset = ManifestDataset(path)
    assert dataset.box(0) is None and np.array_equal(dataset.box(1), [1, 2, 30, 40])
    path.write_text(f"path,label,box_x0,box_y0,box_x1,box_y1\n{names[0]},anger,1,two,3,4\n")
    with pytest.raises(ValueError, match="row 1: bad box"):
        ManifestDataset(path)


def test_set_boxes_needs_one_box_per_item(tmp_path: Path) -> None:
    names = _write_images(tmp_path, 2)
    dataset = ManifestDataset(_manifest(tmp_path / "m.csv", [(n, "anger") for n in names], boxes=False))
    assert dataset.box(0) is None and dataset[0].box is None
    with pytest.raises(ValueError, match="one box"):
        dataset.set_boxes([None])
    dataset.set_boxes([None, [1, 2, 3, 4]])
    assert dataset[0].box is None and np.array_equal(dataset[1].box, [1, 2, 3, 4])


# ------------------------------------------------------------------ CropDataset on boxes ---

def test_crop_dataset_frames_the_samples_box(tmp_path: Path) -> None:
    """Without landmarks the crop follows sample.box (the detector's face), not the whole photo."""
    image = np.zeros((200, 200), np.uint8)
    image[120:160, 40:80] = 255
    box = np.array([40.0, 120.0, 79.0, 159.0])
    common = dict(target=one_hot(0, 8), label=0, path="x.png", classes=FERPLUS_CLASSES)
    points = default_mean_shape().numpy() * 100 + 50
    samples = [Sample(image=image, landmarks=None, box=box, **common),
               Sample(image=image, landmarks=None, **common),
               Sample(image=image, landmarks=points, box=box, **common)]
    dataset = CropDataset(samples, FERPLUS_CLASSES, 32, NO_AUGMENTATION)
    boxed, full, marked = (dataset[i]["image"][0].numpy() for i in range(3))
    assert np.array_equal(boxed, make_crop(image, box, 32)[0])
    assert np.array_equal(full, make_crop(image, box_for_full_crop(200, 200), 32)[0])
    assert np.array_equal(marked, make_crop(image, box_from_landmarks(points), 32, points)[0])  # landmarks win

    def centre(crop: np.ndarray) -> np.ndarray:
        ys, xs = np.nonzero(crop > 128)
        return np.array([xs.mean(), ys.mean()])

    assert np.abs(centre(boxed) - 15.5).max() < 4  # the square sits in the middle of its own crop
    assert np.abs(centre(full) - 15.5).max() > 5


# ------------------------------------------------------------------ detect_boxes ---

class FakeDetector:
    """Answers per image index (read from pixel (0, 0)); counts its calls."""

    def __init__(self, answers: dict[int, list[list[float]]], name: str = "fake") -> None:
        self.answers, self.name, self.calls = answers, name, 0

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        assert image_bgr.ndim == 3
        boxes = np.array(self.answers.get(int(image_bgr[0, 0, 0]), []), np.float32).reshape(-1, 4)
        return boxes, np.ones(len(boxes), np.float32)


class Exploding:
    """A detector that must not be asked (the cache answers for its name)."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("the cache should have answered")


def test_detect_boxes_prefers_the_face_the_dataset_names_and_caches(tmp_path: Path) -> None:
    names = _write_images(tmp_path / "img", 3)
    rows = [(names[0], "anger", 10, 10, 32, 32), (names[1], "anger", 50, 50, 60, 60),
            (names[2], "fear", 5, 5, 60, 60)]
    csv = _manifest(tmp_path / "img" / "m.csv", rows, boxes=True)
    detector = FakeDetector({0: [[40, 40, 63, 63], [12, 12, 30, 30]],  # bigger one is someone else
                             1: [[0, 0, 20, 20]]})  # no overlap with the dataset's face: keep its box
    dataset = ManifestDataset(csv)
    counts = detect_boxes(dataset, tmp_path / "cache", detector)
    assert counts == {"detected": 1, "kept_dataset_box": 2} and detector.calls == 3
    expected = [[12, 12, 30, 30], [50, 50, 60, 60], [5, 5, 60, 60]]
    assert all(np.allclose(dataset.box(i), b) for i, b in enumerate(expected))
    assert len(list((tmp_path / "cache").glob("boxes_*.npz"))) == 1
    again = ManifestDataset(csv)
    assert detect_boxes(again, tmp_path / "cache", Exploding()) == counts
    assert all(np.allclose(again.box(i), b) for i, b in enumerate(expected))
    with pytest.raises(AssertionError):  # another detector's boxes are not this one's
        detect_boxes(ManifestDataset(csv), tmp_path / "cache", Exploding("other"))


def test_detect_boxes_without_priors_takes_the_largest_and_keeps_misses(tmp_path: Path) -> None:
    names = _write_images(tmp_path, 2)
    dataset = ManifestDataset(_manifest(tmp_path / "m.csv", [(n, "contempt") for n in names], boxes=False))
    counts = detect_boxes(dataset, None, FakeDetector({0: [[10, 10, 30, 30], [20, 20, 60, 62]]}))
    assert counts == {"detected": 1, "kept_dataset_box": 1}
    assert np.allclose(dataset.box(0), [20, 20, 60, 62]) and dataset.box(1) is None


# ------------------------------------------------------------------ training ---

def _emotion_set(root: Path, count: int) -> Path:
    names = _write_images(root, count)
    labels = [FERPLUS_CLASSES[i % 4] for i in range(count)]
    return _manifest(root / "list.csv", list(zip(names, labels)), boxes=False)


def _sets(entries: str) -> str:
    return f"emotion_sets=[{entries}]"


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, str]:
    return {"ferplus_train": str(make_ferplus(tmp_path / "train")),
            "ferplus_valid": str(make_ferplus(tmp_path / "valid", 8)),
            "pts": str(make_pts(tmp_path / "pts")),
            "extra_train": str(_emotion_set(tmp_path / "extra_train", 8)),
            "extra_valid": str(_emotion_set(tmp_path / "extra_valid", 4))}


def test_emotion_sets_are_validated(tmp_path: Path, sources: dict[str, str]) -> None:
    train = sources["extra_train"]
    with pytest.raises(ValueError, match="emotion_sets entries"):
        train_config(tmp_path, sources, _sets(f"{{name: x, train: '{train}'}}"))  # no weight
    with pytest.raises(ValueError, match="emotion_sets entries"):
        train_config(tmp_path, sources, _sets(f"{{name: x, train: '{train}', weight: 0.1, colour: red}}"))
    with pytest.raises(ValueError, match="leave FER\\+ a share"):  # 0.2 landmarks + 0.8 = all of it
        train_config(tmp_path, sources, _sets(f"{{name: x, train: '{train}', weight: 0.8}}"))
    assert train_config(tmp_path, sources, _sets(f"{{name: x, train: '{train}', weight: 0.7}}")).emotion_sets
    for clash in (f"{{name: ferplus, train: '{train}', weight: 0.1}}",  # would replace FER+'s validation
                  f"{{name: x, train: '{train}', weight: 0.1}}, {{name: x, train: '{train}', weight: 0.1}}"):
        with pytest.raises(ValueError, match="unique"):
            train_config(tmp_path, sources, _sets(clash))
    with pytest.raises(ValueError, match=">= 0"):
        train_config(tmp_path, sources, _sets(f"{{name: x, train: '{train}', weight: -0.1}}"))


def test_score_is_the_mean_accuracy_over_sets_minus_nme() -> None:
    """Each validation set counts once; F1 and other metrics are not accuracies."""
    record = {"val_accuracy": 0.6, "val_lfw_accuracy": 0.2, "val_macro_f1": 0.9, "val_lfw_macro_f1": 0.1,
              "val_nme_inter_ocular": 0.05, "train_loss": 3.0}
    assert Trainer._score(record) == pytest.approx(0.35)
    assert Trainer._score({"val_nme_inter_ocular": 0.05}) == pytest.approx(-0.05)
    raw = {"raw_val_accuracy": 0.5, "raw_val_nme_inter_ocular": 0.1} | record  # the weight average's companion
    assert Trainer._score(raw, "raw_val_") == pytest.approx(0.4) and Trainer._score(raw) == pytest.approx(0.35)


def test_training_with_an_extra_emotion_set(tmp_path: Path, sources: dict[str, str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """FER+ + a manifest set (boxes from a fake detector) + .pts, class-balanced, one short epoch."""
    detector = FakeDetector({i: [[8, 8, 56, 56]] for i in range(8)}, name="blaze")
    monkeypatch.setattr("emodan_ros.data.face_boxes.make_detector", lambda name: detector)
    entry = f"{{name: lfw, train: '{sources['extra_train']}', valid: '{sources['extra_valid']}', weight: 0.3}}"
    config = train_config(tmp_path, sources, _sets(entry), "epochs=[1]", "max_batches=2", "class_balance=0.5",
                          "pts_offset=1")
    trainer = Trainer(config)
    record = trainer.run()
    assert 0.0 <= record["val_lfw_accuracy"] <= 1.0 and "val_lfw_macro_f1" in record and "val_accuracy" in record
    assert trainer.history[-1]["val_lfw_accuracy"] == record["val_lfw_accuracy"]
    info = trainer.data_info["lfw"]
    assert info["boxes"] == {"detected": 8, "kept_dataset_box": 0}
    assert info["valid_boxes"] == {"detected": 4, "kept_dataset_box": 0} and info["n"] == 8
    assert detector.calls == 12 and len(list((tmp_path / "run" / "boxes").glob("boxes_*.npz"))) == 2
    assert np.allclose(trainer.valid_emotion["lfw"].samples.box(0), [8, 8, 56, 56])
    mix = trainer.train_set.samples
    assert isinstance(mix, WeightedMix)
    assert [type(p).__name__ for p in mix.datasets] == ["ClassBalanced", "ClassBalanced", "PtsDataset"]
    assert np.allclose(mix.weights, [0.5, 0.3, 0.2])
    assert trainer.data_info["landmarks"]["pts_offset"] == 1.0
    pts = mix.datasets[2]
    raw = np.loadtxt(Path(pts.paths[0]).with_suffix(".pts"), skiprows=3, max_rows=68)
    assert np.allclose(pts.landmarks[0], raw - 1.0, atol=1e-3)
    assert read_checkpoint(tmp_path / "run" / "last.pt")["data"]["lfw"]["boxes"] == info["boxes"]


# ------------------------------------------------------------------ compat ---

def test_package_file_without_a_ros_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain-pip machines have ament_index_python but no AMENT_PREFIX_PATH: fall back to the source tree."""
    pytest.importorskip("ament_index_python")
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    assert package_file("package.xml") == Path(__file__).resolve().parents[1] / "package.xml"
