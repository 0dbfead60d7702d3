"""Link: backoff, attempts reset only on progress, the reconnect budget, stalls."""

from __future__ import annotations

import random

import pytest

from workers.errors import UpstreamClosed, UpstreamError, UpstreamRefused
from workers.link import Link, RetryPolicy, reason_of

POLICY = RetryPolicy(initial_s=0.2, max_s=10.0, attempts=4, allowance=3, earn_s=2.0)
DROP = UpstreamClosed("dropped")
RNG = random.Random(7)


def test_delays_grow_exponentially_within_the_cap() -> None:
    policy = RetryPolicy(initial_s=0.2, max_s=1.0)
    caps = [0.2, 0.4, 0.8, 1.0, 1.0]
    for attempt, cap in enumerate(caps, start=1):
        assert cap / 2 <= policy.delay(attempt, RNG) <= cap


def test_a_server_that_drops_at_once_fails_the_session_after_the_attempts() -> None:
    link = Link(RetryPolicy(attempts=4, allowance=100))
    now = 0.0
    for _ in range(4):
        link.opened(now)
        link.lost(DROP, now, "connection_lost", RNG)
        delay = link.next_attempt(now)
        assert delay is not None
        now += delay
    link.opened(now)
    link.lost(DROP, now, "connection_lost", RNG)
    assert link.next_attempt(now) is None
    assert link.failure is not None
    assert link.failure.code == "upstream_unstable"


def test_progress_on_the_connection_resets_the_attempts() -> None:
    link = Link(RetryPolicy(attempts=2, allowance=100))
    for _ in range(10):  # drops forever, but each connection covers audio
        link.opened(0.0)
        link.progressed(2.5)
        link.lost(DROP, 0.0, "connection_lost", RNG)
        assert link.next_attempt(0.0) is not None
    assert link.failure is None


def test_the_budget_fails_a_link_that_covers_a_sliver_between_drops() -> None:
    link = Link(POLICY)
    drops = 0
    while link.failure is None:
        link.opened(0.0)
        link.progressed(0.01)  # progress resets attempts, but earns little
        link.lost(DROP, 0.0, "connection_lost", RNG)
        drops += 1
    assert link.failure.code == "upstream_unstable"
    assert drops == 4  # allowance 3, then one more


def test_covered_audio_pays_for_reconnects() -> None:
    link = Link(POLICY)
    for _ in range(50):
        link.opened(0.0)
        link.progressed(3.0)  # 1.5 reconnects earned per connection
        link.lost(DROP, 0.0, "connection_lost", RNG)
    assert link.failure is None


@pytest.mark.parametrize(("status", "code"), [(400, "INVALID_REQUEST"), (401, "UNAUTHORIZED")])
def test_permanent_refusals_fail_at_once(status: int, code: str) -> None:
    link = Link(POLICY)
    link.refused(UpstreamRefused(status, code=code), 0.0, RNG)
    assert link.next_attempt(0.0) is None
    assert link.failure is not None
    assert link.failure.code == code


def test_an_unreachable_upstream_fails_as_unavailable() -> None:
    link = Link(POLICY)
    error = UpstreamError("cannot reach", retriable=True)
    for _ in range(POLICY.attempts + 1):
        link.refused(error, 0.0, RNG)
    assert link.failure is not None
    assert link.failure.code == "upstream_unavailable"
    assert link.reason == "connection_lost"


def test_a_silent_connection_owing_an_answer_is_stalled() -> None:
    link = Link(RetryPolicy(stall_timeout_s=10))
    link.opened(0.0)
    link.sent(1.0, due=False)  # audio only: nothing owed
    assert not link.stalled(20.0)
    link.sent(21.0, due=True)  # a flush went out
    assert not link.stalled(30.0)
    link.heard(30.0, still_due=True)  # an interim: alive, the flush still owed
    assert not link.stalled(39.0)
    assert link.stalled(40.0)
    link.heard(40.5, still_due=False)  # confirmed
    assert not link.stalled(100.0)


def test_reasons_name_what_happened() -> None:
    assert reason_of(UpstreamRefused(429)) == "http_429"
    assert reason_of(UpstreamClosed("x", close_code=1011)) == "closed_1011"
    assert reason_of(UpstreamError("x", reason="stall")) == "stall"
