"""``reson8-kafka send``: produce audio files to ``stt.audio`` as live calls would.

The CLI handler (:func:`run`) validates the flags, loads every file, connects
one producer (acks=all, bounded connect) and sends the files concurrently,
each paced by its own audio clock. :func:`send_sessions` is the reusable
async core (the demo calls it); it returns a :class:`SentSession` per file
whose ``produced`` times let the caller measure latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topology.connection import KafkaSettings, client_kwargs
from workers.errors import KafkaUnavailable
from workers.tools.audiofile import AudioFile, load
from workers.tools.plan import (
    Chunk,
    Pacer,
    SendOptions,
    TraceContext,
    UsageError,
    chunk_plan,
    config_headers,
    end_headers,
    new_session_id,
    record_headers,
    validate_options,
)
from workers.tools.progress import FileProgress, Progress

__all__ = ["SentSession", "open_producer", "run", "send_sessions"]

CONNECT_TIMEOUT_S = 10.0
TOPIC_TIMEOUT_S = 10.0
AUDIO_TOPIC = "stt.audio"
PREFIX_ENV = "RESON8_KAFKA_TOPIC_PREFIX"


@dataclass
class SentSession:
    """One file being sent as one session; ``produced`` is (audio end s, wall time) per record."""

    session_id: str
    audio: AudioFile
    chunks: list[Chunk]
    first_headers: list[tuple[str, bytes]]
    trace: TraceContext = field(default_factory=TraceContext.new)
    produced: list[tuple[float, float]] = field(default_factory=list)
    progress: FileProgress | None = None

    @property
    def records(self) -> int:
        """Records sent so far (audio and the final ``end``)."""
        return len(self.produced)

    def produced_at(self, audio_s: float) -> float | None:
        """Wall time at which the record carrying audio position ``audio_s`` was sent."""
        for audio_end, wall in self.produced:
            if audio_end >= audio_s - 1e-6:
                return wall
        return self.produced[-1][1] if self.produced else None


def prepare(
    audio: AudioFile, opts: SendOptions, chunk_ms: int, session_id: str | None = None
) -> SentSession:
    """The session of one loaded file: its id, records and first-record headers."""
    align = opts.frame_bytes() if opts.raw else 1
    chunks = chunk_plan(len(audio.data), audio.duration_s, chunk_ms, align)
    sid = session_id or new_session_id(audio.path)
    return SentSession(sid, audio, chunks, config_headers(opts))


async def open_producer(settings: KafkaSettings, topic: str) -> Any:
    """A started ``AIOKafkaProducer`` (acks=all) that has seen ``topic``'s metadata.

    Raises KafkaUnavailable within ~``CONNECT_TIMEOUT_S`` when the broker does
    not answer, or when ``topic`` does not exist. The caller must ``stop()`` it.
    """
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]
    from aiokafka.errors import KafkaError  # type: ignore[import-untyped,unused-ignore]

    where = settings.describe()
    producer = AIOKafkaProducer(
        **client_kwargs(settings), acks="all", client_id="reson8-kafka-send", linger_ms=5
    )
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await producer.start()
    except (KafkaError, OSError, TimeoutError) as exc:
        await producer.stop()
        raise KafkaUnavailable(
            f"cannot reach Kafka at {where} within {CONNECT_TIMEOUT_S:.0f} s ({type(exc).__name__})"
        ) from exc
    try:
        async with asyncio.timeout(TOPIC_TIMEOUT_S):
            await producer.partitions_for(topic)
    except (KafkaError, TimeoutError) as exc:
        await producer.stop()
        raise KafkaUnavailable(
            f"topic {topic} does not exist on {where}; create it with "
            "`reson8-kafka topics apply --prefix <prefix>`",
            retriable=False,
        ) from exc
    return producer


async def _send_one(
    producer: Any, topic: str, session: SentSession, pacer: Pacer, start_after_s: float = 0.0
) -> None:
    if start_after_s > 0:
        await asyncio.sleep(start_after_s)  # staggered start, as calls come in one by one
    key = session.session_id.encode()
    start = time.monotonic()
    futures = []
    for seq, chunk in enumerate(session.chunks):
        delay = pacer.delay(chunk.audio_end_s, time.monotonic() - start)
        if delay > 0:
            await asyncio.sleep(delay)  # pacing: the live call's clock, not a retry
        headers = record_headers(chunk.index, seq, session.trace, session.first_headers)
        value = session.audio.data[chunk.start : chunk.end]
        futures.append(await producer.send(topic, value, key=key, headers=headers))
        session.produced.append((chunk.audio_end_s, time.time()))
        if session.progress is not None:
            session.progress.sent_s = chunk.audio_end_s
    headers = end_headers(len(session.chunks), session.trace)
    futures.append(await producer.send(topic, b"", key=key, headers=headers))
    await asyncio.gather(*futures)
    session.produced.append((session.audio.duration_s, time.time()))
    if session.progress is not None:
        session.progress.done = True


async def send_sessions(
    settings: KafkaSettings,
    topic: str,
    sessions: Sequence[SentSession],
    pacer: Pacer,
    progress: Progress | None = None,
    *,
    stagger_s: float = 0.0,
) -> None:
    """Send every session concurrently, each paced on its own; wait for all acks.

    Session ``i`` starts ``i * stagger_s`` seconds after the first. Raises
    KafkaUnavailable when the broker is unreachable or a send fails.
    """
    from aiokafka.errors import KafkaError  # type: ignore[import-untyped,unused-ignore]

    producer = await open_producer(settings, topic)
    try:
        tasks = [
            asyncio.create_task(_send_one(producer, topic, s, pacer, i * stagger_s))
            for i, s in enumerate(sessions)
        ]
        await _wait_with_progress(tasks, progress)
    except KafkaError as exc:
        raise KafkaUnavailable(f"sending to {topic} failed: {exc!r}") from exc
    finally:
        await producer.stop()


async def _wait_with_progress(tasks: list[asyncio.Task[None]], progress: Progress | None) -> None:
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=0.1)
            for task in done:
                task.result()  # re-raise the first failure
            if progress is not None:
                progress.update()
    finally:
        for task in tasks:
            task.cancel()
        if progress is not None:
            progress.finish()


# --- CLI ------------------------------------------------------------------------------


def options_from_args(args: argparse.Namespace) -> SendOptions:
    """The configuration headers the flags ask for (not validated yet)."""
    return SendOptions(
        encoding=args.encoding,
        sample_rate=args.sample_rate,
        channels=args.channels,
        endpoint=args.endpoint,
        language=args.language,
        options=tuple(args.options),
        split=args.split,
        labels=tuple(args.labels),
        custom_model_id=args.custom_model_id,
    )


def kafka_settings(bootstrap: str | None) -> KafkaSettings:
    """``--bootstrap-servers``, else ``KAFKA_BOOTSTRAP_SERVERS``, else the local broker."""
    from topology.connection import resolve_settings

    if bootstrap:
        return KafkaSettings.from_env().with_bootstrap(bootstrap)
    return resolve_settings()


def topic_prefix(value: str | None) -> str:
    """``--topic-prefix``, else ``RESON8_KAFKA_TOPIC_PREFIX`` (as the worker reads it)."""
    return value if value is not None else os.environ.get(PREFIX_ENV, "")


def run(args: argparse.Namespace) -> int:
    """Handler of ``reson8-kafka send``; usage errors exit 2, others raise (exit 1)."""
    opts = options_from_args(args)
    files = [Path(f) for f in args.files]
    try:
        validate_options(opts, files, args.session)
    except UsageError as exc:
        args.usage_error(str(exc))
    sessions = [prepare(load(f, opts), opts, args.chunk_ms, args.session) for f in files]
    _check_split(sessions, opts)
    settings = kafka_settings(args.bootstrap_servers)
    topic = topic_prefix(args.topic_prefix) + AUDIO_TOPIC
    tty = sys.stderr.isatty()
    for s in sessions:
        s.progress = FileProgress(f"{s.session_id:<28}", s.audio.duration_s)
        print(
            f"sending {s.audio.path} ({s.audio.describe()}) as session {s.session_id}",
            file=sys.stderr,
        )
    print(f"to {topic} at {settings.bootstrap_servers}", file=sys.stderr)
    progress = Progress([s.progress for s in sessions if s.progress], sys.stderr, tty=tty)
    asyncio.run(send_sessions(settings, topic, sessions, Pacer(args.pace), progress))
    for s in sessions:
        print(f"{s.session_id}\t{s.records} records\t{s.audio.duration_s:.1f} s\t{s.audio.path}")
    return 0


def _check_split(sessions: Sequence[SentSession], opts: SendOptions) -> None:
    if not opts.split or opts.raw:
        return
    for s in sessions:
        if s.audio.channels < 2:
            raise UsageError(f"--split needs a file with 2+ channels; {s.audio.path} is mono")
