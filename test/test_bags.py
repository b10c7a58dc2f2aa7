"""`emodan bag make / eval`: camera-like bags, offline = `emodan eval`, recorded output + CSV truth,
bad and partial bags, and the live mode through a real emotion_node process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from emodan_ros.io import bag_io
from emodan_ros.bags.evaluate import evaluate_bag
from emodan_ros.bags.make import make_bag
from emodan_ros.bags.scoring import Frame, stability, timing
from emodan_ros.io.messages import DecodedFace as Face
from emodan_ros.io.messages import MessageTypes, state_message
from emodan_ros.faces.classes import FERPLUS_CLASSES
from emodan_ros.evaluation.evaluate import evaluate
from emodan_ros.model.predictor import Predictor

from conftest import needs_ros
from test_evaluate import tiny_checkpoint

START = 1_700_000_000.0


def _dataset(root: Path, size: int = 40) -> Path:
    rng = np.random.default_rng(2)
    for name, count in (("happy", 3), ("sad", 3), ("neutral", 2)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            cv2.imwrite(str(root / name / f"{i}.png"), rng.integers(0, 255, (size, size), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Predictor]:
    root = tmp_path_factory.mktemp("bags")
    model = tiny_checkpoint(root / "m.pt")
    return _dataset(root / "data"), model, Predictor.from_checkpoint(model, device="cpu", precision="fp32")


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(path)))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_made_bag_looks_like_a_camera_recording(setup, tmp_path: Path, storage: str) -> None:
    data, _, _ = setup
    info = make_bag(str(data), "imagefolder", str(tmp_path / "b"), storage=storage, rate=20.0, frame_id="cam",
                    frame_size=96, face_fraction=0.5, start=START)
    assert info["frames"] == 8 and info["emotion_truths"] == 8
    topics = bag_io.bag_topics(tmp_path / "b")
    assert topics == {"/camera/image_raw": "sensor_msgs/msg/Image",
                      "/ground_truth/emotions": "emodan_ros/msg/EmotionStateArray"}
    images, truths = [], {}
    for topic, t, msg in bag_io.read_messages(tmp_path / "b"):
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if topic == "/camera/image_raw":
            assert (msg.width, msg.height, msg.encoding, msg.header.frame_id) == (96, 96, "bgr8", "cam")
            assert t == stamp
            images.append(stamp)
        else:
            truths[stamp] = msg.states[0].emotion
    assert images == sorted(images) and np.allclose(np.diff(images), 50_000_000)
    assert images[0] == int(START * 1e9) and set(truths) == set(images)
    assert sorted(truths.values()) == ["happiness"] * 3 + ["neutral"] * 2 + ["sadness"] * 3


def test_compressed_bag(setup, tmp_path: Path) -> None:
    data, _, _ = setup
    make_bag(str(data), "imagefolder", str(tmp_path / "b"), compressed="png", limit=2)
    assert bag_io.bag_topics(tmp_path / "b")["/camera/image_raw/compressed"] == "sensor_msgs/msg/CompressedImage"


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_offline_bag_eval_matches_emodan_eval_on_the_same_images(setup, tmp_path: Path, storage: str) -> None:
    data, _, predictor = setup
    make_bag(str(data), "imagefolder", str(tmp_path / "b"), storage=storage, start=START)
    direct = evaluate(None, str(data), "imagefolder", str(tmp_path / "e"), "frame", detector="full",
                      predictor=predictor, saliency_per_class=0)
    bag = evaluate_bag(str(tmp_path / "b"), str(tmp_path / "o"), "offline", detector="full", predictor=predictor,
                       pipeline_settings={"redetect_every": 1, "smoothing": 0.0}, saliency_per_class=1)
    for key in ("n", "accuracy", "macro_f1", "detection_rate", "confusion", "per_class"):
        assert bag[key] == direct[key], key
    a, b = _rows(tmp_path / "e" / "predictions.csv"), _rows(tmp_path / "o" / "predictions.csv")
    pa = np.array([[float(r[f"p_{c}"]) for c in FERPLUS_CLASSES] for r in a])
    pb = np.array([[float(r[f"p_{c}"]) for c in FERPLUS_CLASSES] for r in b])
    assert np.array_equal(pa, pb)  # same images, same order, same numbers
    assert [r["true_label"] for r in a] == [r["true_label"] for r in b]
    report = (tmp_path / "o" / "report.md").read_text()
    assert "timeline.png" in report and (tmp_path / "o" / "timeline.png").is_file()
    assert bag["stability"]["faces_tracked"] == 1 and bag["messages_read"] == bag["messages_in_bag"] == 16


def _output_bag(path: Path, probs_per_frame: list[list[float]], storage: str = "mcap") -> list[int]:
    """A bag as `ros2 bag record` of the node would give: /emotions only, received 30 ms after each stamp."""
    types = bag_io.typestore().types
    stamps = [int(START * 1e9) + k * 100_000_000 for k in range(len(probs_per_frame))]
    with bag_io.BagWriter(path, storage) as bag:
        for stamp, probs in zip(stamps, probs_per_frame):
            header = types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="c")
            state = state_message(MessageTypes.from_typestore(types), header, 7, np.array(probs), FERPLUS_CLASSES,
                                  smoothed=True)
            bag.write("/emotions", types["emodan_ros/msg/EmotionStateArray"](header=header, states=[state]),
                      stamp + 30_000_000)
    return stamps


def test_recorded_bag_scored_against_a_csv(tmp_path: Path) -> None:
    eye = np.eye(8).tolist()
    # predicted: neutral, neutral, happiness, neutral, sadness  (3 flips over 0.4 s)
    stamps = _output_bag(tmp_path / "rec", [eye[0], eye[0], eye[1], eye[0], eye[3]])
    truth = tmp_path / "truth.csv"
    labels = ["neutral", "happy", "happy", "neutral", "angry"]
    truth.write_text("stamp,label\n" + "".join(f"{s / 1e9:.3f},{lab}\n" for s, lab in zip(stamps, labels)))
    m = evaluate_bag(str(tmp_path / "rec"), str(tmp_path / "o"), "recorded", truth_csv=str(truth))
    assert m["n"] == 5 and m["accuracy"] == pytest.approx(3 / 5)
    assert m["stability"]["label_flips"] == 3
    assert m["stability"]["label_flips_per_second"] == pytest.approx(3 / 0.4)
    assert m["stability"]["truth_flips_per_second"] == pytest.approx(3 / 0.4)  # happy->neutral->angry after neutral
    assert m["timing"]["latency_ms"]["p50"] == pytest.approx(30.0)
    assert m["confusion"]["matrix"][4][3] == 1  # anger taken for sadness


def test_stability_and_timing_on_known_frames() -> None:
    p = np.eye(3)
    frames = [Frame(0, [Face(1, p[0], None, None), Face(2, p[1], None, None)], 10_000_000),
              Frame(500_000_000, [Face(1, p[1], None, None), Face(2, p[1], None, None)], 520_000_000),
              Frame(1_000_000_000, [Face(1, p[0], None, None)], 1_040_000_000)]
    s = stability(frames, ("a", "b", "c"))
    assert s["label_flips"] == 2 and s["tracked_seconds"] == pytest.approx(1.5)
    assert s["per_face"]["1"]["flips_per_second"] == pytest.approx(2.0)
    t = timing(frames, [0, 250_000_000, 500_000_000, 1_000_000_000])
    assert t["dropped_frames"] == 1 and t["dropped_ratio"] == 0.25
    assert t["latency_ms"]["max"] == pytest.approx(40.0) and t["latency_ms"]["p50"] == pytest.approx(20.0)


def _storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def test_truncated_mcap_is_scored_on_what_could_be_read(setup, tmp_path: Path) -> None:
    data, _, predictor = setup
    make_bag(str(data), "imagefolder", str(tmp_path / "b"), start=START)
    file = _storage_file(tmp_path / "b")
    file.write_bytes(file.read_bytes()[: int(file.stat().st_size * 0.6)])
    m = evaluate_bag(str(tmp_path / "b"), str(tmp_path / "o"), "offline", detector="full", predictor=predictor,
                     saliency_per_class=0)
    assert 0 < m["messages_read"] < m["messages_in_bag"] == 16
    assert 0 < m["n_images"] < 8
    assert "only partly readable" in (tmp_path / "o" / "report.md").read_text()


def test_bad_bags_give_clear_errors(setup, tmp_path: Path) -> None:
    data, _, predictor = setup
    with pytest.raises(bag_io.BagError, match="does not exist"):
        evaluate_bag(str(tmp_path / "none"), str(tmp_path / "o"), predictor=predictor)
    (tmp_path / "plain").mkdir()
    with pytest.raises(bag_io.BagError, match="not a rosbag2"):
        evaluate_bag(str(tmp_path / "plain"), str(tmp_path / "o"), predictor=predictor)
    make_bag(str(data), "imagefolder", str(tmp_path / "sq"), storage="sqlite3", limit=3)
    with pytest.raises(bag_io.BagError, match="no image topic '/nope'"):
        evaluate_bag(str(tmp_path / "sq"), str(tmp_path / "o"), image_topic="/nope", predictor=predictor)
    with pytest.raises(bag_io.BagError, match="no node emotions topic"):
        evaluate_bag(str(tmp_path / "sq"), str(tmp_path / "o"), "recorded")
    file = _storage_file(tmp_path / "sq")
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 3])
    with pytest.raises(bag_io.BagError, match="cannot open bag"):
        evaluate_bag(str(tmp_path / "sq"), str(tmp_path / "o"), predictor=predictor)


def test_unknown_message_type_is_named(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("int32 x", "foreign_pkg/msg/Thing"))
    with Writer(tmp_path / "b", version=8) as writer:
        conn = writer.add_connection("/thing", "foreign_pkg/msg/Thing", typestore=store)
        writer.write(conn, 1, bytes(store.serialize_cdr(store.types["foreign_pkg/msg/Thing"](x=1),
                                                        "foreign_pkg/msg/Thing")))
    with pytest.raises(bag_io.BagError, match="no image topic"):
        evaluate_bag(str(tmp_path / "b"), str(tmp_path / "o"), predictor=object())


@needs_ros
def test_live_mode_end_to_end(tmp_path: Path) -> None:
    from skimage import data as skdata

    astronaut = cv2.resize(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR), (256, 256))
    for name in ("happy", "neutral"):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(tmp_path / "d" / name / f"{i}.png"), np.roll(astronaut, 3 * i, axis=1))
    model = tiny_checkpoint(tmp_path / "m.pt")
    make_bag(str(tmp_path / "d"), "imagefolder", str(tmp_path / "b"), rate=4.0, start=START)
    from emodan_ros.cli import main

    assert main(["bag", "eval", "--bag", str(tmp_path / "b"), "--out", str(tmp_path / "o"), "--mode", "live",
                 "--model", str(model), "--precision", "fp32", "--warmup-frames", "1",
                 "--drain-timeout", "3"]) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    t = m["timing"]
    assert t["frames_in"] == 4 and 1 <= t["frames_out"] <= 4
    assert 0 < t["latency_ms"]["p50"] < 5000 and t["dropped_ratio"] == 1 - t["frames_out"] / 4
    assert m["n_images"] == 4 and m["detection_rate"] == 1.0  # Haar finds the astronaut in every answered frame
    assert "emotion_node ready" in (tmp_path / "o" / "node.log").read_text()
    again = evaluate_bag(str(tmp_path / "o" / "output_bag"), str(tmp_path / "r"), "recorded")
    assert again["n"] == m["n"] and again["accuracy"] == m["accuracy"]
