"""Checkpoints of live sessions, entries of finished ones, and orphans.

:class:`Checkpointer` writes a session's checkpoint once its durable
coverage moved, and only then lets the session's records below it go
(``on_saved(session, offset)``: the registry releases them in the ledger and
acks): never the other way round (ARCHITECTURE.md, "Delivery").

A finished session gets a closing entry (``ended``/``failed``): its records
are all released, and the entry is deleted (tombstone) once the committed
offset has passed them. Checkpoints of sessions that progressed are
gathered for ``interval_s`` and written together: a takeover may then
re-emit the finals of that window (same event ids).

A checkpoint inherited from another worker whose
session never sends again (an *orphan*) is ended here after the idle timeout
in input time, with the ``session_ended`` its previous owner would have sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol

from schemas.events import SessionEvent, event_id
from workers.checkpoint import Checkpoint
from workers.publisher import Publisher
from workers.session import Session
from workers.source import stream_rate
from workers.telemetry import Telemetry

log = logging.getLogger(__name__)

OnSaved = Callable[[Session, int | None], Awaitable[None]]


class CheckpointStore(Protocol):
    """The per-session checkpoint table (``workers.checkpoint_log`` in the worker)."""

    def get(self, session_id: str) -> Checkpoint | None: ...

    def values(self) -> list[Checkpoint]: ...

    async def put(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint``; return once it is durable (acknowledged by the broker)."""

    async def delete(self, partition: int, session_id: str) -> None:
        """Drop the entry (a tombstone in the changelog)."""


class MemoryCheckpoints:
    """A :class:`CheckpointStore` in a dict (tests, and nothing to resume from)."""

    def __init__(self) -> None:
        self.data: dict[str, Checkpoint] = {}

    def get(self, session_id: str) -> Checkpoint | None:
        return self.data.get(session_id)

    def values(self) -> list[Checkpoint]:
        return list(self.data.values())

    async def put(self, checkpoint: Checkpoint) -> None:
        self.data[checkpoint.session_id] = checkpoint

    async def delete(self, partition: int, session_id: str) -> None:
        self.data.pop(session_id, None)


