"""Interleaved timing: every arm runs once per round, in a rotating order, medians compared."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(
    arms: dict[str, Callable[[], object]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each arm; the order rotates each round so drift hits all arms."""
    names = list(arms)
    for _ in range(warmup):
        for name in names:
            arms[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratios(times: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """Median of each arm divided by the baseline's median."""
    base = median(times[baseline])
    return {name: round(median(values) / base, 4) for name, values in times.items()}
