"""`emodan eval`: scoring rules on known predictions, and the whole command on a generated dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from emodan_ros.model.checkpoint import save_checkpoint
from emodan_ros.faces.classes import FERPLUS_CLASSES
from emodan_ros.model.dan import DANConfig, EmotionalDAN, default_mean_shape
from emodan_ros.evaluation.evaluate import FullFrameDetector, Record, evaluate, score
from emodan_ros.model.predictor import Predictor
from emodan_ros.evaluation.report import gradcam

MODEL = ("neutral", "happiness", "sadness")


def tiny_checkpoint(path: Path, classes: tuple[str, ...] = tuple(FERPLUS_CLASSES)) -> Path:
    torch.manual_seed(0)
    config = DANConfig(input_size=32, width=0.125, convs_per_block=1, fc_size=32, class_names=classes)
    save_checkpoint(path, EmotionalDAN(config))
    return path


def onehot(k: int, n: int = 3) -> np.ndarray:
    p = np.full(n, 0.1, np.float32)
    p[k] = 0.8
    return p / p.sum()


def test_known_predictions_give_the_hand_computed_confusion() -> None:
    # truth/prediction pairs: (n,n) (n,h) (h,h) (h,h) (s,n) (s,s) ; one image of an unknown class
    pairs = [(0, 0), (0, 1), (1, 1), (1, 1), (2, 0), (2, 2)]
    records = [Record(f"img{i}", MODEL[t], t, onehot(p)) for i, (t, p) in enumerate(pairs)]
    records.append(Record("x", "contempt", -1, onehot(0)))
    m = score(records, MODEL, ("neutral", "happiness", "sadness", "contempt")).metrics
    assert m["confusion"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["n"] == 6 and m["accuracy"] == pytest.approx(4 / 6)
    # F1: neutral p=1/2 r=1/2 -> 1/2; happiness p=2/3 r=1 -> 0.8; sadness p=1 r=1/2 -> 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["per_class"]["happiness"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "n": 2})
    assert m["unknown_classes"] == {"contempt": 1} and m["n_unknown_class"] == 1
    assert m["class_mapping"]["contempt"] is None and m["n_images"] == 7


def test_missed_faces_lower_detection_rate_not_accuracy() -> None:
    records = [Record("a", "neutral", 0, onehot(0)), Record("b", "happiness", 1, None),
               Record("c", "sadness", 2, onehot(2)), Record("d", "sadness", 2, onehot(0))]
    m = score(records, MODEL, MODEL).metrics
    assert m["detection_rate"] == 0.75 and m["n"] == 3
    assert m["accuracy"] == pytest.approx(2 / 3) and m["accuracy_counting_misses"] == 0.5


def test_restricting_the_argmax_to_dataset_classes() -> None:
    probs = np.array([0.2, 0.5, 0.3], np.float32)  # happiness wins unless it is excluded
    records = [Record("a", "sadness", 1, probs)]  # dataset vocabulary (neutral, sadness): sadness -> model index 2
    records[0].true = 2
    free = score(records, MODEL, ("neutral", "sadness"))
    restricted = score(records, MODEL, ("neutral", "sadness"), restrict=True)
    assert free.pred.tolist() == [1] and free.metrics["accuracy"] == 0.0
    assert restricted.pred.tolist() == [2] and restricted.metrics["accuracy"] == 1.0
    assert restricted.metrics["restricted_to"] == ["neutral", "sadness"]


def test_landmark_error_on_a_fixed_shape() -> None:
    gt = (default_mean_shape().numpy() * 100).astype(np.float64)
    iod = np.linalg.norm(gt[36] - gt[45])
    shift = 0.05 * iod  # every point off by 5% of the inter-ocular distance
    records = [Record("a", None, -1, onehot(0), landmarks=gt + [shift, 0], gt_landmarks=gt),
               Record("b", None, -1, onehot(0), landmarks=gt + [0, 2 * shift], gt_landmarks=gt)]
    m = score(records, MODEL, ()).metrics
    assert m["nme_inter_ocular"] == pytest.approx(0.075)
    assert m["failure_rate_0.08"] == 0.5  # 0.05 passes, 0.10 fails
    assert m["auc_0.08"] == pytest.approx((0.03 / 0.08) / 2)


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(1)
    for name, count in (("happy", 3), ("neutral", 2), ("zebra", 2)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            cv2.imwrite(str(root / name / f"{i}.png"), rng.integers(0, 255, (40, 40), dtype=np.uint8))
    (root / "happy" / "broken.png").write_bytes(b"not a png")
    return root


def test_eval_writes_metrics_predictions_and_report(tmp_path: Path) -> None:
    model = tiny_checkpoint(tmp_path / "m.pt")
    data = _dataset(tmp_path / "data")
    out = tmp_path / "out"
    from emodan_ros.cli import main

    assert main(["eval", "--model", str(model), "--data", str(data), "--format", "imagefolder",
                 "--out", str(out), "--precision", "fp32", "--saliency-per-class", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 7 and metrics["n"] == 5
    assert metrics["unknown_classes"] == {"zebra": 2} and metrics["n_unreadable"] == 1
    assert metrics["confusion"]["classes"] == list(FERPLUS_CLASSES)
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 7
    assert {r["true_label"] for r in rows} == {"happiness", "neutral", "zebra"}
    assert [c for c in rows[0] if c.startswith("p_")] == [f"p_{c}" for c in FERPLUS_CLASSES]
    assert "x67" in rows[0] and "y67" in rows[0]
    probs = np.array([[float(r[f"p_{c}"]) for c in FERPLUS_CLASSES] for r in rows])
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-3)
    assert all(r["predicted_label"] == FERPLUS_CLASSES[int(np.argmax(p))] for r, p in zip(rows, probs))
    report = (out / "report.md").read_text()
    for png in ("confusion.png", "per_class.png", "saliency.png"):
        assert png in report and (out / png).stat().st_size > 1000
    assert "zebra: 2" in report and "broken.png" in report


def test_frame_input_goes_through_the_pipeline(tmp_path: Path) -> None:
    model = tiny_checkpoint(tmp_path / "m.pt")
    data = _dataset(tmp_path / "data")
    predictor = Predictor.from_checkpoint(model, device="cpu", precision="fp32")
    crop = evaluate(None, str(data), "imagefolder", str(tmp_path / "c"), "crop", predictor=predictor,
                    saliency_per_class=0)
    frame = evaluate(None, str(data), "imagefolder", str(tmp_path / "f"), "frame", detector="full",
                     predictor=predictor, saliency_per_class=0)
    assert frame["detection_rate"] == 1.0 and frame["detector"] == "full" and frame["n"] == crop["n"]
    a = list(csv.DictReader(open(tmp_path / "c" / "predictions.csv")))
    b = list(csv.DictReader(open(tmp_path / "f" / "predictions.csv")))
    # the same faces, cut by the predictor's own crop path instead of a resize: close, not identical
    pa = np.array([[float(r[f"p_{c}"]) for c in FERPLUS_CLASSES] for r in a])
    pb = np.array([[float(r[f"p_{c}"]) for c in FERPLUS_CLASSES] for r in b])
    assert np.abs(pa - pb).max() < 0.05


def test_gradcam_is_a_normalised_map_that_follows_the_input() -> None:
    torch.manual_seed(0)
    model = EmotionalDAN(DANConfig(input_size=32, width=0.125, convs_per_block=1, fc_size=32)).eval()
    crops = np.random.default_rng(0).integers(0, 255, (2, 32, 32), dtype=np.uint8)
    cams = gradcam(model, crops, [0, 3])
    assert cams.shape == (2, 32, 32) and cams.min() >= 0 and cams.max() <= 1 + 1e-6
    assert cams.max() > 0 and not np.allclose(cams[0], cams[1])


def test_full_frame_detector_box_is_the_crop_convention() -> None:
    boxes, scores = FullFrameDetector().detect(np.zeros((48, 48, 3), np.uint8))
    from emodan_ros.faces.crop import CROP_SCALE

    side = boxes[0, 2] - boxes[0, 0]
    assert scores.tolist() == [1.0] and side * CROP_SCALE == pytest.approx(48)


def test_flip_agreement_is_measured_on_crops(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "sym"
    (root / "happy").mkdir(parents=True)
    for i in range(4):
        half = rng.integers(0, 255, (40, 20), dtype=np.uint8)
        cv2.imwrite(str(root / "happy" / f"{i}.png"), np.hstack([half, half[:, ::-1]]))  # mirror-symmetric
    predictor = Predictor.from_checkpoint(tiny_checkpoint(tmp_path / "m.pt"), device="cpu", precision="fp32")
    metrics = evaluate(None, str(root), "imagefolder", str(tmp_path / "out"), "crop", predictor=predictor,
                       saliency_per_class=0)
    assert metrics["flip_agreement"] == 1.0  # a symmetric face is its own mirror image


def test_eval_with_flip_average_scores_the_averaged_answer(tmp_path: Path) -> None:
    model = tiny_checkpoint(tmp_path / "m.pt")
    data = _dataset(tmp_path / "data")
    from emodan_ros.cli import main

    assert main(["eval", "--model", str(model), "--data", str(data), "--format", "imagefolder", "--out",
                 str(tmp_path / "avg"), "--precision", "fp32", "--saliency-per-class", "0", "--flip-average"]) == 0
    metrics = json.loads((tmp_path / "avg" / "metrics.json").read_text())
    assert metrics["flip_average"] is True and "flip_agreement" not in metrics
    rows = list(csv.DictReader(open(tmp_path / "avg" / "predictions.csv")))
    predictor = Predictor.from_checkpoint(model, device="cpu", precision="fp32", flip_average=True)
    first = cv2.imread(rows[0]["path"], cv2.IMREAD_GRAYSCALE)
    expected = predictor.predict_crops(first[None]).probs[0]
    assert np.allclose([float(rows[0][f"p_{c}"]) for c in FERPLUS_CLASSES], expected, atol=1e-3)


def test_landmark_datasets_are_cropped_from_the_true_landmark_box(tmp_path: Path) -> None:
    root = tmp_path / "pts"
    root.mkdir()
    shape = default_mean_shape().numpy() * 60 + 50  # a 60 px face in a 160 px image
    cv2.imwrite(str(root / "a.jpg"), np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8))
    (root / "a.pts").write_text("version: 1\nn_points: 68\n{\n" + "\n".join(f"{x} {y}" for x, y in shape) + "\n}\n")
    predictor = Predictor.from_checkpoint(tiny_checkpoint(tmp_path / "m.pt"), device="cpu", precision="fp32")
    rows = evaluate(None, str(root), "pts", str(tmp_path / "out"), "crop", predictor=predictor, saliency_per_class=0)
    # Untrained: the mean shape placed in the true landmark box, not in the whole 160 px image.
    assert rows["nme_inter_ocular"] < 0.3  # about 0.16 (the placeholder is not box-centred); whole image: > 0.5
