"""The checkpoint table on the compacted ``stt.checkpoints`` topic.

Key: session id; value: a :class:`~workers.checkpoint.Checkpoint` (JSON), or a
tombstone. Entry ``k`` lives on the partition of ``stt.audio`` that carries
session ``k`` (co-partitioned), so the owner of an audio partition owns its
checkpoints.

Why not a Faust table: Faust only writes table entries from inside stream
iteration (checkpoints are written from timers and rebalance callbacks), and
its changelog recovery hung in our rebalance tests when a worker was assigned
a changelog partition it had itself been writing ("No event received for
active tp", the faust-streaming recovery issues #155/#176/#597 family). This
log does one thing: on assignment it reads its partitions from the start to
the end offsets seen then, and the registry holds those partitions' records
until that is done.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from topology.connection import KafkaSettings, client_kwargs
from workers.checkpoint import Checkpoint

log = logging.getLogger(__name__)

Send = Callable[[str, bytes, bytes | None, int], Awaitable[None]]


class CheckpointLog:
    """A :class:`workers.registry.CheckpointStore` on a compacted topic."""

    def __init__(self, topic: str, send: Send, kafka: KafkaSettings) -> None:
        self.topic = topic
        self._send = send
        self._kafka = kafka
        self._data: dict[str, Checkpoint] = {}
        self._consumer: Any = None

    # ------------------------------------------------------------------ the store

    def get(self, session_id: str) -> Checkpoint | None:
        return self._data.get(session_id)

    def values(self) -> list[Checkpoint]:
        return list(self._data.values())

    async def put(self, checkpoint: Checkpoint) -> None:
        self._data[checkpoint.session_id] = checkpoint
        await self._send(
            self.topic, checkpoint.session_id.encode(), checkpoint.to_bytes(), checkpoint.partition
        )

    async def delete(self, partition: int, session_id: str) -> None:
        self._data.pop(session_id, None)
        await self._send(self.topic, session_id.encode(), None, partition)

    # ------------------------------------------------------------------ assignment

    async def load(self, partitions: set[int]) -> int:
        """Read ``partitions`` of the topic from the start up to their current
        end; returns the number of live entries found."""
        if not partitions:
            return 0
        consumer = await self._reader()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends: dict[Any, int] = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    self._apply(record.key, record.value, tp.partition)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return sum(1 for c in self._data.values() if c.partition in partitions)

    def _apply(self, key: bytes | None, value: bytes | None, partition: int) -> None:
        if not key:
            return
        session_id = key.decode("utf-8", "replace")
        if value is None:
            self._data.pop(session_id, None)
            return
        try:
            checkpoint = Checkpoint.from_bytes(value)
        except ValueError:
            log.warning("ignoring an unreadable checkpoint of session %s", session_id)
            return
        if checkpoint.partition == partition:
            self._data[session_id] = checkpoint

    def forget(self, partitions: set[int]) -> None:
        """Drop the entries of partitions this worker no longer owns."""
        for session_id, checkpoint in list(self._data.items()):
            if checkpoint.partition in partitions:
                del self._data[session_id]

    async def _reader(self) -> Any:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                **client_kwargs(self._kafka),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
            )
            await self._consumer.start()
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
