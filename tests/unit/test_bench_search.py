"""bench.search: the "behind" verdict and the load ladder."""

from __future__ import annotations

import math

import numpy as np

from bench.search import Bounds, Search, behind_reason, drift
from bench.stats import Percentiles

OK = Percentiles(100, 5.0, 10.0, 15.0)


def test_a_step_within_bounds_kept_up() -> None:
    assert behind_reason(OK, 0.0, Bounds()) is None


def test_a_high_p99_is_behind() -> None:
    late = Percentiles(100, 50.0, 200.0, 300.0)
    assert behind_reason(late, 0.0, Bounds()) == "p99 300 ms > 250 ms"


def test_lost_chunks_are_behind() -> None:
    lost = Percentiles(100, 5.0, 10.0, math.inf, missing=5)
    assert "inf" in (behind_reason(lost, 0.0, Bounds()) or "")


def test_growing_latency_is_behind() -> None:
    assert "grew" in (behind_reason(OK, 80.0, Bounds()) or "")


def test_drift_compares_the_last_third_with_the_first() -> None:
    sent = np.arange(9, dtype=np.float64)
    latency = np.array([1, 1, 1, 5, 5, 5, 100, 100, 100], dtype=np.float64)
    assert drift(sent[::-1].copy(), latency[::-1].copy()) == 99.0
    assert drift(sent[:3], latency[:3]) == 0.0  # too few samples to tell


def test_the_ladder_grows_until_behind_then_bisects() -> None:
    search = Search(start=100, growth=2.0, precision=1.25, max_steps=10)
    assert search.next([]) == 100
    assert search.next([(100, False)]) == 200
    assert search.next([(100, False), (200, False), (400, True)]) == 280
    assert search.next([(100, False), (200, False), (400, True), (280, False)]) == 330
    done = [(100, False), (200, False), (400, True), (280, False), (330, True)]
    assert search.next(done) is None  # 330 / 280 is within the precision


def test_the_ladder_steps_down_when_the_first_step_is_behind() -> None:
    search = Search(start=100, minimum=30)
    assert search.next([(100, True)]) == 50
    assert search.next([(100, True), (50, True)]) is None  # 25 is below the minimum


def test_the_ladder_stops_at_its_budget() -> None:
    search = Search(start=10, max_steps=2)
    assert search.next([(10, False), (16, False)]) is None
