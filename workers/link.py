"""The lifecycle of one upstream link (sans-I/O): when to (re)connect, when to
give up, when a silent connection counts as stalled.

A :class:`Link` is told what happened (:meth:`~Link.opened`,
:meth:`~Link.refused`, :meth:`~Link.lost`, :meth:`~Link.progressed`,
:meth:`~Link.sent`, :meth:`~Link.heard`) and answers what to do next
(:meth:`~Link.next_attempt`, :meth:`~Link.stalled`). The retry rules are
data (:class:`RetryPolicy`, STYLE.md principle 5); the pump owns the one loop
that sleeps.

Rules (issue 12, "Upstream hardening"):

- the attempt count resets only after progress on the current connection
  (a final or confirmed flush that covers new audio), so a server that
  accepts and drops at once meets exponential backoff and, after
  ``attempts`` tries, the session fails;
- every reconnect spends one unit of a budget that covered audio earns back
  (``earn_s`` of newly covered audio per unit, up to ``allowance``), so a
  server that covers a sliver and drops, forever, also fails the session
  (``upstream_unstable``) instead of being hit many times a second;
- a connection whose upstream has said nothing for ``stall_timeout_s``
  while an answer is due (a flush went out and is not confirmed) is
  stalled: the pump closes it and the replay goes to a new one (half-open
  sockets that accept writes and never answer exist in the wild).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from workers.errors import UpstreamError


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded in delay and attempts, plus the
    reconnect budget.

    ``delay(n)`` is the wait before attempt ``n`` (1-based) after a failure.
    """

    initial_s: float = 0.2
    max_s: float = 10.0
    multiplier: float = 2.0
    attempts: int = 8
    allowance: float = 10.0  # reconnects a session may spend before it has covered audio
    earn_s: float = 2.0  # seconds of newly covered audio that pay for one more reconnect
    stall_timeout_s: float = 15.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        cap = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt - 1))
        return (rng or random).uniform(cap / 2, cap)

    def exhausted(self, attempt: int) -> bool:
        return attempt > self.attempts


@dataclass
class Failure:
    """Why a link gave up: the ``session_failed`` code and detail."""

    code: str
    detail: str


@dataclass
class Link:
    """One upstream stream's connection lifecycle. No I/O, no clock of its own."""

    policy: RetryPolicy
    attempt: int = 0  # consecutive failures since the last progress
    connections: int = 0
    budget: float = field(init=False)
    is_open: bool = False
    retry_at: float = 0.0  # earliest time of the next attempt
    failure: Failure | None = None
    reason: str | None = None  # why the next connection is made (None: first)
    _due_since: float | None = None
    _dropped: bool = False  # some open connection was lost since the last progress

    def __post_init__(self) -> None:
        self.budget = self.policy.allowance

    # ------------------------------------------------------------------ events

    def opened(self, now: float) -> None:
        """A connection is open (call before sending on it)."""
        self.is_open = True
        self.connections += 1
        self._due_since = None

    def refused(self, error: UpstreamError, now: float, rng: random.Random | None = None) -> None:
        """Opening failed (refusal or unreachable): back off, or give up."""
        self._failed(error, now, reason_of(error), rng)

    def lost(
        self, error: UpstreamError, now: float, reason: str, rng: random.Random | None = None
    ) -> None:
        """An open connection ended (dropped, closed by the server, stalled,
        a malformed frame): back off and reconnect, or give up."""
        self.is_open = False
        self._due_since = None
        self._dropped = True
        if self.failure is None:
            self.budget -= 1
        if self.budget < 0 and self.failure is None:
            self.failure = Failure(
                "upstream_unstable",
                f"{self.connections} connections, too little audio covered between drops",
            )
            return
        self._failed(error, now, reason, rng)

    def _failed(
        self, error: UpstreamError, now: float, reason: str, rng: random.Random | None
    ) -> None:
        if self.failure is not None:
            return
        self.attempt += 1
        self.reason = reason
        if not error.retriable:
            self.failure = Failure(_code_of(error), str(error))
        elif self.policy.exhausted(self.attempt):
            code = "upstream_unstable" if self._dropped else "upstream_unavailable"
            self.failure = Failure(code, f"{self.attempt - 1} attempts failed; last: {error}")
        else:
            self.retry_at = now + self.policy.delay(self.attempt, rng)

    def progressed(self, covered_s: float) -> None:
        """Finals (or a confirmed flush) covered ``covered_s`` seconds of new audio."""
        if covered_s <= 0:
            return
        self.attempt = 0
        self._dropped = False
        self.budget = min(self.policy.allowance, self.budget + covered_s / self.policy.earn_s)

    def sent(self, now: float, due: bool) -> None:
        """Something went out; ``due`` when an answer is now owed (a flush)."""
        if due and self._due_since is None:
            self._due_since = now

    def heard(self, now: float, still_due: bool) -> None:
        """The upstream sent a message; ``still_due`` when an answer is still owed."""
        self._due_since = now if still_due else None

    # ------------------------------------------------------------------ questions

    def next_attempt(self, now: float) -> float | None:
        """Seconds to wait before the next connection attempt; None when the
        link has failed (see :attr:`failure`)."""
        if self.failure is not None:
            return None
        return max(0.0, self.retry_at - now)

    def stalled(self, now: float) -> bool:
        """True when the open connection owes an answer and has been silent too long."""
        since = self._due_since
        return self.is_open and since is not None and now - since >= self.policy.stall_timeout_s


def reason_of(error: UpstreamError) -> str:
    """The ``reason`` of the next ``upstream_reconnected`` after ``error``."""
    if error.status is not None:
        return f"http_{error.status}"
    if error.close_code is not None:
        return f"closed_{error.close_code}"
    return error.reason or "connection_lost"


def _code_of(error: UpstreamError) -> str:
    if error.code:
        return error.code
    return f"http_{error.status}" if error.status else "upstream_unavailable"
