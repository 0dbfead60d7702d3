"""System calls of a process over a window, counted by the kernel (``perf stat``
on the ``raw_syscalls:sys_enter`` tracepoint, every thread of the process).

Counting in the kernel costs the process nothing measurable (no ptrace).
Where ``perf`` is missing or not permitted, the figure is NaN and the report
says so.
"""

from __future__ import annotations

import asyncio
import math
import shutil

EVENT = "raw_syscalls:sys_enter"


def parse_count(perf_csv: str) -> float:
    """The count from ``perf stat -x,`` output (NaN when perf could not count)."""
    for line in perf_csv.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == EVENT:
            try:
                return float(fields[0])
            except ValueError:
                return math.nan  # "<not counted>" / "<not supported>"
    return math.nan


async def count(pid: int, seconds: float) -> float:
    """System calls ``pid`` makes during the next ``seconds``."""
    perf = shutil.which("perf")
    if perf is None:
        return math.nan
    proc = await asyncio.create_subprocess_exec(
        perf, "stat", "-x,", "-e", EVENT, "-p", str(pid), "--", "sleep", str(seconds),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    return parse_count(err.decode(errors="replace"))
