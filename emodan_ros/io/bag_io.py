"""rosbag2 bags (mcap and sqlite3) written and read with `rosbags`, with or without ROS.

There is no rosbag2_py outside a ROS install, so bags go through the pure-Python `rosbags`
library: it writes the standard layout (metadata.yaml + storage files) that
`ros2 bag info/play` read. This module adds what the project needs on top:

- a typestore (ROS 2 Kilted definitions) with this package's msg/*.msg registered at run
  time, found in the installed share/emodan_ros/msg or the source tree;
- `BagWriter`, which takes rosbags messages or CDR bytes;
- `read_messages`, yielding rosbags messages, with every failure (missing bag, corrupt
  or truncated storage, unknown message type) raised as one `BagError`;
- no rclpy: moving messages between rclpy and rosbags is `emodan_ros.ros.bag_bridge`'s job.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Iterator

from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

__all__ = [
    "BagError",
    "BagWriter",
    "STORAGE_FORMATS",
    "read_messages",
    "bag_topics",
    "BagInfo",
    "BagTopic",
    "bag_info",
    "read_raw",
    "typestore",
    "msg_dir",
    "msgtype_of",
]

PACKAGE = "emodan_ros"
STORAGE_FORMATS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# rosbag2 metadata version 8 (Iron's format; rosbags writes 8 or 9). Jazzy and Kilted write 9 and
# read 1..9; Humble writes 5 and parses any version, but reads `offered_qos_profiles` as a YAML
# string, which is how 8 stores it (9 stores a list: Humble fails with "bad conversion").
# So 8 is the one version every supported distro's `ros2 bag` reads.
_BAG_VERSION = 8


class BagError(RuntimeError):
    """A bag that cannot be written or read (the text names the bag and the reason)."""


def msg_dir() -> Path:
    """This package's msg/ directory: the installed share dir, else the source tree."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            installed = Path(get_package_share_directory(PACKAGE)) / "msg"
            if installed.is_dir():
                return installed
        except (PackageNotFoundError, ValueError):
            pass
    except ImportError:
        pass
    source = Path(__file__).resolve().parent.parent / "msg"
    if source.is_dir():
        return source
    raise BagError(
        f"cannot find the {PACKAGE} msg/ directory (not installed with colcon and no source "
        f"tree at {source}); bags with {PACKAGE} messages cannot be written or read"
    )


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """ROS 2 Kilted message definitions plus this package's messages (built once)."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for path in sorted(msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


def msgtype_of(msg: Any) -> str:
    """'pkg/msg/Name' of an rclpy or rosbags message instance."""
    if dataclasses.is_dataclass(msg) and hasattr(msg, "__msgtype__"):
        return str(msg.__msgtype__)
    module = type(msg).__module__.split(".")
    if len(module) >= 2 and module[1] in ("msg", "srv", "action"):
        return f"{module[0]}/{module[1]}/{type(msg).__name__}"
    raise TypeError(f"{type(msg).__name__} is not a ROS message (rclpy or rosbags)")


def _is_rosbags(msg: Any) -> bool:
    return dataclasses.is_dataclass(msg) and hasattr(msg, "__msgtype__")


def _serialize(msg: Any, msgtype: str) -> bytes:
    """CDR bytes of a rosbags message (or bytes passed through)."""
    if isinstance(msg, (bytes, bytearray, memoryview)):
        return bytes(msg)
    if _is_rosbags(msg):
        return bytes(typestore().serialize_cdr(msg, msgtype))
    raise TypeError(f"a {type(msg).__name__} is no rosbags message: convert rclpy messages with "
                    "emodan_ros.ros.bag_bridge.to_rosbags (or pass their CDR bytes)")


class BagWriter:
    """Write a new rosbag2 bag; use as a context manager.

        with BagWriter("out/run1", storage="mcap") as bag:
            bag.write("/camera/image_raw", image_msg, stamp_ns)

    Topics are added on first write with the message's type, or explicitly with
    `add_topic` (needed for raw CDR bytes). `storage` is 'mcap' or 'sqlite3'.
    """

    def __init__(self, path: str | os.PathLike[str], storage: str = "mcap") -> None:
        if storage not in STORAGE_FORMATS:
            raise BagError(f"storage must be one of {sorted(STORAGE_FORMATS)}, not {storage!r}")
        self.path = Path(path)
        self.storage = storage
        if self.path.exists():
            raise BagError(f"bag {self.path} already exists; rosbag2 bags are never overwritten")
        if not self.path.parent.is_dir():
            raise BagError(f"cannot create bag {self.path}: directory {self.path.parent} does not exist")
        self._writer = Writer(self.path, version=_BAG_VERSION, storage_plugin=STORAGE_FORMATS[storage])
        self._connections: dict[str, Any] = {}
        self._open = False

    def __enter__(self) -> "BagWriter":
        try:
            self._writer.open()
        except Exception as exc:
            raise BagError(f"cannot create bag {self.path}: {exc}") from exc
        self._open = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Finish the bag (writes metadata.yaml); safe to call twice."""
        if self._open:
            self._open = False
            self._writer.close()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare `topic` with ROS type `msgtype` ('pkg/msg/Name')."""
        if not self._open:
            raise BagError(f"bag {self.path} is not open (use BagWriter as a context manager)")
        if topic in self._connections:
            known = self._connections[topic].msgtype
            if known != msgtype:
                raise BagError(f"topic {topic} already has type {known}, not {msgtype}")
            return
        if msgtype not in typestore().fielddefs:
            raise BagError(f"unknown message type {msgtype!r} for topic {topic}")
        self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore())

    def write(self, topic: str, msg: Any, timestamp_ns: int) -> None:
        """Append one message (rosbags, or CDR bytes for an added topic) at
        `timestamp_ns` (receive time, ns since the epoch)."""
        if topic not in self._connections:
            if isinstance(msg, (bytes, bytearray, memoryview)):
                raise BagError(f"topic {topic}: add_topic() before writing raw bytes")
            self.add_topic(topic, msgtype_of(msg))
        connection = self._connections[topic]
        if not isinstance(msg, (bytes, bytearray, memoryview)) and msgtype_of(msg) != connection.msgtype:
            raise BagError(f"topic {topic} has type {connection.msgtype}, got a {msgtype_of(msg)}")
        self._writer.write(connection, int(timestamp_ns), _serialize(msg, connection.msgtype))


def _open_reader(bag_path: Path) -> Reader:
    if not bag_path.exists():
        raise BagError(f"bag {bag_path} does not exist")
    if not (bag_path / "metadata.yaml").is_file():
        raise BagError(f"{bag_path} is not a rosbag2 bag (no metadata.yaml)")
    try:
        reader = Reader(bag_path)
        reader.open()
    except Exception as exc:
        raise BagError(f"cannot open bag {bag_path}: {type(exc).__name__}: {exc}") from exc
    return reader


def _ensure_types(reader: Reader, bag_path: Path) -> None:
    """Register message types the bag carries definitions for; fail on unknown ones."""
    store = typestore()
    for conn in reader.connections:
        if conn.msgtype in store.fielddefs:
            continue
        msgdef = getattr(conn, "msgdef", None)
        text = getattr(msgdef, "data", None) if msgdef is not None else None
        if text:
            try:
                store.register(get_types_from_msg(text, conn.msgtype))
                continue
            except Exception as exc:
                raise BagError(
                    f"bag {bag_path}: cannot parse the definition of {conn.msgtype} on {conn.topic}: {exc}"
                ) from exc
        raise BagError(
            f"bag {bag_path}: unknown message type {conn.msgtype} on topic {conn.topic} "
            "(not a ROS 2 Kilted or emodan_ros type and the bag holds no definition)"
        )


def bag_topics(bag_path: str | os.PathLike[str]) -> dict[str, str]:
    """{topic: msgtype} of a bag."""
    path = Path(bag_path)
    reader = _open_reader(path)
    try:
        return {conn.topic: conn.msgtype for conn in reader.connections}
    finally:
        reader.close()


@dataclasses.dataclass(frozen=True)
class BagTopic:
    """One topic of a bag: type, message count and the QoS profiles its publishers offered
    (rosbags ``Qos`` tuples from metadata.yaml; empty when the recorder stored none)."""

    name: str
    msgtype: str
    count: int
    offered_qos: tuple[Any, ...] = ()


@dataclasses.dataclass(frozen=True)
class BagInfo:
    """What a player needs before the first message: time span and topics."""

    path: Path
    start_ns: int
    end_ns: int
    topics: dict[str, BagTopic]

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self.topics.values())


def bag_info(bag_path: str | os.PathLike[str]) -> BagInfo:
    """Time span, topics, counts and offered QoS of a bag (BagError when it cannot be opened)."""
    path = Path(bag_path)
    reader = _open_reader(path)
    try:
        topics: dict[str, BagTopic] = {}
        for conn in reader.connections:
            qos = tuple(getattr(conn.ext, "offered_qos_profiles", None) or ())
            known = topics.get(conn.topic)
            if known is not None:  # one topic recorded from several publishers
                conn_qos = known.offered_qos + qos
                topics[conn.topic] = dataclasses.replace(known, count=known.count + conn.msgcount,
                                                         offered_qos=conn_qos)
            else:
                topics[conn.topic] = BagTopic(conn.topic, conn.msgtype, conn.msgcount, qos)
        empty = reader.message_count == 0
        return BagInfo(path, 0 if empty else reader.start_time, 0 if empty else reader.end_time, topics)
    finally:
        reader.close()


def _raw_messages(reader: Reader, path: Path, topics: Iterable[str] | None,
                  start_ns: int | None = None) -> Iterator[tuple[Any, int, bytes]]:
    """(connection, timestamp, CDR bytes) in time order; any failure midway is a BagError."""
    wanted = set(topics) if topics is not None else None
    if wanted is not None:
        missing = wanted - {c.topic for c in reader.connections}
        if missing:
            raise BagError(f"bag {path} has no topic(s) {sorted(missing)}")
    connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
    messages = reader.messages(connections=connections, start=start_ns)
    while True:
        try:
            item = next(messages)
        except StopIteration:
            return
        except BagError:
            raise
        except Exception as exc:
            raise BagError(f"bag {path} is corrupt or truncated: {type(exc).__name__}: {exc}") from exc
        yield item


def read_raw(
    bag_path: str | os.PathLike[str], topics: Iterable[str] | None = None, start_ns: int | None = None
) -> Iterator[tuple[str, int, bytes]]:
    """Yield (topic, timestamp_ns, CDR bytes) in time order from ``start_ns`` on, without decoding:
    what a player republishes as recorded. Errors as in :func:`read_messages`."""
    path = Path(bag_path)
    reader = _open_reader(path)
    try:
        for conn, timestamp, raw in _raw_messages(reader, path, topics, start_ns):
            yield conn.topic, int(timestamp), raw
    finally:
        reader.close()


def read_messages(
    bag_path: str | os.PathLike[str], topics: Iterable[str] | None = None
) -> Iterator[tuple[str, int, Any]]:
    """Yield (topic, timestamp_ns, rosbags message) in time order, optionally only `topics`.

    Raises BagError for a missing or corrupt bag, a truncated storage file and message
    types without a definition, also when that is found midway through the file.
    """
    path = Path(bag_path)
    reader = _open_reader(path)
    try:
        _ensure_types(reader, path)
        store = typestore()
        for conn, timestamp, raw in _raw_messages(reader, path, topics):
            try:
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:
                raise BagError(
                    f"bag {path}: cannot deserialize a {conn.msgtype} on {conn.topic} at {timestamp}: {exc}"
                ) from exc
            yield conn.topic, int(timestamp), msg
    finally:
        reader.close()
