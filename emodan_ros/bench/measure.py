"""Timing and memory of one benchmark row: medians with quartiles, peak RSS growth, the machine."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

TIME_BUDGET_S = 15.0  # per timing: stop early (after at least 3 calls) so slow rows stay bounded


class Skip(Exception):
    """A row cannot be measured here (peer not installed, no ROS, ...); the message says why."""


# ------------------------------------------------------------------ measuring ------

@dataclass
class Timing:
    """Milliseconds per call over repeated calls (median and interquartile range)."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    calls: int

    def to_dict(self) -> dict[str, float]:
        return {"median_ms": round(self.median_ms, 3), "p25_ms": round(self.p25_ms, 3),
                "p75_ms": round(self.p75_ms, 3), "calls": self.calls}


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 2,
               budget_s: float = TIME_BUDGET_S) -> Timing:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed calls (fewer, but >= 3, past the budget)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < end):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    q = np.percentile(times, [25, 50, 75])
    return Timing(float(q[1]), float(q[0]), float(q[2]), len(times))


def rss_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_delta_mib(fn: Callable[[], Any]) -> float | None:
    """Peak RSS growth (MiB) while ``fn`` runs; None where /proc does not allow resetting the peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = rss_kib("VmRSS")
    fn()
    peak = rss_kib("VmHWM")
    if before is None or peak is None:
        return None
    return round(max(peak - before, 0) / 1024.0, 1)


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "torch": torch.__version__, "python": platform.python_version(),
            "load_average_1min": round(os.getloadavg()[0], 2)}
