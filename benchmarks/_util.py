"""Timing helpers shared by the benchmarks.

These machines are shared and noisy, so every figure is the median of several
runs with the min-max beside it, and every comparison is a ratio measured in the
same run.  Absolute numbers from different runs do not compare.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    """Seconds per call of one benchmark, over several runs."""

    name: str
    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def rate(self, amount: float) -> tuple[float, float, float]:
        """(median, min, max) of ``amount`` per second."""
        return amount / self.median, amount / max(self.runs), amount / min(self.runs)


def measure(name: str, func: Callable[[], object], repeat: int, number: int = 1) -> Measurement:
    """Run ``func`` ``number`` times per run, ``repeat`` runs; seconds per call."""
    func()  # warm up caches and lazy imports
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            func()
        runs.append((time.perf_counter() - start) / number)
    return Measurement(name, tuple(runs))


def measure_pair(
    name: str,
    ours: Callable[[], object],
    ceiling: Callable[[], object],
    repeat: int,
    *,
    number: int = 1,
    ceiling_number: int | None = None,
) -> tuple[Measurement, Measurement]:
    """Time ``ours`` and its ``ceiling`` in alternate runs: (ours, ceiling).

    A ratio of two figures timed one block after the other takes a slow moment
    of the machine as a difference between them; alternating the runs puts every
    such moment on both sides alike.
    """
    ours_m, ceiling_m = measure_alternating(
        [(name, ours, number), (f"{name} (ceiling)", ceiling, ceiling_number or number)], repeat
    )
    return ours_m, ceiling_m


def measure_alternating(funcs: list[tuple[str, Callable[[], object], int]], repeat: int) -> list[Measurement]:
    """Time each ``(name, func, number)`` in turn, run after run (see :func:`measure_pair`)."""
    for _, func, _ in funcs:  # warm up caches and lazy imports
        func()
    runs: list[list[float]] = [[] for _ in funcs]
    for _ in range(repeat):
        for (_, func, count), these in zip(funcs, runs, strict=True):
            start = time.perf_counter()
            for _ in range(count):
                func()
            these.append((time.perf_counter() - start) / count)
    return [Measurement(name, tuple(these)) for (name, _, _), these in zip(funcs, runs, strict=True)]


def row(label: str, value: tuple[float, float, float], unit: str, ratio: float | None = None, note: str = "") -> str:
    median, low, high = value
    # Small ratios with four decimals, as the suite's table prints them (0.0083x, not 0.01x).
    ratio_text = "       " if ratio is None else (f"{ratio:6.2f}x" if ratio >= 0.1 else f"{ratio:6.4f}x")
    return f"{label:<48} {median:>14,.1f} {unit:<10} [{low:,.1f} .. {high:,.1f}] {ratio_text} {note}"
