"""PartitionClock: a pause is judged in input time, never by the worker's own lag."""

from __future__ import annotations

from workers.clock import PartitionClock


def test_caught_up_wall_time_counts_from_the_last_record() -> None:
    clock = PartitionClock()
    clock.record(9, None, now=100.0)
    clock.position(10, now=100.0)  # record 9 was the last: caught up
    assert clock.caught_up
    assert clock.quiet_s(last_wall=100.0, last_stamp_s=None, now=103.0) == 3.0


def test_time_spent_behind_never_counts() -> None:
    clock = PartitionClock()
    clock.record(9, None, now=100.0)
    clock.position(50, now=100.5)  # 40 records wait: the worker is behind
    assert not clock.caught_up
    assert clock.quiet_s(last_wall=100.0, last_stamp_s=None, now=130.0) == 0.0
    clock.record(49, None, now=131.0)
    clock.position(50, now=131.0)  # caught up again: the count starts now
    assert clock.quiet_s(last_wall=100.0, last_stamp_s=None, now=132.0) == 1.0


def test_later_stamps_on_the_partition_prove_a_pause_even_when_behind() -> None:
    clock = PartitionClock(skew_s=5.0)
    clock.record(1, 1000.0, now=10.0)  # the session's last record, stamped 1000
    clock.record(2, 1030.0, now=10.1)  # another producer, 30 s later
    clock.position(500, now=10.1)  # far behind
    quiet = clock.quiet_s(last_wall=10.0, last_stamp_s=1000.0, now=10.2)
    assert quiet == 25.0  # 30 s of input time, less the skew allowance


def test_a_live_session_on_a_lagging_partition_is_never_quiet() -> None:
    clock = PartitionClock()
    for i in range(100):  # 100 ms records, read 10 s late
        clock.record(i, 1000.0 + i * 0.1, now=50.0 + i * 0.001)
    clock.position(1000, now=50.2)
    assert clock.quiet_s(last_wall=50.099, last_stamp_s=1009.9, now=60.0) == 0.0


def test_unknown_high_water_is_not_caught_up() -> None:
    clock = PartitionClock()
    clock.record(3, None, now=1.0)
    clock.position(None, now=2.0)
    assert not clock.caught_up
    assert clock.quiet_s(last_wall=1.0, last_stamp_s=None, now=9.0) == 0.0
