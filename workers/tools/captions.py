"""Live captions from the output topics, as text: pure, no I/O.

Feed each consumed event to :meth:`CaptionRenderer.feed` and write the
returned string as is (it may be empty). On a terminal (``tty=True``) the
newest interim (or turn-end candidate) is the last line, rewritten in place
with carriage return + erase-line; finals and turn ends are committed above it
with ``[mm:ss.s]`` timestamps and channel labels; session events are dimmed.
Without a terminal only committed lines are written, with no escape codes.
Call :meth:`CaptionRenderer.close` at the end to clear a pending live line.
"""

from __future__ import annotations

import json

from schemas.events import SessionEvent, TranscriptEvent, TurnEvent

__all__ = ["CaptionRenderer", "json_line", "timestamp"]

Event = TranscriptEvent | TurnEvent | SessionEvent

DIM = "\x1b[2m"
BOLD = "\x1b[1m"
RED = "\x1b[31m"
RESET = "\x1b[0m"
ERASE = "\r\x1b[2K"


def timestamp(ms: int | None) -> str:
    """``[mm:ss.s]`` of a session-absolute time (``[--:--.-]`` when unknown)."""
    if ms is None:
        return "[--:--.-]"
    minutes, rest = divmod(max(ms, 0), 60_000)
    return f"[{minutes:02d}:{rest / 1000:04.1f}]"


def json_line(topic: str, event: Event) -> str:
    """One JSON object per line: the event's fields plus ``topic``."""
    data = event.model_dump(mode="json")
    data["topic"] = topic
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _who(event: Event) -> str:
    """``session`` or ``session agent`` (the label, else ``ch1`` in split mode)."""
    if event.label:
        return f"{event.session_id} {event.label}"
    if event.channel is not None:
        return f"{event.session_id} ch{event.channel}"
    return event.session_id


def _fit(text: str, width: int) -> str:
    """The live line must not wrap: erase-line only clears the last screen row."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


class CaptionRenderer:
    """Turns events into terminal text; keeps at most one live (rewritable) line."""

    def __init__(self, *, tty: bool, width: int = 100) -> None:
        self.tty = tty
        self.width = max(width, 20)
        self._live: dict[tuple[str, int | None], str] = {}
        self._shown: str | None = None  # the live line currently on screen

    def feed(self, event: Event) -> str:
        """The text to write for ``event`` (committed lines, then the live line)."""
        committed, live_key, live_text = self._lines(event)
        if live_key is not None:
            self._live.pop(live_key, None)  # re-inserted last: the newest is shown
            if live_text:
                self._live[live_key] = _fit(live_text, self.width - 1)
        return self._compose(committed)

    def close(self) -> str:
        """Text that leaves the terminal clean (erases a pending live line)."""
        self._live.clear()
        return self._compose([])

    # -- what each event means ---------------------------------------------------------

    def _lines(self, event: Event) -> tuple[list[str], tuple[str, int | None] | None, str]:
        key = (event.session_id, event.channel)
        if isinstance(event, TranscriptEvent):
            return self._transcript(event, key)
        if isinstance(event, TurnEvent):
            return self._turn(event, key)
        return [self._session(event)], None, ""

    def _transcript(
        self, event: TranscriptEvent, key: tuple[str, int | None]
    ) -> tuple[list[str], tuple[str, int | None], str]:
        if not event.is_final:
            return [], key, f"{timestamp(event.start_ms)} {_who(event)}: {event.text} …"
        if not event.text.strip():
            return [], key, ""
        return [f"{timestamp(event.start_ms)} {_who(event)}: {self._bold(event.text)}"], key, ""

    def _turn(
        self, event: TurnEvent, key: tuple[str, int | None]
    ) -> tuple[list[str], tuple[str, int | None], str]:
        number = event.turn_index + 1
        if event.type == "turn_start":
            return [self._dim(f"── {_who(event)} turn {number} ──")], key, ""
        if event.type == "turn_end_candidate":
            return [], key, f"{timestamp(event.start_ms)} {_who(event)}: {event.text or ''} …"
        if event.type == "turn_continuation":
            return [], key, f"{_who(event)}: (turn {number} continues) …"
        text = self._bold(event.text or "")
        return [f"{timestamp(event.start_ms)} {_who(event)}: {text}  ⏎ turn end"], key, ""

    def _session(self, event: SessionEvent) -> str:
        details = {
            "upstream_connected": f"{event.endpoint} {event.encoding} {event.sample_rate} Hz",
            "upstream_reconnected": f"reason {event.reason}",
            "session_ended": f"{event.audio_seconds or 0:.1f} s audio, {event.finals} finals, "
            f"{event.reconnects} reconnects",
            "session_failed": f"{event.code}: {event.detail}",
            "session_warning": f"{event.code}: {event.detail}",
        }.get(event.type, "")
        line = f"· {_who(event)} {event.type}" + (f" ({details})" if details else "")
        if event.type == "session_failed" and self.tty:
            return f"{RED}{line}{RESET}"
        return self._dim(line)

    # -- terminal composition ------------------------------------------------------------

    def _compose(self, committed: list[str]) -> str:
        if not self.tty:
            return "".join(line + "\n" for line in committed)
        newest = next(reversed(self._live.values()), None) if self._live else None
        if not committed and newest == self._shown:
            return ""
        out = ERASE if self._shown is not None else ""
        out += "".join(line + "\n" for line in committed)
        if newest is not None:
            out += newest
        self._shown = newest
        return out

    def _dim(self, text: str) -> str:
        return f"{DIM}{text}{RESET}" if self.tty else text

    def _bold(self, text: str) -> str:
        return f"{BOLD}{text}{RESET}" if self.tty else text
