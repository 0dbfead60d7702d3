"""When a step has fallen behind, and which load to try next (pure).

"Behind" is defined on what a caller of the worker sees, measured over the
step's steady window:

- the p99 of produce -> upstream latency is above ``Bounds.behind_p99_ms``
  (chunks that never reached the upstream count as infinitely late), or
- the latency keeps growing: the median of the window's last third is more
  than ``Bounds.drift_ms`` above the median of its first third (a backlog
  building up, which a longer step would turn into unbounded lag).

The search grows the load geometrically until a step is behind, then bisects
between the last good and the first bad load until they are within
``precision`` of each other, or the step budget is spent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.stats import FloatArray, Percentiles


@dataclass(frozen=True)
class Bounds:
    """Thresholds of the step search and of the issue's target."""

    behind_p99_ms: float = 250.0
    drift_ms: float = 50.0
    target_p99_ms: float = 20.0


def behind_reason(chunk: Percentiles, drift_ms: float, bounds: Bounds) -> str | None:
    """Why a step fell behind, or None when it kept up."""
    if chunk.empty:
        return "no chunk measured"
    if chunk.p99 > bounds.behind_p99_ms:
        shown = "inf" if math.isinf(chunk.p99) else f"{chunk.p99:.0f} ms"
        return f"p99 {shown} > {bounds.behind_p99_ms:.0f} ms"
    if drift_ms > bounds.drift_ms:
        return f"latency grew {drift_ms:.0f} ms over the window"
    return None


def drift(sent_at: FloatArray, latencies_ms: FloatArray) -> float:
    """Median latency of the last third of the window minus that of the first third."""
    if latencies_ms.size < 6:
        return 0.0
    order = np.argsort(sent_at)
    third = latencies_ms.size // 3
    first = float(np.median(latencies_ms[order[:third]]))
    last = float(np.median(latencies_ms[order[-third:]]))
    return last - first


@dataclass(frozen=True)
class Search:
    """The load ladder: start, growth factor, precision and budget."""

    start: int
    growth: float = 1.6
    precision: float = 1.25
    max_steps: int = 7
    minimum: int = 5

    def next(self, history: Sequence[tuple[int, bool]]) -> int | None:
        """The next session count to try given ``(sessions, behind)`` so far, or None."""
        if not history:
            return self.start
        if len(history) >= self.max_steps:
            return None
        good = [n for n, late in history if not late]
        bad = [n for n, late in history if late]
        if not bad:
            return _nice(max(good) * self.growth)
        if not good:
            low = min(bad) // 2
            return low if low >= self.minimum else None
        lo, hi = max(good), min(n for n in bad if n > max(good)) if _above(bad, good) else 0
        if hi == 0 or hi / lo <= self.precision:
            return None
        candidate = _nice(math.sqrt(lo * hi))
        return candidate if lo < candidate < hi else None


def _above(bad: Sequence[int], good: Sequence[int]) -> bool:
    return any(n > max(good) for n in bad)


def _nice(value: float) -> int:
    """Round a load to two significant digits (120, 190, 1300...)."""
    if value < 10:
        return max(1, round(value))
    digits = 10 ** (len(str(int(value))) - 2)
    return int(round(value / digits) * digits)
