"""What the package finds around it: ROS 2 (or not) and its own shipped files.

The library (model, training, evaluation) installs with pip on machines without ROS; the
``emodan_ros.ros`` sub-package needs rclpy and calls `require_ros` once, which turns a bare
`ModuleNotFoundError: rclpy` deep in an import chain into an instruction. Shipped files (the
default model, the Fast DDS profile) are found the same way from a ROS install, this
repository's install/ or a plain checkout.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["ros_available", "require_ros", "cv_bridge_available", "package_file", "default_model_path",
           "find_default_model", "DEFAULT_MODEL_NAME"]

DEFAULT_MODEL_NAME = "emodan_default.pt"


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def ros_available() -> bool:
    """True when rclpy can be imported (a sourced ROS 2 install or the project's .venv)."""
    return _findable("rclpy")


def cv_bridge_available() -> bool:
    """True when the ROS 2 cv_bridge (a real ROS install) is importable."""
    return _findable("cv_bridge")


def require_ros(module: str) -> None:
    """Raise ImportError naming `module` and how to get ROS 2, unless rclpy is importable."""
    if not ros_available():
        raise ImportError(
            f"{module} needs ROS 2 (rclpy), which is not importable here. "
            "Run `make setup` in the emodan_ros repository and `. install/setup.sh`, "
            "or source a ROS 2 install (e.g. `source /opt/ros/jazzy/setup.bash`) and build "
            "the package with colcon. The rest of emodan_ros (training, evaluation, "
            "model) works without ROS."
        )


def package_file(relative: str) -> Path | None:
    """A file shipped with the package: the colcon-installed share/emodan_ros first, then the source tree.

    One lookup for the Fast DDS profile, the default model and the like, so every tool finds the
    same file whether it runs from a ROS install, this repository's install/ or a plain checkout.
    """
    candidates = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory("emodan_ros")) / relative)
        except (PackageNotFoundError, OSError):  # OSError: no ROS environment sourced (AMENT_PREFIX_PATH unset)
            pass
    except ImportError:
        pass
    candidates.append(Path(__file__).resolve().parent.parent / relative)
    return next((path for path in candidates if path.is_file()), None)


def default_model_path() -> Path | None:
    """The package's default model (installed share/ first, then the source tree's models/), if any."""
    return package_file(f"models/{DEFAULT_MODEL_NAME}")


def find_default_model() -> Path:
    """:func:`default_model_path`, or an error that says what to pass instead."""
    found = default_model_path()
    if found is None:
        raise FileNotFoundError(f"no default model (models/{DEFAULT_MODEL_NAME} of the package); pass --model PATH")
    return found
