"""Where and in what precision the model runs: one list of choices and one rule per decision.

The node's parameters, the CLI options, the predictor and the trainer all take these names.
torch is imported inside the functions so that the CLI parser can read the choices cheaply.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# bf16 must beat fp32 by this factor to be chosen on a CPU (timing noise must not flip the choice).
BF16_GAIN = 0.8


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when PyTorch sees a GPU; asking for CUDA without one is an error, not a fallback."""
    import torch

    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but PyTorch sees no CUDA GPU (CPU-only build or no driver)")
    return torch.device(device)


# CPU feature flags (x86 /proc/cpuinfo "flags", Arm "Features") that mean bf16 arithmetic units.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU lists bf16 units (``cpuinfo``: /proc/cpuinfo's text); None where that is unknown.

    Without them bf16 is emulated, slower and less exact, so it is not timed there at all; where a
    timing decides, a busy machine can tip it (two runs of one evaluation under load chose differently
    and scored 11 of 746 faces differently, which is why `emodan eval` defaults to fp32).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return bool(flags & BF16_FLAGS) if flags else None


def faster_cpu_precision(step: Callable[[str], None], repeats: int = 3, has_bf16: bool | None = None) -> str:
    """'bf16' when the CPU has bf16 units and a timed ``step(precision)`` is clearly faster in it, else 'fp32'.

    bf16 only helps on CPUs with bf16 units: where the CPU says it has none, fp32 without timing
    (``has_bf16``: the answer of :func:`cpu_has_bf16`, asked when None). Each precision's fastest call
    counts, so a call slowed by another process does not decide.
    """
    if has_bf16 is None:
        has_bf16 = cpu_has_bf16()
    if has_bf16 is False:
        return "fp32"
    timings = {}
    for candidate in ("fp32", "bf16"):
        step(candidate)  # warm-up: first calls pay for allocation and kernel selection
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            step(candidate)
            best = min(best, time.perf_counter() - start)
        timings[candidate] = best
    return "bf16" if timings["bf16"] < BF16_GAIN * timings["fp32"] else "fp32"


def fp32_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights in fp32 (exported checkpoints store fp16 to stay small)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}


def set_torch_threads(threads: int) -> None:
    """Limit PyTorch's CPU threads (0 keeps its default); on a busy CPU one thread can be much faster."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
