"""Input time of one partition (sans-I/O): how long a session has really been quiet.

A session's producer has paused when no record of it *was written* for a
while, not when the worker has not *read* one for a while: a worker that
falls behind (overload, an agent restart, a rebalance) must never flush or end
a live session because of its own lag, or it cuts utterances in two
(issue 12). Two pieces of evidence count as input time:

- wall time while the partition is caught up (every record up to the
  high-water mark has been handled): a record written then would have been
  read at once, so a session with no record is quiet; time spent behind does
  not count, and the count starts again when the partition catches up;
- record timestamps: once records of the same partition stamped well after a
  session's last record have been handled, that session paused in input
  time, however late the worker is. ``skew_s`` absorbs clock differences
  between producers.

Feed it with :meth:`PartitionClock.record` per record and
:meth:`PartitionClock.position` whenever the high-water mark is known; ask
:meth:`PartitionClock.quiet_s` per session.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PartitionClock:
    """Input time of one partition. Times are seconds (monotonic wall, and
    record timestamps in seconds since the epoch)."""

    skew_s: float = 5.0
    _handled: int = -1  # highest offset handled
    _highwater: int | None = None  # offset after the last record in the log
    _caught_up_since: float | None = None
    _newest_stamp: float | None = None  # newest record timestamp handled

    def record(self, offset: int, timestamp_s: float | None, now: float) -> None:
        """A record at ``offset`` was handled at wall time ``now``."""
        self._handled = max(self._handled, offset)
        if timestamp_s is not None:
            newest = self._newest_stamp
            self._newest_stamp = timestamp_s if newest is None else max(newest, timestamp_s)
        self._update(now)

    def position(self, highwater: int | None, now: float) -> None:
        """The log's end offset as last seen by the consumer (None: unknown)."""
        if highwater is not None:
            self._highwater = highwater
        self._update(now)

    @property
    def caught_up(self) -> bool:
        return self._highwater is not None and self._handled + 1 >= self._highwater

    def _update(self, now: float) -> None:
        if not self.caught_up:
            self._caught_up_since = None
        elif self._caught_up_since is None:
            self._caught_up_since = now

    def quiet_s(self, last_wall: float, last_stamp_s: float | None, now: float) -> float:
        """How long, in input time, a session whose last record was handled at
        ``last_wall`` (stamped ``last_stamp_s``) has been quiet."""
        by_wall = 0.0
        if self._caught_up_since is not None:
            by_wall = now - max(last_wall, self._caught_up_since)
        by_stamp = 0.0
        if last_stamp_s is not None and self._newest_stamp is not None:
            by_stamp = self._newest_stamp - last_stamp_s - self.skew_s
        return max(0.0, by_wall, by_stamp)
