"""bench.stats: percentiles and the matching of produce, arrival and final times."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.stats import arrival_times, chunk_latency, final_latency, percentiles, slope


def test_nearest_rank_percentiles() -> None:
    p = percentiles(list(range(1, 101)))
    assert (p.count, p.p50, p.p95, p.p99) == (100, 50.0, 95.0, 99.0)


def test_missing_samples_are_infinitely_late() -> None:
    p = percentiles([1.0] * 98, missing=2)
    assert p.p95 == 1.0
    assert math.isinf(p.p99)
    assert p.missing == 2


def test_no_samples() -> None:
    p = percentiles([])
    assert p.empty
    assert math.isnan(p.p50)


def test_arrival_is_the_first_frame_reaching_the_position() -> None:
    got_bytes = np.array([3200.0, 9600.0, 12800.0])  # the 2nd frame merged two chunks
    got_at = np.array([10.0, 10.3, 10.4])
    positions = np.array([3200.0, 6400.0, 9600.0, 12800.0, 16000.0])
    arrived = arrival_times(positions, got_bytes, got_at)
    assert arrived[:4].tolist() == [10.0, 10.3, 10.3, 10.4]
    assert math.isnan(arrived[4])


def test_chunk_latency_counts_only_the_window_and_skips_untimed_chunks() -> None:
    produced = np.array([[1.0, 2.0, 3.0, 4.0]])
    positions = np.array([100.0, np.nan, 200.0, 300.0])
    arrivals = {"s": (np.array([100.0, 200.0]), np.array([1.01, 3.02]))}
    result = chunk_latency(produced, positions, arrivals, ["s"], (1.5, 4.5))
    assert result.latencies_ms.tolist() == pytest.approx([20.0])
    assert result.sent_at.tolist() == [3.0]
    assert result.missing == 1  # chunk 3 (position 300) never arrived


def test_chunk_latency_of_an_unseen_session() -> None:
    result = chunk_latency(np.array([[1.0]]), np.array([10.0]), {}, ["s"], (0.0, 2.0))
    assert result.missing == 1
    assert result.latencies_ms.size == 0


def test_final_latency_matches_by_session_and_start() -> None:
    sent = {("a", 100): 10.0, ("a", 900): 11.0, ("b", 100): 50.0}
    readable = {("a", 100): 10.004, ("b", 100): 50.5}
    p = final_latency(sent, readable, (0.0, 20.0))
    assert p.count == 2
    assert p.p50 == pytest.approx(4.0)
    assert p.missing == 1


def test_slope() -> None:
    assert slope([1, 2, 3], [2, 4, 6]) == pytest.approx(2.0)
    assert math.isnan(slope([1], [1]))
