import numpy as np
import pytest

from emodan_ros.evaluation import metrics


Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, -1]
Y_PRED = [0, 0, 1, 1, 2, 2, 2, 0, 2, 1]
CLASSES = ["neutral", "happiness", "sadness"]


def test_confusion_matrix_by_hand():
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[2, 1, 0],
                           [0, 1, 1],
                           [1, 0, 3]]


def test_accuracy_ignores_unknown_truth():
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(6 / 9)


def test_per_class_and_macro_f1_by_hand():
    pc = metrics.per_class(Y_TRUE, Y_PRED, CLASSES)
    # neutral: tp 2, predicted 3, actual 3
    assert pc["neutral"]["precision"] == pytest.approx(2 / 3)
    assert pc["neutral"]["recall"] == pytest.approx(2 / 3)
    # happiness: tp 1, predicted 2, actual 2
    assert pc["happiness"]["precision"] == pytest.approx(0.5)
    assert pc["happiness"]["n"] == 2
    # sadness: tp 3, predicted 4, actual 4
    assert pc["sadness"]["recall"] == pytest.approx(0.75)
    assert metrics.macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx((2 / 3 + 0.5 + 0.75) / 3)


def test_macro_f1_skips_absent_classes():
    # class 3 never occurs in truth or predictions: not averaged in
    assert metrics.macro_f1([0, 1], [0, 1], 4) == pytest.approx(1.0)
    # a predicted class absent from the truth counts with F1 0
    assert metrics.macro_f1([0, 0], [0, 3], 4) == pytest.approx((2 / 3 + 0) / 2)


def test_bad_predictions_rejected():
    with pytest.raises(ValueError):
        metrics.confusion_matrix([0], [3], 3)
    with pytest.raises(ValueError):
        metrics.accuracy([0, 1], [0])


def _shape() -> np.ndarray:
    pts = np.zeros((68, 2))
    pts[:, 0] = np.arange(68)
    pts[:, 1] = np.arange(68) % 7
    pts[36] = [0.0, 0.0]
    pts[45] = [100.0, 0.0]  # inter-ocular distance 100
    pts[37:42] = [[2.0, 0.0], [4.0, 0.0], [6.0, 0.0], [8.0, 0.0], [10.0, 0.0]]
    pts[42:45] = [80.0, 0.0]
    pts[46:48] = [80.0, 0.0]
    return pts


def test_nme_known_shift():
    gt = _shape()
    # right eye centre x (0+2+4+6+8+10)/6 = 5; left eye centre x (80*5+100)/6 = 500/6
    assert metrics.normalising_distance(gt[None], "inter_pupil")[0] == pytest.approx(470 / 6)
    pred = gt + np.array([3.0, 4.0])  # every point off by 5 px
    assert metrics.nme(pred, gt, "inter_ocular")[0] == pytest.approx(0.05)
    assert metrics.nme(pred, gt, "inter_pupil")[0] == pytest.approx(5 / (470 / 6))
    # half the points exact: mean error halves
    half = gt.copy()
    half[::2] += [3.0, 4.0]
    assert metrics.nme(half[None], gt[None])[0] == pytest.approx(0.025)
    with pytest.raises(ValueError):
        metrics.nme(pred, gt, "bogus")


def test_auc_failure_and_curve():
    errors = [0.0, 0.02, 0.04, 0.1]
    # contributions (0.08 - e)/0.08: 1, 0.75, 0.5, 0 -> mean 0.5625
    assert metrics.auc_at(errors, 0.08) == pytest.approx(0.5625)
    assert metrics.failure_rate(errors, 0.08) == pytest.approx(0.25)
    t, frac = metrics.cumulative_error_curve(errors, 0.08, steps=5)  # 0,.02,.04,.06,.08
    np.testing.assert_allclose(t, [0, 0.02, 0.04, 0.06, 0.08])
    np.testing.assert_allclose(frac, [0.25, 0.5, 0.75, 0.75, 0.75])
    # the step integral of the curve agrees with the exact AUC
    fine_t, fine = metrics.cumulative_error_curve(errors, 0.08, steps=80001)
    area = np.sum((fine[1:] + fine[:-1]) / 2 * np.diff(fine_t))
    assert area / 0.08 == pytest.approx(0.5625, abs=1e-3)


def test_summarize_keys_and_values():
    gt = np.stack([_shape(), _shape()])
    pred = gt.copy()
    pred[1] += [3.0, 4.0]
    out = metrics.summarize(Y_TRUE, Y_PRED, CLASSES, pred, gt)
    assert out["n"] == 9
    assert out["accuracy"] == pytest.approx(6 / 9)
    assert out["confusion"]["classes"] == CLASSES
    assert out["confusion"]["matrix"][2] == [1, 0, 3]
    assert out["nme_inter_ocular"] == pytest.approx(0.025)
    assert out["auc_0.08"] == pytest.approx((1 + 0.03 / 0.08) / 2)
    assert out["failure_rate_0.08"] == 0.0
    assert set(out) >= {"n", "accuracy", "macro_f1", "per_class", "confusion",
                        "nme_inter_ocular", "nme_inter_pupil", "auc_0.08", "failure_rate_0.08"}
    landmarks_only = metrics.summarize(pred_landmarks=pred, gt_landmarks=gt)
    assert landmarks_only["n"] == 2 and "accuracy" not in landmarks_only
