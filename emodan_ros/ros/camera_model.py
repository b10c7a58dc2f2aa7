"""The camera's intrinsics for head pose: from camera_info when it matches the frame, else assumed.

A robot's camera driver publishes sensor_msgs/CameraInfo next to its images; without one (a
webcam, a bag without it) the node assumes a horizontal field of view and says so in its
diagnostics, because the head's distance (not its angles) then depends on that guess.
"""

from __future__ import annotations

import threading

from sensor_msgs.msg import CameraInfo

from emodan_ros.faces.head_pose import CameraIntrinsics, intrinsics_from_camera_info, intrinsics_from_fov


class CameraModel:
    """Latest camera_info, turned into intrinsics for a frame of a given size."""

    def __init__(self, assumed_hfov_deg: float) -> None:
        self.assumed_hfov_deg = float(assumed_hfov_deg)
        self._info: CameraInfo | None = None
        self._lock = threading.Lock()
        self._bad_info = ""
        self.source = "none yet"

    def on_camera_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._info = msg

    def intrinsics(self, width: int, height: int) -> CameraIntrinsics:
        """Intrinsics for a ``width`` x ``height`` frame; ``source`` tells where they came from."""
        with self._lock:
            info = self._info
        if info is not None and (info.width, info.height) == (width, height):
            try:
                found = intrinsics_from_camera_info(info.k, info.d, info.distortion_model)
                self.source = "camera_info"
                return found
            except ValueError as exc:  # e.g. an uncalibrated camera's all-zero K
                self._bad_info = str(exc)
        elif info is not None:
            self._bad_info = f"camera_info is {info.width}x{info.height}, frames are {width}x{height}"
        self.source = f"assumed horizontal field of view {self.assumed_hfov_deg:g} deg" + (
            f" ({self._bad_info})" if self._bad_info else " (no camera_info received)")
        return intrinsics_from_fov(width, height, self.assumed_hfov_deg)
