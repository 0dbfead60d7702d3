"""One session (sans-I/O): inputs in, what to send, emit and acknowledge out.

A :class:`Session` is fed

- input records (:meth:`~Session.on_record`) in offset order,
- upstream link events (:meth:`~Session.on_connected`,
  :meth:`~Session.on_connect_failed`, :meth:`~Session.on_message`,
  :meth:`~Session.on_closed`),
- acknowledgements of what it emitted (:meth:`~Session.on_published`) and of
  its checkpoints (:meth:`~Session.on_checkpointed`),
- the time (:meth:`~Session.tick`, with how long the input has been quiet in
  input time, see ``workers.clock``),

and answers, with no I/O and no clock of its own:

- what each upstream link sends (:meth:`~Session.outgoing`), when it
  (re)connects (:meth:`~Session.connect_delay`) and which links to close
  (:meth:`~Session.take_closes`);
- what to publish, in order (:meth:`~Session.take_outputs`), and which input
  records to dead-letter (:meth:`~Session.take_rejected`);
- its checkpoint (:meth:`~Session.checkpoint`) and the offset below which its
  records may be acknowledged (:attr:`~Session.ack_before`).

After every input, the caller services those outputs (``workers.pump``).

A session has one *epoch* per configuration: a record whose configuration
headers change starts a new epoch (a :class:`~workers.source.Source` with its
own streams and links) at the session time reached; the previous one is
flushed and closed once its audio is covered (ARCHITECTURE.md, "Input").

Lifecycle: ``open`` -> ``ending`` (an ``end`` record, an idle timeout, or
undecodable audio: flush, wait for the finals) -> ``ended`` or ``failed``
(an upstream refusal or an unstable upstream fails at once).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.envelope import RecordHeaders, SessionConfig
from schemas.events import SessionEvent, TranscriptEvent, event_id
from schemas.wire import FlushRequest, ServerMessage, StreamParams
from workers.checkpoint import Checkpoint
from workers.errors import InputError, UpstreamError
from workers.link import Failure, Link, RetryPolicy
from workers.source import Rejected, Source
from workers.stream import ChannelStream, Durable, Event

State = Literal["open", "ending", "ended", "failed"]
LinkKey = tuple[int, int]  # (epoch number, stream index)
INPUT_BUDGET_S = 0.02  # longest wait for the decoder per step (the loop is not blocked longer)


@dataclass(frozen=True)
class SessionPolicy:
    """The timing and bounds of sessions (from ``workers.settings``)."""

    upstream_rate: int = 16000
    idle_flush_s: float = 2.0
    idle_timeout_s: float = 300.0
    max_uncovered_s: float = 30.0
    silence_flush_after_s: float = 5.0
    silence_flush_ms: int = 300
    end_timeout_s: float = 10.0
    g711_upstream: bool = False  # send mu-law/A-law to realtime untouched (else pcm_s16le)
    max_held_s: float = 60.0  # decode no further while a stream holds this much uncovered
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class Output:
    """One thing to publish, in order: an event, and/or coverage that becomes
    durable once everything before it (and the event) is acknowledged."""

    event: Event | None = None
    durable: tuple[LinkKey, Durable] | None = None


@dataclass
class _Epoch:
    number: int
    source: Source
    links: dict[int, Link] = field(default_factory=dict)
    retiring: bool = False
    closed: bool = False


@dataclass
class _Ending:
    since: float | None = None  # when the input was complete (None: still decoding)
    failure: Failure | None = None  # end as session_failed with this, else session_ended


class Session:
    """One session's state. See the module docstring for the protocol."""

    def __init__(
        self,
        session_id: str,
        partition: int,
        policy: SessionPolicy,
        *,
        config: SessionConfig | None = None,
        resume: Checkpoint | None = None,
        now: float = 0.0,
    ) -> None:
        self.session_id = session_id
        self.partition = partition
        self.policy = policy
        self.state: State = "open"
        self.failure: Failure | None = None
        self.resumed = resume is not None
        self._resume_offset = resume.offset if resume is not None else -1
        self._prior_finals = resume.prior_finals if resume is not None else 0
        self._prior_reconnects = resume.prior_reconnects if resume is not None else 0
        self._epochs: list[_Epoch] = []
        self._outbox: deque[Output] = deque()
        self._rejected: list[Rejected] = []
        self._closes: list[tuple[LinkKey, str]] = []
        self._ending: _Ending | None = None
        self.last_offset = -1
        self.last_input = now  # wall time of the last record (input-time bookkeeping)
        self.last_stamp: float | None = None  # its timestamp (seconds)
        self._last_exchange = now  # the last frame sent or message heard upstream
        self.ack_before = -1  # records below may be acked (moved by on_checkpointed)
        self.checkpointed: Checkpoint | None = resume
        self.dirty = False  # progress since the last checkpoint
        self.links_created = 0  # links of every epoch so far (the pump starts each once)
        self._sent_at: dict[LinkKey, deque[tuple[int, float]]] = {}
        self._latencies: list[float] = []
        if resume is not None:
            self._new_epoch(resume.config, resume.config_start_ms, resume)
        else:
            self._new_epoch(config or SessionConfig(), 0, None)
            self._lifecycle("session_started", endpoint=self.config.endpoint)

    # ------------------------------------------------------------------ epochs

    @property
    def config(self) -> SessionConfig:
        return self._epochs[-1].source.config

    @property
    def _current(self) -> _Epoch:
        return self._epochs[-1]

    def _new_epoch(self, config: SessionConfig, start_ms: int, resume: Checkpoint | None) -> None:
        number = self._epochs[-1].number + 1 if self._epochs else 0
        source = Source(
            self.session_id,
            config,
            upstream_rate=self.policy.upstream_rate,
            start_ms=start_ms,
            resume=resume,
            g711_upstream=self.policy.g711_upstream,
            max_held_s=self.policy.max_held_s,
        )
        self._epochs.append(_Epoch(number, source))
        self._sync_links(self._epochs[-1])

    def _sync_links(self, epoch: _Epoch) -> None:
        links = epoch.links
        if len(links) == len(epoch.source.streams):
            return
        for index in range(len(epoch.source.streams)):
            if index not in links:
                links[index] = Link(self.policy.retry)
                self.links_created += 1

    def _retire(self, new_config: SessionConfig) -> None:
        """Configuration headers changed: finish the current epoch's input and
        start a new one at the session time reached."""
        old = self._current
        old.retiring = True
        old.source.end()
        old.source.process(INPUT_BUDGET_S)  # the decoder's tail belongs to the old epoch
        start_ms = round(old.source.audio_seconds * 1000)
        self._new_epoch(new_config, start_ms, None)

    # ------------------------------------------------------------------ records

    def on_record(
        self,
        offset: int,
        headers: RecordHeaders,
        audio: bytes,
        *,
        record: object = None,
        now: float,
        stamp: float | None = None,
    ) -> bool:
        """Feed one record; False when it was done before a takeover (skip it).

        Raises :class:`InputError` when the record cannot be taken: the session
        is closed (``session_closed``) or failed (``session_failed``); the
        caller dead-letters it. Undecodable audio is reported through
        :meth:`take_rejected` instead, as it may be found later.
        """
        if offset < self._resume_offset:
            return False
        self._check_open()
        self.last_offset, self.last_input, self.last_stamp = offset, now, stamp
        if headers.has_config:
            config = self.config.with_overrides(headers.config_headers)
            if config != self.config:
                self._retire(config)
        source = self._current.source
        source.add(offset, audio, headers.kind, record)
        if headers.kind == "end":
            self._begin_end(None)
        self.process_input(now)
        return True

    def _check_open(self) -> None:
        if self.state == "failed" or (self._ending is not None and self._ending.failure):
            raise InputError("session_failed", "the session has failed")
        if self.state != "open":
            raise InputError("session_closed", "the session has ended or is ending")

    @property
    def input_busy(self) -> bool:
        """True while some input waits: for the decoder (call :meth:`arm_input`)
        or, :attr:`input_held`, for finals to cover what the streams hold."""
        return any(e.source.busy for e in self._epochs)

    @property
    def input_held(self) -> bool:
        """Input waits because the streams hold enough audio: call
        :meth:`process_input` again after upstream progress."""
        return any(e.source.busy and e.source.held for e in self._epochs)

    def arm_input(self, on_ready: Any) -> None:
        """Have ``on_ready()`` called (from a decoder thread) when :meth:`process_input`
        can make progress again."""
        for epoch in self._epochs:
            epoch.source.arm(on_ready)

    def process_input(self, now: float) -> None:
        """Decode queued input in bounded steps (see ``workers.source``)."""
        for epoch in self._epochs:
            source = epoch.source
            if source.busy:
                source.process(INPUT_BUDGET_S)
                self._sync_links(epoch)
            if source.failed is not None and source.rejected:
                self._on_undecodable(source)
        ending = self._ending
        if ending is not None and ending.since is None and not self.input_busy:
            ending.since = now

    def _on_undecodable(self, source: Source) -> None:
        """Keep the finals of the good part: flush what was decoded, then fail."""
        self._rejected.extend(source.rejected)
        source.rejected = []
        self._begin_end(Failure("undecodable_audio", f"undecodable audio: {source.failed}"))

    def take_rejected(self) -> list[Rejected]:
        """Records to dead-letter (undecodable audio and what followed it)."""
        out = self._rejected
        if out:
            self._rejected = []
        return out

    # ------------------------------------------------------------------ ending

    def _begin_end(self, failure: Failure | None) -> None:
        """Stop taking input; flush everything and wait for the finals (``tick``)."""
        if self._ending is None:
            self._ending = _Ending()
            self.state = "ending"
            self._current.source.end()
        if failure is not None and self._ending.failure is None:
            self._ending.failure = failure
            for epoch in self._epochs:
                epoch.source.flush(user=False, only_uncovered=True)

    def _finish(self, settled: bool) -> None:
        """Emit ``session_ended`` (or ``session_failed``) and close every link."""
        failure = self._ending.failure if self._ending else None
        if failure is not None:
            self._fail(failure)
            return
        finals, reconnects = self.totals()
        self._lifecycle(
            "session_ended",
            audio_seconds=round(self.audio_seconds, 3),
            finals=finals,
            reconnects=reconnects,
            detail=None if settled else "end timeout: some audio was not confirmed",
        )
        self.state = "ended"
        self._close_all("ended")

    def fail(self, code: str, detail: str) -> None:
        """Fail the session now (``session_failed`` with ``code``), e.g. when its
        output cannot be produced."""
        self._fail(Failure(code, detail))

    def close(self) -> None:
        """Release the decoders; call once the session is over or revoked."""
        for epoch in self._epochs:
            epoch.source.close()

    def _fail(self, failure: Failure) -> None:
        if self.state == "failed":
            return
        self.failure = failure
        self.state = "failed"
        self._lifecycle("session_failed", code=failure.code, detail=failure.detail)
        self._close_all("failed")

    def _close_all(self, reason: str) -> None:
        for epoch in self._epochs:
            self._close_epoch(epoch, reason)
            epoch.source.close()

    def _close_epoch(self, epoch: _Epoch, reason: str) -> None:
        if not epoch.closed:
            epoch.closed = True
            self._closes += [((epoch.number, i), reason) for i in epoch.links]

    @property
    def finished(self) -> bool:
        """Ended or failed: nothing more will be sent upstream."""
        return self.state in ("ended", "failed")

    # ------------------------------------------------------------------ links

    def link_keys(self) -> list[LinkKey]:
        """The links that should run now (start a task for each new one): a
        stream connects once it has something to send, and stays connected
        until its epoch is over (a session that never has audio costs the
        upstream nothing)."""
        return [
            (epoch.number, index)
            for epoch in self._epochs
            if not epoch.closed
            for index, link in epoch.links.items()
            if link.connections or link.attempt or _has_work(epoch.source.streams[index])
        ]

    def _link(self, key: LinkKey) -> tuple[_Epoch, ChannelStream, Link] | None:
        for epoch in self._epochs:
            if epoch.number == key[0] and not epoch.closed:
                return epoch, epoch.source.streams[key[1]], epoch.links[key[1]]
        return None

    def params(self, key: LinkKey) -> StreamParams:
        found = self._link(key)
        if found is None:
            raise KeyError(key)
        return found[1].params

    def connect_delay(self, key: LinkKey, now: float) -> float | None:
        """Seconds to wait before connecting ``key``; None: do not (the link or
        its epoch is over)."""
        found = self._link(key)
        if found is None or self.finished:
            return None
        return found[2].next_attempt(now)

    def on_connected(self, key: LinkKey, now: float) -> None:
        """A connection of ``key`` opened; send :meth:`outgoing` on it next."""
        found = self._link(key)
        if found is None:
            return
        _, stream, link = found
        link.opened(now)
        self._last_exchange = now
        self._sent_at[key] = deque(maxlen=1024)
        reason = stream.connected(link.reason)
        kind = "upstream_connected" if reason is None else "upstream_reconnected"
        self._connection_event(stream, kind, reason)

    def on_connect_failed(self, key: LinkKey, error: UpstreamError, now: float) -> None:
        """Opening ``key`` failed: back off (see :meth:`connect_delay`) or fail."""
        found = self._link(key)
        if found is not None:
            found[2].refused(error, now)
            self._check_link(found[2])

    def on_closed(self, key: LinkKey, error: UpstreamError, now: float) -> None:
        """An open connection of ``key`` was lost: the uncovered audio is replayed
        on the next one."""
        found = self._link(key)
        if found is None:
            return
        _, stream, link = found
        stream.disconnected()
        link.lost(error, now, _reason(error))
        self._check_link(link)

    def _check_link(self, link: Link) -> None:
        if link.failure is not None:
            self._fail(link.failure)

    def outgoing(self, key: LinkKey, now: float) -> list[bytes | FlushRequest]:
        """What ``key``'s open connection must send now, in order."""
        found = self._link(key)
        if found is None or not found[2].is_open:
            return []
        _, stream, link = found
        items = list(stream.outgoing())
        if items:
            self._last_exchange = now
            link.sent(now, stream.answer_due)
            self._sent_at.setdefault(key, deque(maxlen=1024)).append((stream.sent_frames, now))
        return items

    def on_message(self, key: LinkKey, message: ServerMessage, now: float) -> None:
        """Interpret one upstream message of ``key``: its events go to the outputs."""
        found = self._link(key)
        if found is None:
            return
        _, stream, link = found
        self._last_exchange = now
        before = stream.covered
        events = stream.on_message(message)
        self._measure(key, stream, events, now)
        link.heard(now, stream.answer_due)
        link.progressed((stream.covered - before) / stream.rate)
        self._outbox.extend(Output(event) for event in events)
        self._outbox.append(Output(durable=(key, stream.mark())))

    def _measure(
        self, key: LinkKey, stream: ChannelStream, events: list[Event], now: float
    ) -> None:
        """Upstream latency: the last audio of a final was sent -> the final came."""
        sent_at = self._sent_at.get(key)
        for event in events:
            if not isinstance(event, TranscriptEvent) or not event.is_final or sent_at is None:
                continue
            end = stream.to_frame((event.start_ms or 0) + (event.duration_ms or 0))
            while sent_at and sent_at[0][0] < end:
                sent_at.popleft()
            if sent_at:
                self._latencies.append(now - sent_at[0][1])

    def take_latencies(self) -> list[float]:
        """Upstream latencies (seconds) measured since the last call."""
        out = self._latencies
        if out:
            self._latencies = []
        return out

    def take_closes(self) -> list[tuple[LinkKey, str]]:
        """Links to close now, with why (``stall``: reconnect and replay;
        anything else: a clean close, the link is over)."""
        out = self._closes
        if out:
            self._closes = []
        return out

    # ------------------------------------------------------------------ output

    @property
    def has_outputs(self) -> bool:
        return bool(self._outbox)

    def take_outputs(self) -> list[Output]:
        """What to publish now, in order; report each with :meth:`on_published`."""
        out = list(self._outbox)
        self._outbox.clear()
        return out

    def on_published(self, output: Output) -> None:
        """``output`` (and everything before it) is acknowledged by the broker."""
        if output.durable is None:
            return
        key, mark = output.durable
        for epoch in self._epochs:
            if epoch.number == key[0]:
                self.dirty |= epoch.source.streams[key[1]].make_durable(mark)

    def _lifecycle(self, kind: str, **fields: Any) -> None:
        # One of each per session: deterministic ids (a takeover re-emits the same).
        self._outbox.append(
            Output(
                SessionEvent(
                    event_id=event_id(self.session_id, None, 0, kind),
                    session_id=self.session_id,
                    type=kind,
                    **fields,
                )
            )
        )

    def _connection_event(self, stream: ChannelStream, kind: str, reason: str | None) -> None:
        self._outbox.append(
            Output(
                SessionEvent(
                    event_id=uuid.uuid4().hex,
                    session_id=self.session_id,
                    channel=stream.channel,
                    label=stream.label,
                    type=kind,
                    endpoint=stream.params.endpoint,
                    encoding=stream.params.encoding,
                    sample_rate=stream.rate,
                    connection=stream.stats.connections,
                    reason=reason,
                    position_ms=stream.to_ms(stream.covered),
                )
            )
        )

    def warning(self, code: str, detail: str, offset: int) -> None:
        """Tell the session's consumers that one of its records was dead-lettered."""
        self._outbox.append(
            Output(
                SessionEvent(
                    event_id=event_id(self.session_id, None, offset, f"warning:{code}"),
                    session_id=self.session_id,
                    type="session_warning",
                    code=code,
                    detail=detail,
                )
            )
        )

    # ------------------------------------------------------------------ time

    def tick(self, now: float, quiet_s: float) -> None:
        """Periodic: retire settled epochs, flush a quiet or overlong input,
        close stalled links, end an idle session, finish an ending one.
        ``quiet_s`` is how long the input has been quiet in input time."""
        if self.finished:
            return
        self._retire_settled()
        self._close_stalled(now)
        if self._ending is not None:
            self._tick_ending(now)
        elif quiet_s >= self.policy.idle_timeout_s:
            self._begin_end(None)
            self.process_input(now)
        elif self._needs_flush(quiet_s):
            self._current.source.flush(user=False)

    def _retire_settled(self) -> None:
        for epoch in self._epochs[:-1]:
            if epoch.retiring and not epoch.closed and epoch.source.durable:
                self._close_epoch(epoch, "reconfigured")
                epoch.source.close()
                self.dirty = True  # the checkpoint moves on to the next epoch

    def _close_stalled(self, now: float) -> None:
        for epoch in self._epochs:
            if epoch.closed:
                continue
            for index, link in epoch.links.items():
                if link.stalled(now):
                    link.is_open = False
                    self._closes.append(((epoch.number, index), "stall"))

    def _tick_ending(self, now: float) -> None:
        ending = self._ending
        assert ending is not None
        if ending.since is None:
            return
        if all(e.source.settled for e in self._epochs):
            self._finish(True)
        elif (
            self._open
            and not self._unsent
            and now - max(self._last_exchange, ending.since) >= self.policy.end_timeout_s
        ):
            # An open upstream that stopped answering what it was sent; a
            # closed one is the link's business (it reconnects and replays, or
            # fails the session), and what is not sent yet is the pump's.
            self._finish(False)

    @property
    def _unsent(self) -> bool:
        return any(s.unsent for e in self._epochs if not e.closed for s in e.source.streams)

    @property
    def _open(self) -> bool:
        return any(link.is_open for e in self._epochs if not e.closed for link in e.links.values())

    def _needs_flush(self, quiet_s: float) -> bool:
        """Flush when the input paused, at a silence once enough audio is
        uncovered (realtime; on turns a flush would end the turn), or - the
        hard bound - when too much audio is uncovered, silence or not."""
        source = self._current.source
        streams = source.streams
        if not streams or any(s.pending_flushes for s in streams):
            return False
        uncovered = source.uncovered_seconds
        if uncovered <= 0:
            return False
        if quiet_s >= self.policy.idle_flush_s or uncovered >= self.policy.max_uncovered_s:
            return True
        return (
            self.config.endpoint == "realtime"
            and uncovered >= self.policy.silence_flush_after_s
            and all(
                s.flushable_at_silence(self.policy.silence_flush_ms)
                for s in streams
                if s.uncovered_frames
            )
        )

    def drain(self) -> None:
        """Revocation or shutdown: flush every stream whose tail is silent (a
        flush mid-word would cut it; uncovered speech is replayed by the next
        owner). Wait for :attr:`quiesced`, then checkpoint and close."""
        for epoch in self._epochs:
            for stream in epoch.source.streams:
                if stream.flushable_at_silence(self.policy.silence_flush_ms):
                    stream.request_flush(user=False)

    @property
    def quiesced(self) -> bool:
        """No flush is pending on any stream (a drain can checkpoint now)."""
        return all(s.pending_flushes == 0 for s in self.streams)

    # ------------------------------------------------------------------ checkpoints

    @property
    def streams(self) -> Iterator[ChannelStream]:
        for epoch in self._epochs:
            yield from epoch.source.streams

    def checkpoint(self) -> Checkpoint | None:
        """Where a new owner would resume now (None before any record, or when
        the session is over: see :meth:`closing_checkpoint`)."""
        if self.finished:
            return None
        oldest = next((e for e in self._epochs if not e.closed), None)
        if oldest is None:
            return None
        position = oldest.source.position()
        if position is None:
            return None
        earlier = [s for e in self._epochs if e.closed for s in e.source.streams]
        return Checkpoint(
            session_id=self.session_id,
            partition=self.partition,
            offset=position.offset,
            record_byte=position.record_byte,
            restart=position.restart,
            config=oldest.source.config,
            config_start_ms=oldest.source.start_ms,
            streams=position.streams,
            prior_finals=self._prior_finals + sum(s.durable_finals for s in earlier),
            prior_reconnects=self._prior_reconnects + sum(s.stats.reconnects for s in earlier),
            updated_at=time.time(),
        )

    def closing_checkpoint(self) -> Checkpoint:
        """The entry of a finished session: its records below it never start it again."""
        return Checkpoint(
            session_id=self.session_id,
            partition=self.partition,
            state="failed" if self.state == "failed" else "ended",
            offset=self.last_offset + 1,
            config=self.config,
            updated_at=time.time(),
        )

    def on_checkpointed(self, checkpoint: Checkpoint) -> None:
        """``checkpoint`` is durable: records below its offset may be acked."""
        self.checkpointed = checkpoint
        self.ack_before = max(self.ack_before, checkpoint.offset)

    # ------------------------------------------------------------------ figures

    def totals(self) -> tuple[int, int]:
        """(finals, reconnects) of the whole session so far."""
        streams = list(self.streams)
        return (
            self._prior_finals + sum(s.stats.finals for s in streams),
            self._prior_reconnects + sum(s.stats.reconnects for s in streams),
        )

    @property
    def audio_seconds(self) -> float:
        return self._current.source.audio_seconds

    @property
    def uncovered_seconds(self) -> float:
        return max(e.source.uncovered_seconds for e in self._epochs)

    @property
    def max_held_seconds(self) -> float:
        """The most audio any stream held uncovered (logged at the end)."""
        return max((s.stats.max_uncovered / s.rate for s in self.streams), default=0.0)


def _has_work(stream: ChannelStream) -> bool:
    return stream.uncovered_frames > 0 or stream.pending_flushes > 0


def _reason(error: UpstreamError) -> str:
    if error.status is not None:
        return f"http_{error.status}"
    if error.close_code is not None:
        return f"closed_{error.close_code}"
    return error.reason or "connection_lost"
