"""The newest-item hand-over between a producer and one worker thread.

Why: a camera (or the node's frame loop) produces faster than a detector or the model can
consume, and a late answer about an old frame is worth less than a prompt one about the newest.
So the worker always takes the latest item; an item it never started is replaced by a newer one
(and the producer learns that it was, to count the drop). Used by the node's inference worker
(``ros/core.py``) and the detector thread (``faces/async_detect.py``).
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """One parked item, newest wins; :meth:`take` waits for it, :meth:`close` ends the waiting."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._working = False
        self._closed = False

    def put(self, item: T) -> bool:
        """Park ``item`` for the worker; True when it replaced one the worker had not taken.

        After :meth:`close` the item is not kept (and False is returned).
        """
        with self._cond:
            if self._closed:
                return False
            replaced = self._item is not None
            self._item = item
            self._cond.notify_all()
            return replaced

    def take(self) -> T | None:
        """The parked item, waiting for one; None once the slot is closed. The worker counts as
        busy until its next :meth:`take` or :meth:`done`."""
        with self._cond:
            self._working = False
            self._cond.notify_all()
            while self._item is None and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            item, self._item = self._item, None
            self._working = True
            return item

    def done(self) -> None:
        """The worker has finished the item it took (wakes :meth:`wait_idle`)."""
        with self._cond:
            self._working = False
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        """An item is parked or being worked on."""
        with self._cond:
            return self._item is not None or self._working

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is parked or being worked on; False on timeout or when closed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._item is not None or self._working:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                self._cond.wait(left)
            return True

    def clear(self) -> None:
        """Drop the parked item, if any (what it showed is no longer wanted)."""
        with self._cond:
            self._item = None
            self._cond.notify_all()

    def close(self) -> None:
        """Drop the parked item and release the worker from :meth:`take` (it returns None); idempotent."""
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()
