"""The worker's Faust transport: Faust's aiokafka driver, without its per-record toll.

Registered under the ``faust.transports`` entry point as ``reson8``, so the
app's broker URLs read ``reson8://host:port``; everything else (the
consumer group, rebalances, acks, commits, the producer) is Faust's own.
Two changes, each small enough to be a patch to faust-streaming:

1. **Fetching.** Faust's driver asks for ``fetch_max_wait_ms=1500`` and
   aiokafka's default ``fetch_min_bytes=1``, so a trickle of live 100 ms
   records arrives a few per fetch, and every fetch pays Faust's hop to its
   consumer thread. :class:`TransportOptions` sets both (a few ms, a few kB
   by default: at most that much latency is added).
2. **Delivery.** Faust wraps every record's callback in
   ``wait_first(callback(message), suspend_flow.wait())`` (four tasks made,
   three cancelled, per record), and its streams add a loop turn, sensors and
   an ack lock per event. For the topics in ``run_topics``, each fetched
   partition's run of consecutive records reaches the agent as **one** event
   whose value is a :class:`Run`; while flow is active the callback is
   awaited directly (``suspend_flow`` is only waited on when it is set).

Acks and commits stay exact. A run's event is Faust's message at the run's
*last* offset. The agent acks it once every record of the run is done, and
acks go in partition order (faust-streaming #606), so acking a run means
every offset up to its last is done: the consumer keeps, per partition, the
offset after the last acked run and commits that (``ack``/``_new_offset``),
instead of Faust's per-offset lists and gap intervals (whose interval tree,
rebuilt per gap, cost a fifth of the worker's CPU when runs were gaps).
Offset 0 and holes in the log (compaction, transaction markers) are
ordinary: the commit is the offset after the last done record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from faust.serializers import codecs
from faust.transport.drivers import aiokafka as driver
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from workers.assignor import StickyAssignor

__all__ = ["RUN_CODEC", "Run", "Transport", "TransportOptions"]

RUN_CODEC = "reson8-run"


@dataclass(frozen=True)
class TransportOptions:
    """What the app tells its transport (set as ``app.transport_options``)."""

    fetch_max_wait_ms: int = 5
    fetch_min_bytes: int = 1
    linger_ms: int = 0  # after a fetch that brought records, let more gather this long
    run_topics: frozenset[str] = field(default_factory=frozenset)
    assignor: str = "sticky"  # or "roundrobin"


@dataclass(slots=True)
class Run:
    """Consecutive records of one partition, oldest first (aiokafka
    ``ConsumerRecord``\\ s: ``offset``, ``key``, ``value``, ``headers``,
    ``timestamp`` in ms). Call :meth:`release` once they are handled: the
    event stays referenced until it is acked, its records' bytes need not."""

    records: Sequence[Any]
    count: int = 0

    def __post_init__(self) -> None:
        self.count = len(self.records)

    def release(self) -> None:
        self.records = ()


class _RunCodec(codecs.Codec):
    """The value codec of run topics: the :class:`Run` passes as it is."""

    def _loads(self, s: Any) -> Any:
        return s

    def _dumps(self, s: Any) -> bytes:
        raise TypeError("runs are delivered, never produced")


codecs.register(RUN_CODEC, _RunCodec())


def _options(app: Any) -> TransportOptions:
    options = getattr(app, "transport_options", None)
    return options if isinstance(options, TransportOptions) else TransportOptions()


