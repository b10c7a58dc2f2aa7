"""Signal handling and spinning shared by the package's nodes."""

from __future__ import annotations

import signal
import threading

from rclpy.executors import Executor


def stop_on_signals() -> threading.Event:
    """An event that SIGINT and SIGTERM set (install it before building the node: no signal is lost).

    rclpy's own signal handling (the rclpy.init default) left about one run in ten hanging in
    ``executor.spin()`` after SIGTERM on these machines, so the nodes take the signals themselves
    (``rclpy.init(signal_handler_options=SignalHandlerOptions.NO)``) and spin in short waits.
    """
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def spin_until(executor: Executor, stop: threading.Event, poll_s: float = 0.1) -> None:
    """Spin until ``stop`` is set or the context is shut down."""
    while not stop.is_set() and executor.context.ok():
        executor.spin_once(timeout_sec=poll_s)
