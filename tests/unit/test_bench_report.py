"""bench.report, bench.profile and bench.procstat: rendering and parsing, no I/O."""

from __future__ import annotations

import math
from dataclasses import replace

from bench.procstat import Sample, cpu_between, parse_cpu_ticks, parse_rss_kib, peak_rss
from bench.profile import top_functions
from bench.report import NOTES_END, NOTES_START, kept_notes, render
from bench.results import Backfill, Ladder, Machine, Results, Step, Transcode
from bench.search import Bounds
from bench.stats import Percentiles
from bench.syscalls import parse_count

P = Percentiles(100, 2.0, 5.0, 9.0)


def _step(sessions: int, cpu: float, behind: str | None = None) -> Step:
    return Step(sessions, P, P, cpu, 100.0 + sessions / 10, 0.1, 0.2, 0.3, 0.0, behind)


def _results() -> Results:
    worker = Ladder("worker PCM", "worker", "pcm", idle_rss_mb=100.0)
    worker.steps = [_step(100, 0.5), _step(200, 1.0, "p99 300 ms > 250 ms")]
    bridge = Ladder("baseline PCM", "bridge", "pcm", idle_rss_mb=30.0)
    bridge.steps = [_step(100, 0.1), _step(200, 0.2)]
    return Results(
        Machine("make bench", 2, "Test CPU", "3.11", "4.3.1", "2026-01-01", 600.0),
        ladders=[worker, bridge],
        transcode=[Transcode("Opus", 60.0, 200.0, 400.0)],
        backfill=Backfill(10, 600.0, 6.0, 3.0),
    )


def test_ladder_figures() -> None:
    worker = _results().ladders[0]
    assert worker.best is not None
    assert worker.best.sessions == 100
    assert worker.sessions_per_core() == 200.0
    assert math.isclose(worker.rss_per_session_mb(), 0.1)
    assert worker.target_sessions(20.0) == 100


def test_report_quotes_ratios_and_keeps_notes() -> None:
    notes = f"{NOTES_START}\nhand-written\n{NOTES_END}"
    text = render(_results(), kept_notes(f"old\n{notes}\nmore"), Bounds())
    assert "| sessions per core | 200 | 1,000 | 0.20x |" in text
    assert "hand-written" in text
    assert "| Opus | 60 | 200 | 400 | 0.50x |" in text
    assert "**100 audio s per wall s**" in text
    assert "`make bench`" in text


def test_fresh_notes() -> None:
    assert kept_notes(None).startswith(NOTES_START)


def test_proc_stat_parsing() -> None:
    stat = "42 (my (odd) name) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0"
    assert parse_cpu_ticks(stat) == 300
    assert parse_rss_kib("Name:\tx\nVmRSS:\t  2048 kB\n") == 2048


def test_cpu_between_and_peak_rss() -> None:
    samples = [Sample(0.0, 1.0, 10.0), Sample(1.0, 1.5, 30.0), Sample(2.0, 2.0, 20.0)]
    assert cpu_between(samples, 0.0, 2.0) == 0.5
    assert peak_rss(samples, 0.5, 2.0) == 30.0
    assert math.isnan(cpu_between(samples, 5.0, 6.0))


def test_profile_top_functions() -> None:
    raw = "\n".join(
        [
            "main (app.py:1);handle (workers/registry.py:10);parse (schemas/envelope.py:5) 30",
            "main (app.py:1);handle (workers/registry.py:12) 10",
            "main (app.py:1);EpollSelector.select (selectors.py:468) 60",
        ]
    )
    rows = top_functions(raw)
    assert rows[0].function == "schemas/envelope.py:parse"
    assert rows[0].self_pct == 75.0  # idle select samples are left out
    handle = next(r for r in rows if r.function == "workers/registry.py:handle")
    assert (handle.self_pct, handle.total_pct) == (25.0, 100.0)


def test_requests_and_syscalls_per_record_and_broker_cost_per_session() -> None:
    step = replace(
        _step(100, 0.5),
        records=20_000,
        kafka_requests={"Fetch": 300, "Produce": 200, "OffsetCommit": 20, "Heartbeat": 10},
        syscalls=50_000.0,
    )
    assert step.requests_per_1000() == 26.5
    assert step.requests_per_1000("Fetch") == 15.0
    assert step.syscalls_per_record() == 2.5
    assert step.broker_ms_per_session() == 3.0  # 0.3 core over 100 sessions
    assert math.isnan(_step(100, 0.5).requests_per_1000())  # nothing counted: unknown, not 0


def test_the_comparison_shows_the_broker_side_at_the_largest_common_load() -> None:
    results = _results()
    for ladder, requests in zip(results.ladders, (40, 20), strict=True):
        ladder.steps = [
            replace(s, records=10_000, kafka_requests={"Fetch": requests * 10}, syscalls=1e4)
            for s in ladder.steps
        ]
    results.ladders[0].steps[1] = replace(results.ladders[0].steps[1], behind=None)
    text = render(results, "", Bounds())
    assert "| Kafka requests per 1,000 records at 200 | 40 | 20 | 2.00x |" in text
    assert "| system calls per record at 200 | 1.0 | 1.0 | 1.00x |" in text


def test_perf_stat_output_is_parsed() -> None:
    out = "Performance counter stats...\n12345,,raw_syscalls:sys_enter,1000,100.00,,\n"
    assert parse_count(out) == 12345.0
    assert math.isnan(parse_count("<not counted>,,raw_syscalls:sys_enter,0,0.00,,\n"))
    assert math.isnan(parse_count("perf: command not found"))
