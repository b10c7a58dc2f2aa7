"""The ROS 2 boundary: the only sub-package that imports rclpy or the package's messages.

Importing it without ROS 2 fails once, here, with an instruction instead of a bare
``ModuleNotFoundError: rclpy`` deep in an import chain.
"""

from emodan_ros.compat import require_ros

require_ros(__name__)
