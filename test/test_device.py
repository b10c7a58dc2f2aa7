"""The CPU precision rule: bf16 only on CPUs with bf16 units, and not on one slow call."""

from __future__ import annotations

from emodan_ros.model.device import cpu_has_bf16, faster_cpu_precision

ZEN3 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma f16c\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_bf16_units_are_read_from_cpuinfo() -> None:
    assert cpu_has_bf16(ZEN3) is False
    assert cpu_has_bf16(ZEN4) is True
    assert cpu_has_bf16(GRAVITON3) is True
    assert cpu_has_bf16("processor\t: 0\nmodel name\t: unknown\n") is None  # no flags: unknown


def test_without_bf16_units_fp32_is_chosen_without_timing() -> None:
    calls: list[str] = []
    assert faster_cpu_precision(calls.append, has_bf16=False) == "fp32"
    assert calls == []


def test_one_slow_call_does_not_decide() -> None:
    """bf16 2x faster wins; fp32's one call slowed 10x by another process must not make bf16 win."""
    import time

    def step(cost: dict[str, list[float]]):
        def run(precision: str) -> None:
            time.sleep(cost[precision].pop(0))
        return run

    faster = {"fp32": [0.01] * 4, "bf16": [0.005] * 4}
    assert faster_cpu_precision(step(faster), has_bf16=True) == "bf16"
    spiked = {"fp32": [0.01, 0.1, 0.01, 0.01], "bf16": [0.01] * 4}
    assert faster_cpu_precision(step(spiked), has_bf16=True) == "fp32"
