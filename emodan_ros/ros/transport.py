"""Frames lost between the camera and the node, told apart from frames the node chose to drop.

DDS numbers every sample a writer sends. A gap in the publication sequence numbers of one
publisher means samples that never arrived: over best effort, usually camera-size images whose
UDP fragments were lost because the camera's process lacks a Fast DDS profile with a large
shared-memory segment. Counting them lets diagnostics say "frames are lost in transport"
rather than leaving "no faces" and "no frames" looking alike.
"""

from __future__ import annotations

from typing import Any, Mapping


class SequenceGaps:
    """Per-publisher count of samples missing from the publication sequence numbers."""

    def __init__(self) -> None:
        self._last: dict[bytes, int] = {}
        self.lost = 0
        self.received = 0

    def update(self, info: Mapping[str, Any]) -> int:
        """Take one sample's message info (rclpy's ``MessageInfo``); returns the samples lost before it."""
        self.received += 1
        sequence = info.get("publication_sequence_number")
        gid = info.get("publisher_gid")
        if sequence is None or gid is None:  # an RMW that does not number samples
            return 0
        key = bytes(gid.get("data", b"")) if isinstance(gid, Mapping) else bytes(gid)
        last = self._last.get(key)
        self._last[key] = int(sequence)
        if last is None or sequence <= last:  # first sample of this publisher, or it restarted
            return 0
        gap = int(sequence) - last - 1
        self.lost += gap
        return gap
