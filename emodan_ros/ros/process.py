"""emotion_node as its own process, as on a robot: for the demo, the benchmarks and live bag evaluation.

One place starts it (outside the source tree, so Python imports the built package with its
messages; with the package's Fast DDS profile, so camera-size frames arrive), collects its output
for error messages, and stops it with SIGINT like `ros2 launch` does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

from emodan_ros.compat import package_file


def use_fastdds_profile() -> None:
    """Put the package's Fast DDS profile in this process's environment unless the user set one.

    Must run before this process creates its first DDS participant; the node started below
    inherits it, and both ends of a camera-size stream need it.
    """
    profile = package_file("config/fastdds.xml")
    if profile is not None:
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))


class NodeProcess:
    """A running `emotion_node` in ``namespace`` with the given parameters."""

    def __init__(self, namespace: str, params: dict[str, Any], extra_args: list[str] | None = None) -> None:
        use_fastdds_profile()
        args = [sys.executable, "-m", "emodan_ros.ros.node", "--ros-args", "-r", f"__ns:={namespace}",
                "-r", "__node:=emotion_node"]
        for key, value in params.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["-p", f"{key}:={text}"]
        self.log: list[str] = []
        self.process = subprocess.Popen(args + list(extra_args or []), cwd="/", stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=lambda: self.log.extend(self.process.stdout), daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> bool:
        return self.process.poll() is not None

    def log_tail(self, chars: int = 3000) -> str:
        return "".join(self.log)[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
