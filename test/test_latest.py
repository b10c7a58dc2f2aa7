"""LatestSlot: the newest item wins, the worker waits for one, close releases it."""

import threading
import time

from emodan_ros.faces.latest import LatestSlot


def test_a_put_replaces_what_the_worker_has_not_taken() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True  # 1 was never taken: dropped, and the producer is told
    assert slot.busy
    assert slot.take() == 2
    assert slot.busy  # taken, not done
    slot.done()
    assert not slot.busy


def test_take_waits_for_an_item_and_close_releases_it() -> None:
    slot: LatestSlot[str] = LatestSlot()
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: [got.append(slot.take()) for _ in range(2)])
    worker.start()
    time.sleep(0.05)
    assert got == []  # nothing parked yet: the worker waits
    slot.put("frame")
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == ["frame"]
    slot.close()
    worker.join(5)
    assert not worker.is_alive() and got == ["frame", None]
    assert slot.put("late") is False and not slot.busy  # nothing is kept after close


def test_wait_idle_returns_when_the_worker_is_done_and_times_out_while_it_works() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.wait_idle(0.01)  # nothing to do
    slot.put(7)
    assert not slot.wait_idle(0.05)  # parked, nobody takes it
    assert slot.take() == 7
    finisher = threading.Timer(0.1, slot.done)
    finisher.start()
    assert slot.wait_idle(5)
    slot.clear()
    slot.put(8)
    slot.clear()
    assert not slot.busy
