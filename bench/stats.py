"""Pure statistics of a benchmark step: percentiles and latency matching.

Nothing here does I/O or reads a clock: callers pass the timestamps they
recorded (wall-clock seconds, ``time.time()``, which every process on the
machine shares).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Percentiles:
    """p50/p95/p99 (ms) of ``count`` samples; ``missing`` samples never arrived.

    Missing samples count as infinitely late, so a step that loses more than
    1 % of its chunks has an infinite p99 (it fell behind).
    """

    count: int
    p50: float
    p95: float
    p99: float
    missing: int = 0

    @property
    def empty(self) -> bool:
        return self.count == 0


def percentiles(values_ms: Sequence[float] | FloatArray, missing: int = 0) -> Percentiles:
    """Nearest-rank percentiles of ``values_ms`` plus ``missing`` infinite samples."""
    values = np.sort(np.asarray(values_ms, dtype=np.float64))
    values = np.concatenate([values, np.full(missing, math.inf)])
    if values.size == 0:
        return Percentiles(0, math.nan, math.nan, math.nan, 0)
    return Percentiles(
        count=int(values.size),
        p50=_rank(values, 50),
        p95=_rank(values, 95),
        p99=_rank(values, 99),
        missing=missing,
    )


def _rank(sorted_values: FloatArray, q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q % at or below it."""
    index = max(0, math.ceil(q / 100 * sorted_values.size) - 1)
    return float(sorted_values[index])


def arrival_times(
    positions: FloatArray, arrived_bytes: FloatArray, arrived_at: FloatArray
) -> FloatArray:
    """When the upstream had received each byte position (NaN if never).

    ``arrived_bytes`` is the cumulative byte count after each received frame
    and ``arrived_at`` its time: a chunk whose audio ends at byte ``p`` has
    arrived at the first frame that brings the count to ``p`` or beyond,
    however the sender merged or split chunks into frames.
    """
    out = np.full(positions.shape, np.nan)
    if arrived_bytes.size == 0:
        return out
    index = np.searchsorted(arrived_bytes, positions, side="left")
    ok = index < arrived_bytes.size
    out[ok] = arrived_at[index[ok]]
    return out


@dataclass(frozen=True)
class ChunkLatency:
    """Produce -> upstream latencies (ms) of the chunks inside a window."""

    latencies_ms: FloatArray
    sent_at: FloatArray  # produce time of each latency's chunk, same order
    missing: int

    def summary(self) -> Percentiles:
        return percentiles(self.latencies_ms, self.missing)


def chunk_latency(
    produced_at: FloatArray,
    positions: FloatArray,
    arrivals: Mapping[str, tuple[FloatArray, FloatArray]],
    sessions: Sequence[str],
    window: tuple[float, float],
) -> ChunkLatency:
    """Latency from each chunk's produce time to its arrival upstream.

    ``produced_at[i, j]`` is when session ``sessions[i]`` produced chunk ``j``
    (NaN: not produced), ``positions[j]`` the upstream byte position where
    that chunk's audio ends (NaN: the chunk adds no audio, not timed),
    ``arrivals[sid]`` the (cumulative bytes, times) seen upstream. Only chunks
    produced inside ``window`` count.
    """
    latencies: list[FloatArray] = []
    sent_times: list[FloatArray] = []
    missing = 0
    lo, hi = window
    timed = ~np.isnan(positions)
    for row, sid in enumerate(sessions):
        sent = produced_at[row]
        inside = (sent >= lo) & (sent <= hi) & timed
        if not inside.any():
            continue
        got_bytes, got_at = arrivals.get(sid, (np.empty(0), np.empty(0)))
        arrived = arrival_times(positions[inside], got_bytes, got_at)
        ok = ~np.isnan(arrived)
        missing += int((~ok).sum())
        latencies.append((arrived[ok] - sent[inside][ok]) * 1000)
        sent_times.append(sent[inside][ok])
    if not latencies:
        return ChunkLatency(np.empty(0), np.empty(0), missing)
    return ChunkLatency(np.concatenate(latencies), np.concatenate(sent_times), missing)


def final_latency(
    sent: Mapping[tuple[str, int], float],
    readable: Mapping[tuple[str, int], float],
    window: tuple[float, float],
) -> Percentiles:
    """Upstream final sent -> output record readable, keyed by (session, start_ms).

    Finals sent inside ``window`` that never became readable count as missing.
    """
    lo, hi = window
    values: list[float] = []
    missing = 0
    for key, at in sent.items():
        if not lo <= at <= hi:
            continue
        seen = readable.get(key)
        if seen is None:
            missing += 1
        else:
            values.append((seen - at) * 1000)
    return percentiles(values, missing)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (NaN with fewer than two points)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return math.nan
    fit = np.polyfit(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64), 1)
    return float(fit[0])