class Checkpointer:
    """See the module docstring. :meth:`due` a session after progress; run
    :meth:`run` as a task; :meth:`close` a finished session; call
    :meth:`expire` periodically."""

    def __init__(
        self,
        store: CheckpointStore,
        publisher: Publisher,
        telemetry: Telemetry,
        on_saved: OnSaved,
        *,
        upstream_rate: int = 16000,
        idle_timeout_s: float = 300.0,
        interval_s: float = 0.0,
    ) -> None:
        self.store = store
        self._interval_s = interval_s
        self._publisher = publisher
        self._telemetry = telemetry
        self._on_saved = on_saved
        self._rate = upstream_rate
        self._idle_timeout_s = idle_timeout_s
        self._dirty: dict[int, Session] = {}
        self._wake = asyncio.Event()
        self._tombstones: dict[str, tuple[int, int]] = {}  # session -> (partition, end offset)
        self._last_scan = float("-inf")  # orphans are looked for now and then, not every tick
        self._held: set[int] = set()  # revoked partitions, the new assignment not yet known
        self._closing: dict[str, Session] = {}  # sessions that ended on a held partition

    # ------------------------------------------------------------------ live sessions

    def due(self, session: Session) -> None:
        """``session`` made durable progress: write its checkpoint soon."""
        self._dirty[id(session)] = session
        self._wake.set()

    async def run(self) -> None:
        """Background task: write the checkpoints of sessions that made progress,
        gathered over ``interval_s`` so that one produce request carries many
        (the broker's cost is per request; a checkpoint per final doubled it)."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._interval_s)  # the gathering window, by design
            self._wake.clear()
            dirty = [s for s in self._dirty.values() if s.partition not in self._held]
            self._dirty = {k: s for k, s in self._dirty.items() if s.partition in self._held}
            await self.save_all(dirty)

    async def save_all(self, sessions: Iterable[Session]) -> None:
        """Checkpoint many sessions at once; a failed write only delays that
        session's acks (it is written again on its next progress)."""
        live = [s for s in sessions if not s.finished]
        results = await asyncio.gather(*(self.save(s) for s in live), return_exceptions=True)
        for session, result in zip(live, results, strict=True):
            if isinstance(result, Exception):
                log.warning("checkpoint of session %s failed: %r", session.session_id, result)

    async def save(self, session: Session) -> None:
        """Write ``session``'s checkpoint if its position moved, then release
        its records below it."""
        session.dirty = False
        checkpoint = session.checkpoint()
        if checkpoint is None:
            return
        if not checkpoint.same_position(session.checkpointed):
            await self._put(checkpoint)
            session.on_checkpointed(checkpoint)
        await self._on_saved(session, session.ack_before)

    async def _put(self, checkpoint: Checkpoint) -> None:
        """Write a session's checkpoint, timed (``checkpoint_written``)."""
        started = time.monotonic()
        await self.store.put(checkpoint)
        self._telemetry.checkpoint_written(time.monotonic() - started)

    async def close(self, session: Session) -> None:
        """``session`` is over and its events published: write its closing
        entry, then release all its records (once its partition is known to
        stay here, when it is held)."""
        if session.partition in self._held:
            self._closing[session.session_id] = session
            return
        entry = session.closing_checkpoint()
        await self._put(entry)
        self._tombstones[session.session_id] = (session.partition, entry.offset)
        await self._on_saved(session, None)

    # ------------------------------------------------------------------ housekeeping

    async def expire(
        self,
        committed: Callable[[int], int | None],
        orphan_quiet: Callable[[Checkpoint], float | None],
        live: Callable[[str], bool],
    ) -> None:
        """Delete closing entries the commit has passed; end orphans quiet for
        the idle timeout. ``orphan_quiet(entry)`` is how long (input time) the
        entry's partition has been quiet for it, None when not owned here."""
        jobs = [self._tombstone(sid, entry) for sid, entry in self._due(committed)]
        now = time.monotonic()
        if now - self._last_scan >= min(30.0, self._idle_timeout_s / 4):
            self._last_scan = now
            jobs += self._orphans(orphan_quiet, live)
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.warning("checkpoint housekeeping failed: %r", result)

    def _due(self, committed: Callable[[int], int | None]) -> list[tuple[str, tuple[int, int]]]:
        """Closing entries whose records the committed offset has passed."""
        due = []
        for session_id, (partition, offset) in self._tombstones.items():
            position = committed(partition)
            if position is not None and position >= offset:
                due.append((session_id, (partition, offset)))
        for session_id, _ in due:
            del self._tombstones[session_id]
        return due

    def _orphans(
        self, orphan_quiet: Callable[[Checkpoint], float | None], live: Callable[[str], bool]
    ) -> list[Coroutine[Any, Any, None]]:
        jobs = []
        for saved in self.store.values():
            if live(saved.session_id):
                continue
            quiet = orphan_quiet(saved)
            if quiet is None:
                continue
            if saved.closed:
                self._tombstones.setdefault(saved.session_id, (saved.partition, saved.offset))
            elif quiet >= self._idle_timeout_s:
                jobs.append(self._end_orphan(saved))
        return jobs

    async def _tombstone(self, session_id: str, entry: tuple[int, int]) -> None:
        partition, offset = entry
        saved = self.store.get(session_id)
        if saved is not None and saved.closed and saved.offset == offset:
            await self.store.delete(partition, session_id)

    async def _end_orphan(self, saved: Checkpoint) -> None:
        """A resumed-from checkpoint whose session sent nothing more: it ended
        idle on its previous owner's watch. Emit what that owner would have."""
        finals = saved.prior_finals + sum(s.finals for s in saved.streams)
        reconnects = saved.prior_reconnects + sum(s.reconnects for s in saved.streams)
        rate = stream_rate(saved.config, self._rate)
        await self._publisher.event(
            SessionEvent(
                event_id=event_id(saved.session_id, None, 0, "session_ended"),
                session_id=saved.session_id,
                type="session_ended",
                audio_seconds=round(max((s.covered for s in saved.streams), default=0) / rate, 3),
                finals=finals,
                reconnects=reconnects,
                detail="idle timeout (taken over from another worker)",
            ),
            None,
        )
        await self.store.put(saved.model_copy(update={"state": "ended", "updated_at": time.time()}))
        self._tombstones[saved.session_id] = (saved.partition, saved.offset)

    # ------------------------------------------------------------------ rebalances

    def hold(self, partitions: set[int]) -> None:
        """A rebalance revoked ``partitions`` (their checkpoints just written):
        write nothing more for them until :meth:`release` (they stayed) or
        :meth:`forget` (they moved). A write of the old owner landing after
        the new owner's own would set the session back behind offsets that
        the new owner may already have committed."""
        self._held |= partitions

    async def release(self, partitions: set[int]) -> None:
        """Held partitions came back: write what waited."""
        self._held -= partitions
        ended = [s for s in self._closing.values() if s.partition in partitions]
        for session in ended:
            del self._closing[session.session_id]
            await self.close(session)
        if any(s.partition in partitions for s in self._dirty.values()):
            self._wake.set()

    def forget(self, partitions: set[int]) -> None:
        """Partitions moved to another worker: their entries are the next owner's."""
        self._held -= partitions
        for session_id, (partition, _) in list(self._tombstones.items()):
            if partition in partitions:
                del self._tombstones[session_id]
        self._dirty = {k: s for k, s in self._dirty.items() if s.partition not in partitions}
        self._closing = {k: s for k, s in self._closing.items() if s.partition not in partitions}
