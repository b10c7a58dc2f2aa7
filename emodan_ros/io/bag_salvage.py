"""Reading damaged bags: every message up to the damage, and a count of what was read.

A recording cut by a crash or a full disk is still evidence. When rosbags cannot open the storage
file, mcap records or sqlite3 rows are read raw from the start until the damage, and
:class:`ReadStatus` says how much of what ``metadata.yaml`` promised was read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from emodan_ros.io.bag_io import BagError, read_messages, typestore


@dataclass
class ReadStatus:
    """How much of a bag was read: messages read vs the count in metadata.yaml, and why it stopped."""

    read: int = 0
    expected: int | None = None
    skipped: int = 0
    error: str = ""
    salvaged: bool = False

    def note(self) -> str:
        if not self.error and not self.skipped:
            if self.expected is not None and self.read != self.expected:
                return (f"metadata.yaml and the storage file disagree: metadata.yaml counts {self.expected} "
                        f"messages of the scored topics, the storage file holds {self.read} and was read to "
                        "its end without error (metadata.yaml is stale or edited; the file is intact)")
            return ""
        share = f"{self.read} of {self.expected}" if self.expected else f"{self.read}"
        text = f"bag only partly readable: {share} messages of the scored topics were read"
        if self.skipped:
            text += f", {self.skipped} undecodable messages skipped"
        if self.salvaged:
            text += f"; the storage file is damaged ({self.error}) and was read raw up to the damage"
        elif self.error:
            text += f"; reading stopped: {self.error}"
        return text


def bag_metadata(path: Path) -> dict[str, tuple[str, int]]:
    """{topic: (type, message count)} from metadata.yaml (readable even when the storage file is not)."""
    import yaml

    meta_file = Path(path) / "metadata.yaml"
    if not Path(path).exists():
        raise BagError(f"bag {path} does not exist")
    if not meta_file.is_file():
        raise BagError(f"{path} is not a rosbag2 bag (no metadata.yaml)")
    try:
        info = yaml.safe_load(meta_file.read_text())["rosbag2_bagfile_information"]
        return {t["topic_metadata"]["name"]: (t["topic_metadata"]["type"], int(t.get("message_count", 0)))
                for t in info.get("topics_with_message_count", [])}
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise BagError(f"bag {path}: unreadable metadata.yaml: {exc}") from exc


def _salvage_mcap(path: Path, wanted: dict[str, str]) -> Iterator[tuple[str, int, bytes]]:
    """Raw messages of ``wanted`` topics from the start of an mcap file up to where it breaks."""
    from rosbags.rosbag2.storage_mcap import DECOMPRESSORS

    files = sorted(path.glob("*.mcap"))
    for file in files:
        data = file.read_bytes()
        channels: dict[int, str] = {}
        yield from _mcap_records(data[8:], channels, wanted, DECOMPRESSORS)


def _mcap_records(data: bytes, channels: dict[int, str], wanted: dict[str, str],
                  decompressors: dict[str, Callable[[bytes, int], bytes]]) -> Iterator[tuple[str, int, bytes]]:
    pos = 0
    while pos + 9 <= len(data):
        op = data[pos]
        (length,) = struct.unpack_from("<Q", data, pos + 1)
        body = data[pos + 9:pos + 9 + length]
        truncated = len(body) < length
        if truncated and op != 0x06:
            return
        pos += 9 + length
        if op == 0x04:  # channel: id u16, schema u16, topic string
            channel_id, _, topic_len = struct.unpack_from("<HHI", body)
            channels[channel_id] = body[8:8 + topic_len].decode()
        elif op == 0x05:  # message: channel u16, sequence u32, log_time u64, publish_time u64, data
            channel_id, _, log_time, _ = struct.unpack_from("<HIQQ", body)
            topic = channels.get(channel_id)
            if topic in wanted:
                yield topic, log_time, body[22:]
        elif op == 0x06:  # chunk: start u64, end u64, size u64, crc u32, compression string, records
            size = struct.unpack_from("<Q", body, 16)[0]
            (clen,) = struct.unpack_from("<I", body, 28)
            compression = body[32:32 + clen].decode()
            records = body[32 + clen + 8:]
            if truncated and compression:
                return  # a cut compressed chunk cannot be decoded
            if compression not in decompressors:
                return
            inner = records if truncated else decompressors[compression](records, size)
            yield from _mcap_records(inner, channels, wanted, decompressors)
            if truncated:
                return
        elif op == 0x02:  # footer: data section over
            return


def _salvage_sqlite(path: Path, wanted: dict[str, str]) -> Iterator[tuple[str, int, bytes]]:
    """Raw messages of ``wanted`` topics row by row until the database breaks."""
    import sqlite3

    for file in sorted(path.glob("*.db3")):
        connection = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        try:
            topics = {tid: name for tid, name in connection.execute("SELECT id, name FROM topics")}
            last = 0
            while True:
                rows = connection.execute(
                    "SELECT id, topic_id, timestamp, data FROM messages WHERE id > ? ORDER BY id LIMIT 256",
                    (last,)).fetchall()
                if not rows:
                    break
                for row_id, topic_id, stamp, blob in rows:
                    last = row_id
                    if topics.get(topic_id) in wanted:
                        yield topics[topic_id], int(stamp), bytes(blob)
        except sqlite3.DatabaseError:
            return
        finally:
            connection.close()


def iter_bag(path: str | Path, topics: dict[str, str], status: ReadStatus) -> Iterator[tuple[str, int, Any]]:
    """(topic, receive ns, rosbags message) of ``topics`` ({topic: type}); never raises after the first message.

    A storage file that cannot be opened (truncated mcap, damaged sqlite3) is read raw from its start
    up to the damage; a message that fails to decode is skipped and counted.
    """
    path = Path(path)
    meta = bag_metadata(path)
    status.expected = sum(meta[t][1] for t in topics if t in meta) or None
    try:
        for item in read_messages(path, list(topics)):
            status.read += 1
            yield item
        return
    except BagError as exc:
        if status.read:
            status.error = str(exc)
            return
        if "cannot open bag" not in str(exc):
            raise
        status.error = str(exc)
    store = typestore()
    unknown = [f"{t} ({m})" for t, m in topics.items() if m not in store.fielddefs]
    if unknown:
        raise BagError(f"bag {path}: unknown message types {unknown}")
    salvage = _salvage_mcap if any(path.glob("*.mcap")) else _salvage_sqlite
    status.salvaged = True
    for topic, stamp, raw in salvage(path, topics):
        try:
            msg = store.deserialize_cdr(raw, topics[topic])
        except Exception:  # a message cut by the damage or otherwise corrupt
            status.skipped += 1
            continue
        status.read += 1
        yield topic, stamp, msg
    if status.read == 0:
        raise BagError(f"{status.error}; no message could be salvaged")
