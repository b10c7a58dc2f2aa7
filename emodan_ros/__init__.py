"""emodan_ros: Emotional DAN (facial landmarks + emotion) for ROS 2 and as a plain PyTorch library.

This file stays free of ROS imports so that `pip install .` on a machine without ROS works.
"""

__version__ = "0.1.0"
