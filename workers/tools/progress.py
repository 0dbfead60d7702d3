"""Progress of ``send``: one bar per file on a terminal, plain periodic lines otherwise.

:func:`bar_line` is pure. :class:`Progress` owns the output stream: call
:meth:`Progress.update` as often as you like (it throttles itself) and
:meth:`Progress.finish` once, after the last file is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

__all__ = ["FileProgress", "Progress", "bar_line"]

TTY_INTERVAL_S = 0.1
PLAIN_INTERVAL_S = 5.0


@dataclass
class FileProgress:
    """How far one file is: seconds of audio sent out of ``total_s``."""

    label: str
    total_s: float
    sent_s: float = 0.0
    done: bool = False


def bar_line(item: FileProgress, width: int = 24) -> str:
    """``label  [#########.......]  3.2/12.0 s  27%`` (``done`` when finished)."""
    fraction = 1.0 if item.total_s <= 0 else min(1.0, item.sent_s / item.total_s)
    filled = round(fraction * width)
    bar = "#" * filled + "." * (width - filled)
    status = "done" if item.done else f"{fraction:4.0%}"
    return f"{item.label}  [{bar}] {item.sent_s:6.1f}/{item.total_s:.1f} s  {status}"


class Progress:
    """Renders :class:`FileProgress` items to ``stream``.

    On a TTY the block of bars is redrawn in place (cursor up, erase line);
    otherwise one plain line per file every ``PLAIN_INTERVAL_S`` seconds and
    when it completes, so logs stay readable.
    """

    def __init__(
        self,
        items: Sequence[FileProgress],
        stream: TextIO,
        *,
        tty: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.items = list(items)
        self._stream = stream
        self._tty = tty
        self._clock = clock
        self._drawn = 0
        self._last = -1e9
        self._reported_done: set[int] = set()

    def update(self, *, force: bool = False) -> None:
        """Redraw if enough time has passed (or ``force``)."""
        now = self._clock()
        interval = TTY_INTERVAL_S if self._tty else PLAIN_INTERVAL_S
        if self._tty:
            if force or now - self._last >= interval:
                self._redraw()
                self._last = now
            return
        self._plain(now - self._last >= interval or force)
        if now - self._last >= interval:
            self._last = now

    def finish(self) -> None:
        """Final state of every bar; call once at the end."""
        self.update(force=True)
        self._stream.flush()

    def _redraw(self) -> None:
        out = f"\x1b[{self._drawn}F" if self._drawn else ""
        out += "".join(f"\x1b[2K{bar_line(item)}\n" for item in self.items)
        self._stream.write(out)
        self._stream.flush()
        self._drawn = len(self.items)

    def _plain(self, periodic: bool) -> None:
        for index, item in enumerate(self.items):
            if index in self._reported_done:
                continue
            if item.done:
                self._reported_done.add(index)
            if item.done or (periodic and item.sent_s > 0):
                self._stream.write(bar_line(item) + "\n")
        self._stream.flush()
