"""rosbag2 bags in mcap and sqlite3: written from rclpy and rosbags messages, read back
identically, standard metadata.yaml, and every broken bag raises BagError."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from conftest import needs_ros
from emodan_ros.io import bag_io
from emodan_ros.io.bag_io import BagError, BagWriter, read_messages
from emodan_ros.io.messages import MessageTypes, face_message, state_message
from emodan_ros.io.image_codec import compress_image, decode_image, encode_image

STORAGES = ["mcap", "sqlite3"]
FERPLUS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


def rb(msgtype: str):
    return bag_io.typestore().types[msgtype]


def _rb_header(sec: int):
    return rb("std_msgs/msg/Header")(stamp=rb("builtin_interfaces/msg/Time")(sec=sec, nanosec=5), frame_id="cam")


def rosbags_messages() -> list[tuple[str, int, object]]:
    """(topic, t_ns, rosbags message) covering images and all four package messages."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    types = MessageTypes.from_typestore(bag_io.typestore().types)
    face = face_message(types, _rb_header(1), 7, np.array([1.0, 2.0, 31.0, 42.0]), rng.uniform(0, 32, (68, 2)),
                        32, 24, score=0.9, quality=0.8)
    probs = rng.dirichlet(np.ones(8)).astype(np.float32)
    state = state_message(types, _rb_header(1), 7, probs, FERPLUS, smoothed=True)
    return [
        ("/camera/image_raw", 1_000, encode_image(frame, "bgr8", rb("sensor_msgs/msg/Image"), header=_rb_header(1))),
        ("/camera/image_raw/compressed", 1_500, compress_image(frame, "png", rb("sensor_msgs/msg/CompressedImage"))),
        ("/emodan/face", 2_000, face),
        ("/emodan/faces", 3_000, rb("emodan_ros/msg/FaceLandmarksArray")(header=_rb_header(1), faces=[face, face])),
        ("/emodan/faces", 4_000, rb("emodan_ros/msg/FaceLandmarksArray")(header=_rb_header(2), faces=[])),
        ("/emodan/emotion", 5_000, state),
        ("/emodan/emotions", 6_000, rb("emodan_ros/msg/EmotionStateArray")(header=_rb_header(1), states=[state])),
    ]


def _cdr(msg: object) -> bytes:
    return bytes(bag_io.typestore().serialize_cdr(msg, msg.__msgtype__))


def _write(path: Path, storage: str, messages) -> Path:
    with BagWriter(path, storage=storage) as bag:
        for topic, t, msg in messages:
            bag.write(topic, msg, t)
    return path


@pytest.mark.parametrize("storage", STORAGES)
def test_rosbags_messages_read_back_identically(tmp_path: Path, storage: str) -> None:
    sent = rosbags_messages()
    bag = _write(tmp_path / "bag", storage, sent)
    got = list(read_messages(bag))
    assert [(t, ts) for t, ts, _ in got] == [(t, ts) for t, ts, _ in sent]
    assert [_cdr(m) for _, _, m in got] == [_cdr(m) for _, _, m in sent]
    image = got[0][2]
    np.testing.assert_array_equal(decode_image(image), decode_image(sent[0][2]))


def test_mcap_and_sqlite3_hold_the_same_messages(tmp_path: Path) -> None:
    sent = rosbags_messages()
    a = list(read_messages(_write(tmp_path / "a", "mcap", sent)))
    b = list(read_messages(_write(tmp_path / "b", "sqlite3", sent)))
    assert [(t, ts, _cdr(m)) for t, ts, m in a] == [(t, ts, _cdr(m)) for t, ts, m in b]


@needs_ros
@pytest.mark.parametrize("storage", STORAGES)
def test_rclpy_messages_roundtrip(tmp_path: Path, storage: str) -> None:
    from emodan_ros.msg import EmotionState, EmotionStateArray, FaceLandmarks, FaceLandmarksArray
    from emodan_ros.ros.bag_bridge import to_rclpy, to_rosbags
    from sensor_msgs.msg import Image

    frame = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    face = FaceLandmarks(face_id=3, landmarks=np.arange(136, dtype=np.float32), quality=0.25)
    state = EmotionState(face_id=3, emotion="fear", probability=1.0, class_names=["fear"], probabilities=[1.0])
    sent = [
        ("/img", 10, encode_image(frame, "rgb8", Image)),
        ("/faces", 20, FaceLandmarksArray(faces=[face])),
        ("/faces", 30, FaceLandmarksArray()),
        ("/emotions", 40, EmotionStateArray(states=[state])),
    ]
    bag = _write(tmp_path / "bag", storage, [(topic, stamp, to_rosbags(m)) for topic, stamp, m in sent])
    got = list(read_messages(bag))
    assert [to_rclpy(m) for _, _, m in got] == [m for _, _, m in sent]
    np.testing.assert_array_equal(decode_image(got[0][2]), frame)
    assert to_rosbags(sent[1][2]).faces[0].face_id == 3


@pytest.mark.parametrize("storage", STORAGES)
def test_metadata_is_standard_rosbag2(tmp_path: Path, storage: str) -> None:
    bag = _write(tmp_path / "bag", storage, rosbags_messages())
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8
    assert info["storage_identifier"] == storage
    assert info["message_count"] == len(rosbags_messages())
    for rel in info["relative_file_paths"]:
        assert (bag / rel).is_file()
    types = {t["topic_metadata"]["name"]: t["topic_metadata"]["type"] for t in info["topics_with_message_count"]}
    assert types["/emodan/faces"] == "emodan_ros/msg/FaceLandmarksArray"
    assert types["/camera/image_raw"] == "sensor_msgs/msg/Image"
    assert all(t["topic_metadata"]["serialization_format"] == "cdr" for t in info["topics_with_message_count"])


