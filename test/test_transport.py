"""Transport loss from DDS sequence numbers (the pure part of the node's 'frames lost' diagnostics)."""
from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="emodan_ros.ros needs rclpy")
from emodan_ros.ros.transport import SequenceGaps  # noqa: E402


def _info(sequence: int | None, gid: bytes = b"a") -> dict:
    return {"publication_sequence_number": sequence, "publisher_gid": {"data": gid}}


def test_gaps_count_missing_samples_per_publisher() -> None:
    gaps = SequenceGaps()
    assert [gaps.update(_info(s)) for s in (1, 2, 5, 6)] == [0, 0, 2, 0]
    assert gaps.update(_info(10, b"b")) == 0  # a second camera starts its own count
    assert gaps.update(_info(12, b"b")) == 1
    assert gaps.update(_info(3)) == 0  # publisher restarted: no negative loss
    assert (gaps.lost, gaps.received) == (3, 7)


def test_an_rmw_without_sequence_numbers_counts_nothing() -> None:
    gaps = SequenceGaps()
    assert gaps.update(_info(None)) == 0 and gaps.update({}) == 0
    assert gaps.lost == 0 and gaps.received == 2
