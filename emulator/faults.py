"""Fault injection: misbehaviour on demand, so clients' recovery can be tested.

Faults come from the server configuration (``--fault name=value``) and, per
connection, from query parameters the real API does not have, named
``emulator_<name>``; a query value overrides the server's.

==================  =========================================================
name                effect
==================  =========================================================
drop_after_ms       after N ms of received *audio* (decoded, 16 kHz time), end
                    the connection: abort TCP (no close frame), or close with
                    ``drop_close_code`` if set. Audio beyond N ms is discarded
                    before recognition, so results are identical for any
                    chunking (deterministic in audio time).
drop_close_code     close code for ``drop_after_ms`` (default: abort, no frame)
refuse              refuse every handshake with this HTTP status (e.g. 429, 402,
                    500): the JSON error body and ``X-Error-Message`` as usual
refuse_first        refuse only the first K handshakes (status ``refuse``, or
                    503 when unset). Server-wide it counts every handshake; in
                    a query it counts handshakes with that exact path and
                    query, so a client retrying the same URL gets K refusals.
delay_ms            delay every outgoing message by N ms, keeping order
hang_after_ms       after N ms of audio go silent: stop reading (so pings get no
                    pong and further audio is not consumed) and stop sending
==================  =========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace

__all__ = ["QUERY_PREFIX", "FaultError", "Faults"]

QUERY_PREFIX = "emulator_"
DEFAULT_REFUSE_FIRST_STATUS = 503


class FaultError(ValueError):
    """A fault specification is malformed; ``param`` names it (answer 400)."""

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail


@dataclass(frozen=True)
class Faults:
    """The faults applied to one connection (all off by default)."""

    drop_after_ms: int | None = None
    drop_close_code: int | None = None
    refuse: int | None = None
    refuse_first: int | None = None
    delay_ms: int = 0
    hang_after_ms: int | None = None

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Faults:
        """Build from CLI ``name=value`` strings; raises :class:`FaultError`."""
        values: dict[str, str] = {}
        for spec in specs:
            name, sep, value = spec.partition("=")
            if not sep:
                raise FaultError(spec, "expected name=value")
            values[name.strip()] = value.strip()
        return cls().merged(values)

    def merged(self, values: Mapping[str, str], prefix: str = "") -> Faults:
        """Return a copy with ``values`` (names after ``prefix``) applied.

        Names not starting with ``prefix`` are ignored; an unknown fault name
        with the prefix raises :class:`FaultError`.
        """
        known = {f.name for f in fields(self)}
        changes: dict[str, int | None] = {}
        for raw_name, raw in values.items():
            if not raw_name.startswith(prefix):
                continue
            name = raw_name[len(prefix) :]
            if name not in known:
                raise FaultError(raw_name, "unknown fault")
            changes[name] = _integer(raw_name, raw)
            if name == "refuse" and not 400 <= (changes[name] or 0) <= 599:
                raise FaultError(raw_name, "must be an HTTP error status (400..599)")
        return replace(self, **changes)  # type: ignore[arg-type]

    def from_query(self, query: Mapping[str, str]) -> Faults:
        """Apply the ``emulator_*`` parameters of a handshake query."""
        return self.merged(query, QUERY_PREFIX)

    @property
    def refuse_status(self) -> int:
        """Status used by ``refuse_first`` (``refuse`` or 503)."""
        return self.refuse if self.refuse is not None else DEFAULT_REFUSE_FIRST_STATUS


def _integer(name: str, raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise FaultError(name, "must be an integer") from None
    if value < 0:
        raise FaultError(name, "must not be negative")
    return value
