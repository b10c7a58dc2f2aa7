"""The `emotion_node`: camera images in, per-face landmarks and emotions out (see ``ros.core``)."""

from __future__ import annotations

import sys
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from emodan_ros.faces.pipeline import PredictorLike
from emodan_ros.ros.core import MESSAGES, STARTUP_ERRORS, EmotionCore
from emodan_ros.ros.runtime import spin_until, stop_on_signals

__all__ = ["EmotionNode", "MESSAGES", "main"]


class EmotionNode(EmotionCore, Node):
    """The node, live as soon as it is built.

    ``predictor`` (keyword, for in-process use and tests) skips model loading and uses the given
    object (anything with the Predictor interface).
    """

    def __init__(self, node_name: str = "emotion_node", *, predictor: PredictorLike | None = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._declare()
        self._build(predictor)
        self._subscribe()

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Run the node until SIGINT/SIGTERM; exit code 1 (with the reason logged) when it cannot start."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_on_signals()
    executor = SingleThreadedExecutor()
    node = None
    failed = False
    try:
        node = EmotionNode()
        executor.add_node(node)
        spin_until(executor, stop)
    except ExternalShutdownException:
        pass
    except STARTUP_ERRORS as exc:
        if node is not None:
            raise  # after start-up these are bugs: show them whole
        reason = " ".join(str(exc).split())  # one line, whatever the exception's text looks like
        rclpy.logging.get_logger("emotion_node").fatal(f"cannot start: {reason}")
        failed = True
    except Exception:
        if rclpy.ok():
            raise  # a real failure; otherwise a signal stopped the start-up half-way
    finally:
        if node is not None:
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
