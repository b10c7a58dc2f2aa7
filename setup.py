"""pip-installable emodan_ros library, for machines without ROS (e.g. GPU training boxes).

`pip install .` installs the model, training, evaluation and bag tools. The ROS 2 package
itself is built by colcon from package.xml / CMakeLists.txt (build type ament_cmake), which
ignores this file. ROS-only modules (emotion_node, behavior) raise a clear ImportError
without rclpy, and `emodan_ros.msg` exists only in the colcon install space.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements(name: str) -> list[str]:
    """Requirement lines of a requirements file (the single list `make setup` also uses)."""
    lines = (HERE / name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith(("#", "-r"))]


setup(
    name="emodan_ros",
    version="0.1.0",
    description="Face landmarks and emotion recognition (Emotional DAN) with ROS 2 interfaces",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["emodan_ros", "emodan_ros.*"]),
    install_requires=requirements("requirements.txt"),
    extras_require={"test": [r for r in requirements("requirements-dev.txt") if r.startswith("pytest")],
                    "bench": requirements("requirements-bench.txt")},
    entry_points={"console_scripts": ["emodan=emodan_ros.cli:main"]},
)
