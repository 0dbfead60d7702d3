"""The in-order offset ledger of one partition (sans-I/O).

Every record of a partition is :meth:`~OffsetLedger.add`\\ ed in offset order
with its owner (a session id, or None) and an opaque handle (what the
transport needs to ack it). A record is *done* when nothing more is owed for
it: it was skipped, its dead letter is durable (:meth:`~OffsetLedger.done`),
or its owner's durable checkpoint has passed it (:meth:`~OffsetLedger.release`).

:meth:`~OffsetLedger.ready` pops the handles of the done prefix, in offset
order: those may be acked, and the partition committed up to the first record
that is not done (:attr:`~OffsetLedger.commit_offset`). Acks go in order
because faust-streaming 0.15 can skip an in-flight offset when acks arrive
out of order (faust-streaming #606); offsets need not be contiguous
(compacted or transactional topics leave gaps).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    offset: int
    owner: Hashable | None
    handle: object
    done: bool = False
    held: bool = False  # a dead letter is in flight: only done() finishes it


class OffsetLedger:
    """What is done and what may be acked on one partition. No I/O."""

    def __init__(self) -> None:
        self._entries: deque[_Entry] = deque()
        self._by_offset: dict[int, _Entry] = {}
        self._by_owner: dict[Hashable, deque[_Entry]] = {}
        self._next = -1  # offset after the last record popped by ready()

    def __len__(self) -> int:
        """Records added and not yet popped by :meth:`ready`."""
        return len(self._entries)

    def add(self, offset: int, owner: Hashable | None, handle: object = None) -> None:
        """Track a record. Offsets must increase; raises ``ValueError`` otherwise."""
        last = self._entries[-1].offset if self._entries else self._next - 1
        if offset <= last:
            raise ValueError(f"offset {offset} is not after {last}")
        entry = _Entry(offset, owner, handle)
        self._entries.append(entry)
        self._by_offset[offset] = entry
        if owner is not None:
            self._by_owner.setdefault(owner, deque()).append(entry)

    def __contains__(self, offset: object) -> bool:
        return offset in self._by_offset

    def hold(self, offset: int) -> None:
        """Something is in flight for this record (its dead letter): its owner's
        :meth:`release` does not finish it, only :meth:`done` does."""
        entry = self._by_offset.get(offset)
        if entry is not None and not entry.done:
            entry.held = True

    def done(self, offset: int) -> None:
        """The record at ``offset`` needs nothing more (unknown offsets are ignored)."""
        entry = self._by_offset.get(offset)
        if entry is not None:
            entry.done, entry.held = True, False

    def release(self, owner: Hashable, before: int | None = None) -> None:
        """Every record of ``owner`` below ``before`` (all of them when None) is done."""
        pending = self._by_owner.get(owner)
        if pending is None:
            return
        while pending and (before is None or pending[0].offset < before):
            entry = pending.popleft()
            entry.done = entry.done or not entry.held
        if not pending:
            del self._by_owner[owner]

    def pending_of(self, owner: Hashable) -> int:
        """How many records of ``owner`` may still be waiting (for tests and metrics)."""
        return sum(1 for e in self._by_owner.get(owner, ()) if not e.done)

    def ready(self) -> list[object]:
        """Pop the handles of the done prefix, in offset order: ack them now."""
        out: list[object] = []
        entries = self._entries
        while entries and entries[0].done:
            entry = entries.popleft()
            del self._by_offset[entry.offset]
            self._next = entry.offset + 1
            if entry.owner is not None:
                self._drop_owned(entry)
            out.append(entry.handle)
        return out

    def _drop_owned(self, entry: _Entry) -> None:
        pending = self._by_owner.get(entry.owner)
        if pending and pending[0] is entry:
            pending.popleft()
            if not pending:
                del self._by_owner[entry.owner]

    @property
    def commit_offset(self) -> int | None:
        """The offset to commit (first record not done), None before any record."""
        if self._entries:
            return self._entries[0].offset
        return None if self._next < 0 else self._next