class ConsumerThread(driver.AIOKafkaConsumerThread):
    """Faust's consumer thread with the fetch settings of :class:`TransportOptions`
    and the sticky assignor."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        options = _options(self.app)
        # Read by AIOKafkaConsumer.start() when it makes its Fetcher.
        consumer._fetch_max_wait_ms = options.fetch_max_wait_ms
        consumer._fetch_min_bytes = options.fetch_min_bytes
        # Faust picks round robin (no tables here), which reshuffles most
        # partitions at every membership change; the project's sticky
        # assignor moves only what balance needs, so most sessions stay where
        # they are (the registry keeps them across the rebalance). One
        # assignor only: aiokafka sends one JoinGroup per assignor, each with
        # a longer protocol list, and the broker takes every changed list for
        # new metadata and rebalances again (seen looping for minutes with two
        # members; aiokafka PR 1168).
        if options.assignor == "sticky":
            consumer._partition_assignment_strategy = (StickyAssignor(),)
        else:
            consumer._partition_assignment_strategy = (RoundRobinPartitionAssignor,)
        return consumer


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer, delivering runs (see the module docstring)."""

    _run_acked: dict[Any, int]  # tp -> offset after the last acked run
    _owned: set[Any]  # the partitions of the current assignment

    def __post_init__(self) -> None:
        super().__post_init__()
        self._run_acked = {}
        self._owned = set()

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        """Faust's fetch loop (``Consumer._drain_messages``), one callback per run."""
        options = _options(self.app)
        run_topics, linger_s = options.run_topics, options.linger_ms / 1000
        stopping = self._stopped.is_set
        fetcher_stopping = fetcher._stopped.is_set
        try:
            while not (stopping() or fetcher_stopping()):
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)  # let the loop breathe between fetches
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self.perform_seek()  # as Faust's getmany: back to committed
                    continue
                await self._deliver(records, active, run_topics)
                if linger_s:
                    await asyncio.sleep(linger_s)  # busy: let the next run grow
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _deliver(self, records: Any, active: Any, run_topics: frozenset[str]) -> None:
        generation = self.app.consumer_generation_id
        for tp, batch in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation:
                return  # a rebalance began: what is left is read again
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            fresh = self._unread(tp, batch)
            if not fresh:
                continue
            if tp.topic in run_topics:
                await self._deliver_run(tp, fresh)
            else:
                for record in fresh:
                    await self._call(self._to_message(tp, record))
                    self._read_offset[tp] = record.offset + 1

    def _unread(self, tp: Any, batch: Sequence[Any]) -> Sequence[Any]:
        """Records at or past the next offset to deliver. ``_read_offset`` is
        kept as the *next* offset here, as Faust's seeks set it (the committed
        offset); None (Faust's seek to 0, or nothing read yet) takes all."""
        following = self._read_offset[tp]
        if following is None:
            return batch
        return [r for r in batch if r.offset >= following]

    async def _deliver_run(self, tp: Any, run: Sequence[Any]) -> None:
        message = self._to_message(tp, run[-1])
        message.value = Run(run)  # type: ignore[assignment]
        await self._call(message)
        self._read_offset[tp] = run[-1].offset + 1

    # -- acks and commits of runs -------------------------------------------

    def ack(self, message: Any) -> bool:
        """A run's event is acked: every offset up to its last is done (acks
        of a partition come in order). Other messages: Faust's own."""
        if not isinstance(message.value, Run):
            return bool(super().ack(message))
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            tp = message.tp
            self._unacked_messages.discard(message)
            if tp not in self._owned:  # an event of an earlier assignment: not ours to commit
                return False
            following = message.offset + 1
            if following > self._run_acked.get(tp, -1):
                self._run_acked[tp] = following
            self._acked[tp]  # Faust commits the partitions it holds acks for
            self._n_acked += message.value.count
            notify(self._waiting_for_ack)
            return True

    def _new_offset(self, tp: Any) -> int | None:
        following = self._run_acked.get(tp)
        return following if following is not None else super()._new_offset(tp)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self._run_acked.pop(tp, None)
        self._owned -= set(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        self._owned = set(assigned)
        await super().on_partitions_assigned(assigned, generation_id)

    async def _call(self, message: Any) -> None:
        callback: Callable[[Any], Awaitable[None]] = self.callback
        if self.suspend_flow.is_set():
            await self.wait_first(callback(message), self.suspend_flow.wait())
        else:
            await callback(message)


class Transport(driver.Transport):
    """Faust's aiokafka transport with :class:`Consumer`; URL scheme ``reson8://``."""

    Consumer = Consumer
