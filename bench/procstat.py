"""CPU time and memory of a process, from ``/proc/<pid>/stat`` and ``status``.

``/proc/<pid>/stat`` counts every thread of the process (the worker's decode
threads included), in clock ticks; the parsers are pure, the readers return
None once the process is gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_cpu_ticks(stat: str) -> int:
    """utime + stime of a ``/proc/<pid>/stat`` line.

    The command name (field 2) is in parentheses and may hold spaces, so the
    fields are counted after the last ``)``: utime and stime are fields 14, 15.
    """
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def parse_rss_kib(status: str) -> int:
    """``VmRSS`` of a ``/proc/<pid>/status`` text, in KiB (0 if absent)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Sample:
    """One reading: wall time, CPU seconds so far, resident memory (MB)."""

    at: float
    cpu_s: float
    rss_mb: float


def read(pid: int, at: float) -> Sample | None:
    """Read ``pid`` now (``at`` = the caller's wall time); None if it has exited."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = parse_cpu_ticks(f.read())
        with open(f"/proc/{pid}/status") as f:
            rss = parse_rss_kib(f.read())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return Sample(at, ticks / CLOCK_TICKS, rss / 1024)


def cpu_between(samples: list[Sample], start: float, end: float) -> float:
    """Cores used between ``start`` and ``end`` (CPU seconds per wall second),
    from the samples closest inside the interval; NaN with fewer than two."""
    inside = [s for s in samples if start <= s.at <= end]
    if len(inside) < 2 or inside[-1].at <= inside[0].at:
        return float("nan")
    return (inside[-1].cpu_s - inside[0].cpu_s) / (inside[-1].at - inside[0].at)


def peak_rss(samples: list[Sample], start: float, end: float) -> float:
    """Largest RSS (MB) seen between ``start`` and ``end`` (NaN if none)."""
    inside = [s.rss_mb for s in samples if start <= s.at <= end]
    return max(inside) if inside else float("nan")