def test_topic_filter_and_topics(tmp_path: Path) -> None:
    bag = _write(tmp_path / "bag", "mcap", rosbags_messages())
    assert [t for t, _, _ in read_messages(bag, topics=["/emodan/faces"])] == ["/emodan/faces"] * 2
    assert bag_io.bag_topics(bag)["/emodan/emotions"] == "emodan_ros/msg/EmotionStateArray"
    with pytest.raises(BagError, match="no topic"):
        list(read_messages(bag, topics=["/nope"]))


def test_package_messages_registered_from_msg_dir() -> None:
    assert (bag_io.msg_dir() / "FaceLandmarks.msg").is_file()
    fields = dict(bag_io.typestore().fielddefs["emodan_ros/msg/FaceLandmarks"][1])
    assert set(fields) >= {"landmarks", "face_id", "quality", "image_width"}


# --------------------------------------------------------------------------- broken bags

def test_missing_bag(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="does not exist"):
        list(read_messages(tmp_path / "nothing"))


def test_directory_without_metadata(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(BagError, match="no metadata.yaml"):
        list(read_messages(tmp_path / "x"))


def test_corrupt_metadata(tmp_path: Path) -> None:
    bag = _write(tmp_path / "bag", "mcap", rosbags_messages())
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, mapping")
    with pytest.raises(BagError, match="cannot open"):
        list(read_messages(bag))


def _storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


@pytest.mark.parametrize("storage", STORAGES)
def test_truncated_storage_file(tmp_path: Path, storage: str) -> None:
    bag = _write(tmp_path / "bag", storage, rosbags_messages())
    data = _storage_file(bag).read_bytes()
    _storage_file(bag).write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError):
        list(read_messages(bag))


@pytest.mark.parametrize("storage", STORAGES)
def test_garbage_storage_file(tmp_path: Path, storage: str) -> None:
    bag = _write(tmp_path / "bag", storage, rosbags_messages())
    path = _storage_file(bag)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())
    with pytest.raises(BagError):
        list(read_messages(bag))


@pytest.mark.parametrize("storage", STORAGES)
def test_unknown_type_without_definition(tmp_path: Path, storage: str) -> None:
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("int32 x", "foo_msgs/msg/Bar"))
    bar = store.types["foo_msgs/msg/Bar"]
    writer = Writer(tmp_path / "bag", version=8, storage_plugin=StoragePlugin[storage.upper()])
    writer.open()
    conn = writer.add_connection("/bar", "foo_msgs/msg/Bar", msgdef="", rihs01="RIHS01_" + "0" * 64)
    writer.write(conn, 1, bytes(store.serialize_cdr(bar(x=5), "foo_msgs/msg/Bar")))
    writer.close()
    with pytest.raises(BagError, match="unknown message type foo_msgs/msg/Bar"):
        list(read_messages(tmp_path / "bag"))


def test_unknown_type_with_definition_in_bag_is_read(tmp_path: Path) -> None:
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg("int32 x", "baz_msgs/msg/Qux"))
    writer = Writer(tmp_path / "bag", version=8, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    conn = writer.add_connection("/qux", "baz_msgs/msg/Qux", typestore=store)
    writer.write(conn, 1, bytes(store.serialize_cdr(store.types["baz_msgs/msg/Qux"](x=42), "baz_msgs/msg/Qux")))
    writer.close()
    [(topic, _, msg)] = list(read_messages(tmp_path / "bag"))
    assert (topic, msg.x) == ("/qux", 42)


def test_writer_errors(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="storage must be"):
        BagWriter(tmp_path / "a", storage="rosbag1")
    with pytest.raises(BagError, match="does not exist"):
        BagWriter(tmp_path / "missing" / "bag")
    _write(tmp_path / "b", "mcap", rosbags_messages()[:1])
    with pytest.raises(BagError, match="already exists"):
        BagWriter(tmp_path / "b")
    with BagWriter(tmp_path / "c") as bag:
        bag.write("/img", rosbags_messages()[0][2], 1)
        with pytest.raises(BagError, match="has type sensor_msgs/msg/Image"):
            bag.write("/img", rosbags_messages()[2][2], 2)
        with pytest.raises(BagError, match="unknown message type"):
            bag.add_topic("/x", "nope_msgs/msg/Nope")
        with pytest.raises(BagError, match="add_topic"):
            bag.write("/raw", b"\x00\x01\x00\x00", 3)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_metadata_claiming_more_messages_than_an_intact_file_says_which_disagree(tmp_path: Path, storage: str) -> None:
    import re

    import numpy as np

    from emodan_ros.io.bag_io import BagWriter, typestore
    from emodan_ros.io.bag_salvage import ReadStatus, iter_bag
    from emodan_ros.io.image_codec import encode_image

    image_cls = typestore().types["sensor_msgs/msg/Image"]
    bag = tmp_path / "bag"
    with BagWriter(bag, storage=storage) as writer:
        for k in range(5):
            writer.write("/camera/image_raw", encode_image(np.zeros((8, 8, 3), np.uint8), "bgr8", image_cls), k * 10**8)
    meta = bag / "metadata.yaml"
    meta.write_text(re.sub(r"message_count: 5\b", "message_count: 999999", meta.read_text()))
    status = ReadStatus()
    assert sum(1 for _ in iter_bag(bag, {"/camera/image_raw": "sensor_msgs/msg/Image"}, status)) == 5
    note = status.note()
    assert "metadata.yaml and the storage file disagree" in note and "999999" in note and "holds 5" in note
    assert "damaged" not in note
