"""`emotion_lifecycle_node`: the emotion node as a managed (lifecycle) node.

configure loads the model and the detector and creates the publishers; activate subscribes to the
camera; deactivate unsubscribes (the model stays loaded, so activating again is instant); cleanup
unloads. A failed configure (bad parameter, missing model) is a FAILURE transition with the reason
logged, and the node stays unconfigured: a lifecycle manager can fix the parameter and retry.
"""

from __future__ import annotations

from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from emodan_ros.faces.pipeline import PredictorLike
from emodan_ros.ros.core import STARTUP_ERRORS, EmotionCore, run_node


class EmotionLifecycleNode(EmotionCore, LifecycleNode):
    """The same behaviour as ``emotion_node``, brought up by lifecycle transitions."""

    def __init__(self, node_name: str = "emotion_node", *, predictor: PredictorLike | None = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._given_predictor = predictor
        self._declare()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._build(self._given_predictor)
        except STARTUP_ERRORS as exc:
            self.get_logger().error(f"cannot configure: {' '.join(str(exc).split())}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._subscribe()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Run the lifecycle node (unconfigured until a manager or `ros2 lifecycle set` drives it)."""
    run_node(EmotionLifecycleNode, args)

if __name__ == "__main__":
    main()
