"""`emodan bench` on tiny generated data with a tiny random checkpoint: rows, files, peer skips.

No timing is asserted: only that every row is there, measured or skipped with a reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from skimage import data as skdata

from emodan_ros.bench import accuracy as bench_accuracy
from emodan_ros.bench import measure as bench_measure
from emodan_ros.bench import peers as bench
from emodan_ros.bench import report as bench_report
from emodan_ros.model.checkpoint import save_checkpoint
from emodan_ros.faces.classes import FERPLUS_CLASSES
from emodan_ros.faces.detector import make_detector
from emodan_ros.model.dan import DANConfig, EmotionalDAN, default_mean_shape

TINY = DANConfig(input_size=32, num_stages=1, width=0.125, convs_per_block=1, fc_size=16)
# FER+ vote rows (10 columns: 8 emotions, unknown, not-a-face): majority labels
# neutral, happiness, contempt, sadness, plus one without a majority (dropped).
VOTES = {
    "a.png": [8, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "b.png": [0, 9, 0, 0, 0, 0, 0, 0, 1, 0],
    "c.png": [0, 0, 0, 0, 0, 0, 0, 7, 0, 0],
    "d.png": [0, 0, 0, 6, 0, 0, 0, 0, 0, 0],
    "e.png": [3, 3, 0, 0, 3, 0, 0, 0, 0, 0],
}


def _write_pts(path: Path, points: np.ndarray) -> None:
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    path.write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(0)
    fer = root / "fer"
    fer.mkdir()
    lines = []
    for name, votes in VOTES.items():
        assert cv2.imwrite(str(fer / name), rng.integers(0, 255, (48, 48), dtype=np.uint8))
        lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
    (fer / "label.csv").write_text("\n".join(lines) + "\n")
    w300 = root / "300w"
    w300.mkdir()
    mean = default_mean_shape().numpy()  # unit square coordinates of a face
    for i in range(4):
        points = 30 + 60 * (mean - mean.min(0)) / (mean.max(0) - mean.min(0)) + rng.normal(0, 1, (68, 2))
        image = rng.integers(60, 200, (120, 120, 3), dtype=np.uint8)
        assert cv2.imwrite(str(w300 / f"face{i}.png"), image)
        _write_pts(w300 / f"face{i}.pts", points)
    # A real face (scikit-image's astronaut) whose annotation lies in the node detector's box, so the
    # landmark rows have a face their own detector finds.
    photo = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)[0:256, 96:352]
    (box,) = make_detector("blaze").detect(photo)[0][:1]
    unit = (mean - mean.min(0)) / (mean.max(0) - mean.min(0))
    assert cv2.imwrite(str(w300 / "face4.png"), photo)
    _write_pts(w300 / "face4.pts", box[:2] + unit * (box[2:] - box[:2]))
    frames = root / "frames"
    frames.mkdir()
    for name in ("smile.png", "calm.png"):
        assert cv2.imwrite(str(frames / name), photo)
    assert cv2.imwrite(str(frames / "empty.png"), np.full((200, 200, 3), 90, np.uint8))
    (frames / "labels.csv").write_text("path,label\nsmile.png,happiness\ncalm.png,neutral\nempty.png,anger\n")
    torch.manual_seed(0)
    model = root / "tiny.pt"
    # The run trained on face1 (in its folder, not in its holdout): the bench must leave it out.
    held = {"landmarks": {"dirs": [str(w300)], "holdout_files": ["face0.pts", "face2.pts", "face3.pts", "face4.pts"]}}
    save_checkpoint(model, EmotionalDAN(TINY), data=held)
    return {"model": model, "fer": fer, "landmarks": w300, "root": root, "frames": frames / "labels.csv"}


@pytest.fixture(scope="module")
def report(fixtures: dict[str, Path]) -> dict:
    return bench.run_bench(str(fixtures["model"]), str(fixtures["fer"]), [str(fixtures["landmarks"])],
                           repeats=3, compile_model=False, node_duration=0, paper_config=TINY,
                           frame_sets=[f"posed={fixtures['frames']}"])


def _names(rows: list[dict]) -> list[str]:
    return [r["row"] for r in rows]


def test_bench_has_every_row_measured_or_skipped_with_a_reason(report: dict) -> None:
    assert _names(report["emotion"]) == ["ours fp32", "ours bf16", "paper-size fp32 (untrained)",
                                         "fer mini-Xception (tflite)"]
    assert _names(report["landmarks"]) == ["ours fp32", "ours bf16", "paper-size fp32 (untrained)",
                                           "dlib 68-point shape predictor"]
    assert _names(report["detection"]) == ["detector blaze (node default)", "detector haar", "detector dlib",
                                           "detector yunet"]
    assert len(report["node"]) == 4 and all("disabled" in r["skipped"] for r in report["node"])
    for row in report["emotion"] + report["landmarks"] + report["detection"]:
        assert "skipped" in row or row.get("faces_per_s", 1) > 0, row
        if "skipped" in row:
            assert row["skipped"].strip()
    ours = report["emotion"][0]
    # 4 labelled images (e.png has no majority); contempt (c.png) is not a shared class.
    assert ours["n_all"] == 4 and ours["n_shared"] == 3
    assert report["landmarks"][0]["n"] == 4  # every .pts file but the one the checkpoint trained on
    assert "1 left out" in report["data"]["landmark_files"]
    # Only the astronaut is a face: the node's detector finds it and nothing in the noise images.
    assert report["landmarks"][0]["n_found"] == 1 and report["landmarks"][0]["nme_inter_ocular_found"] > 0
    paper = report["emotion"][2]
    assert "accuracy_shared" not in paper and "untrained" in paper["note"]
    if not torch.cuda.is_available():
        assert "no CUDA" in report["cuda"][0]["skipped"]


def test_frame_rows_score_every_image_and_count_a_faceless_one_wrong(report: dict) -> None:
    ours = next(r for r in report["frames"] if r["kind"] == "ours")
    assert ours["set"] == "posed" and ours["n"] == 3
    assert ours["face_found"] == pytest.approx(2 / 3)
    assert ours["per_class_recall"]["anger"] == 0.0  # the face-free image cannot be right
    assert set(ours["dataset_classes"]) == {"anger", "happiness", "neutral"}
    assert sum(ours["predicted_share"].values()) == pytest.approx(2 / 3)  # only over the classes it has
    peer = [r for r in report["frames"] if r["kind"] == "peer"]
    assert not peer or peer[0]["n"] == 3


def test_restricted_accuracy_takes_the_argmax_over_the_dataset_classes() -> None:
    probs = np.zeros((3, 8), np.float32)
    probs[0, FERPLUS_CLASSES.index("contempt")] = 0.9  # not a dataset class: the next best counts
    probs[0, FERPLUS_CLASSES.index("happiness")] = 0.1
    probs[1, FERPLUS_CLASSES.index("neutral")] = 1.0
    probs[2] = np.nan  # no face
    scores = bench_accuracy.restricted_accuracy(probs, FERPLUS_CLASSES, np.array([0, 1, 1]), ("happiness", "neutral"))
    assert scores["accuracy"] == pytest.approx(2 / 3) and scores["face_found"] == pytest.approx(2 / 3)
    assert scores["per_class_recall"] == {"happiness": 1.0, "neutral": 0.5} and scores["min_class_recall"] == 0.5


def test_landmark_scores_compare_on_the_faces_both_found() -> None:
    truth = np.tile(default_mean_shape().numpy()[None] * 100, (3, 1, 1))
    predicted = truth + 1.0
    predicted[2] = np.nan
    both = np.array([True, False, False])
    scores = bench_accuracy.landmark_scores(predicted, truth, both)
    assert scores["n_found"] == 2 and scores["n_common"] == 1 and scores["found"] == pytest.approx(2 / 3)
    assert scores["nme_inter_ocular"] == pytest.approx(scores["nme_inter_ocular_found"])


def test_frames_argument_needs_name_and_csv() -> None:
    with pytest.raises(ValueError, match="NAME=CSV"):
        bench_accuracy.parse_frame_sets(["just.csv"])


def test_ratios_are_against_the_peer_of_the_same_run(report: dict) -> None:
    fer = report["emotion"][-1]
    ours = report["emotion"][0]
    if "skipped" in fer:
        assert "latency_ratio_b1" not in ours
        return
    assert ours["latency_ratio_b1"] == pytest.approx(ours["ms_per_face_b1"] / fer["ms_per_face_b1"], rel=0.02)
    assert ours["accuracy_points_vs_peer"] == pytest.approx(
        100 * (ours["accuracy_shared"] - fer["accuracy_shared"]), abs=0.1)


def test_outputs_are_written(report: dict, fixtures: dict[str, Path]) -> None:
    paths = bench_report.write_outputs(report, fixtures["root"] / "out")
    data = json.loads(paths["json"].read_text())
    assert _names(data["emotion"]) == _names(report["emotion"])
    text = paths["markdown"].read_text()
    for row in report["emotion"] + report["landmarks"] + report["detection"]:
        assert row["row"] in text
    assert "## CUDA" in text and report["machine"]["cpu"] in text
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_peers_skip_with_a_reason_when_not_installed(fixtures: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("dlib", "face_recognition_models", "fer", "ai_edge_litert", "tensorflow"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ModuleNotFoundError
    emotion = bench.load_emotion_data(fixtures["fer"])
    landmarks = bench_accuracy.load_landmark_data([fixtures["landmarks"]], None)
    fer = bench.fer_row(emotion, ("neutral", "happiness"), 3)
    dlib = bench.dlib_row(landmarks, 3, np.full_like(landmarks.landmarks, np.nan), np.zeros(5, bool))
    assert "fer not installed" in fer["skipped"] and "pip install" in fer["skipped"]
    assert "dlib not installed" in dlib["skipped"]
    rows = bench.detection_rows(landmarks, 3, "")
    assert [r["row"] for r in rows[:3]] == ["detector blaze (node default)", "detector haar", "detector dlib"]
    assert "dlib" in rows[2]["skipped"] and "recall_iou50" in rows[1]
    assert "recall_iou50" in rows[0]  # blaze without ai-edge-litert: the same model on cv2.dnn


def test_shared_class_accuracy_ignores_classes_a_peer_lacks() -> None:
    shared = bench.shared_classes(FERPLUS_CLASSES, bench.FER_LABELS)
    assert "contempt" not in shared and "happiness" in shared and len(shared) == 7
    labels = np.array([FERPLUS_CLASSES.index(c) for c in ("happiness", "contempt", "anger")])
    probs = np.zeros((3, 8), np.float32)
    probs[0, FERPLUS_CLASSES.index("contempt")] = 0.9  # top is contempt, best shared is happiness
    probs[0, FERPLUS_CLASSES.index("happiness")] = 0.1
    probs[1, FERPLUS_CLASSES.index("contempt")] = 1.0
    probs[2, FERPLUS_CLASSES.index("neutral")] = 1.0
    scores = bench.emotion_scores(probs, FERPLUS_CLASSES, labels, shared)
    assert scores["n_shared"] == 2 and scores["accuracy_shared"] == pytest.approx(0.5)
    assert scores["n_all"] == 3 and scores["accuracy_all"] == pytest.approx(1 / 3)
    fer_probs = np.eye(7, dtype=np.float32)[[3, 6, 0]]  # happy, neutral, angry in fer's order
    fer_scores = bench.emotion_scores(fer_probs, bench.FER_LABELS, labels, shared)
    assert fer_scores["accuracy_shared"] == pytest.approx(1.0) and "accuracy_all" not in fer_scores


def test_time_calls_orders_quantiles_and_counts_calls() -> None:
    calls = []
    timing = bench_measure.time_calls(lambda: calls.append(1), repeats=5, warmup=2)
    assert timing.calls == 5 and len(calls) == 7
    assert timing.p25_ms <= timing.median_ms <= timing.p75_ms


def test_dlib_box_conversion_inverts_the_node_calibration() -> None:
    pytest.importorskip("dlib", reason="dlib not installed (optional bench extra)")
    pytest.importorskip("face_recognition_models", reason="face-recognition-models not installed")
    from emodan_ros.faces.detector import _DLIB_CAL

    peer = bench.DlibPeer()
    box = np.array([10.0, 20.0, 110.0, 140.0])
    assert _DLIB_CAL.apply(peer.to_dlib_box(box)[None])[0] == pytest.approx(box, abs=1e-4)


def test_cli_bench_parses(fixtures: dict[str, Path]) -> None:
    from emodan_ros.cli import build_parser

    args = build_parser().parse_args(["bench", "--model", "m.pt", "--ferplus", "f", "--landmarks", "a", "b",
                                      "--out", "o", "--no-compile", "--node-duration", "0"])
    assert args.landmarks == ["a", "b"] and args.compile is False and args.repeats == 20
    with pytest.raises(ValueError, match="repeats"):
        args.repeats = 2
        bench.main(args)


def test_node_bench_frame_sizes_and_the_node_rows_run_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench.node --size` scales the scene; `emodan bench`'s node rows pass the node no settings of their own."""
    pytest.importorskip("emodan_ros.ros.camera", reason="needs ROS 2 and the built messages")
    from emodan_ros.bench import node as bench_node

    assert bench_node._size("1280x720") == (1280, 720)
    for bad in ("1280", "x720", "12x7", "1280x720x3", "-5x10"):
        with pytest.raises(Exception, match="WxH"):
            bench_node._size(bad)
    calls: list[tuple] = []
    monkeypatch.setattr(bench_node, "run", lambda *args, **kw: calls.append(args) or {"faces_in_frame": args[0],
                                                                                      "latency_ms": {"p50": 1.0}})
    rows = bench.node_rows("model.pt", 1.0)
    assert len(rows) == len(calls) > 1 and all(args[5] == [] for args in calls)


