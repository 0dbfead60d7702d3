"""Top functions of a py-spy ``--format raw`` profile (collapsed stacks), pure.

Each line is ``frame;frame;...;leaf count`` with frames like
``function (path/to/file.py:123)``. Functions are keyed by name and file
(line numbers dropped), so one function's lines add up. Percentages are of
the busy samples (waiting in ``select`` or on a condition is not busy).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import PurePosixPath

from bench.results import ProfileRow

# Leaves where the event loop waits for I/O: py-spy's --nonblocking mode cannot
# always tell that the thread is idle there, so they are dropped.
IDLE_LEAVES = frozenset({"selectors.py:EpollSelector.select", "threading.py:Condition.wait"})
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """``func (site-packages/pkg/mod.py:12)`` -> ``pkg/mod.py:func``."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    parts = PurePosixPath(match["file"]).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else match["file"]
    return f"{short}:{match['func']}"


def top_functions(raw: str, limit: int = 15) -> list[ProfileRow]:
    """The ``limit`` functions with most self samples (the leaf), with self and total %."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f]
        if not frames or frames[-1] in IDLE_LEAVES:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    if not samples:
        return []
    ranked = sorted(own, key=lambda name: own[name], reverse=True)[:limit]
    return [ProfileRow(n, 100 * own[n] / samples, 100 * total[n] / samples) for n in ranked]
