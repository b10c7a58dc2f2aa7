"""The `emotion_node`: camera images in, per-face landmarks and emotions out (see ``ros.core``)."""

from __future__ import annotations

from typing import Any

from rclpy.node import Node

from emodan_ros.faces.pipeline import PredictorLike
from emodan_ros.ros.core import MESSAGES, EmotionCore, run_node

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
    run_node(EmotionNode, args)

if __name__ == "__main__":
    main()