def test_fer_gets_the_detectors_box_not_ours(fixtures: dict[str, Path]) -> None:
    """fer's crop must not depend on the model it is compared with: the detector's box, not our landmark box."""
    from emodan_ros.model.predictor import Predictor

    photo = cv2.imread(str(fixtures["frames"].parent / "smile.png"))
    detector = make_detector("blaze")
    (box,) = detector.detect(photo)[0][:1]
    x0, y0, x1, y1 = np.clip(np.round(box), 0, [photo.shape[1], photo.shape[0]] * 2).astype(int)

    class RecordingFer:
        classes = ["happiness", "neutral"]

        def __init__(self) -> None:
            self.shapes: list[tuple[int, ...]] = []

        def predict(self, crops: list[np.ndarray]) -> np.ndarray:
            self.shapes += [c.shape for c in crops]
            return np.full((len(crops), 2), 0.5, np.float32)

    fer = RecordingFer()
    sets = bench_accuracy.parse_frame_sets([f"posed={fixtures['frames']}"])
    bench_accuracy.frame_emotion_rows(Predictor.from_checkpoint(str(fixtures["model"])), fer, sets, detector)
    assert fer.shapes == [(y1 - y0, x1 - x0, 3)] * 2  # the two face images; the empty one gets no crop


def _landmark_folder(root: Path, *parts: str) -> Path:
    folder = root.joinpath(*parts)
    folder.mkdir(parents=True)
    for name in ("a.pts", "b.pts", "c.pts"):
        _write_pts(folder / name, np.random.default_rng(0).uniform(10, 50, (68, 2)))
    return folder


def test_trained_files_are_left_out_from_any_working_directory(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A run records its folders as given (relative to where it ran); the bench is run from elsewhere."""
    folder = _landmark_folder(tmp_path / "data", "300w", "afw")
    model = tmp_path / "m.pt"
    recorded = {"landmarks": {"dirs": ["../shared/data/300w/afw"], "holdout_files": ["c.pts"]}}
    save_checkpoint(model, EmotionalDAN(TINY), data=recorded)
    monkeypatch.chdir(tmp_path)  # ../shared/data/300w/afw does not exist from here
    assert bench_accuracy.trained_names(model, [folder]) == {"a.pts", "b.pts"}
    assert bench_accuracy.trained_names(model, [str(folder.relative_to(tmp_path))]) == {"a.pts", "b.pts"}
    other = _landmark_folder(tmp_path / "mine", "afw")  # same folder name, cannot tell: a clear error
    with pytest.raises(ValueError, match="not found from here"):
        bench_accuracy.trained_names(model, [other])
    assert bench_accuracy.trained_names(model, [_landmark_folder(tmp_path, "helen")]) == set()  # another set
