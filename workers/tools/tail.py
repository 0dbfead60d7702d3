"""``reson8-kafka tail``: follow the output topics, as captions or JSON lines.

:class:`Follower` is the reusable consumer (no group, nothing committed):
every partition of the given topics, from the beginning or from the end
offsets read at start (so nothing produced after :meth:`Follower.start`
returns is missed). The handler :func:`run` renders with
:class:`~workers.tools.captions.CaptionRenderer` or
:func:`~workers.tools.captions.json_line`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from pydantic import ValidationError

from schemas.events import SessionEvent, TranscriptEvent, TurnEvent, parse_event
from topology.connection import KafkaSettings, client_kwargs
from workers.errors import KafkaUnavailable, Reson8KafkaError
from workers.tools.captions import CaptionRenderer, json_line

__all__ = ["OUTPUT_TOPICS", "Consumed", "Follower", "run"]

OUTPUT_TOPICS = {"transcripts": "stt.transcripts", "turns": "stt.turns", "sessions": "stt.sessions"}
ENDINGS = frozenset({"session_ended", "session_failed"})
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Consumed:
    """One output event with where and when (broker timestamp, ms) it was written."""

    topic: str
    event: TranscriptEvent | TurnEvent | SessionEvent
    timestamp_ms: int


class Follower:
    """Reads the output topics. ``async with Follower(...) as f: await f.poll()``."""

    def __init__(
        self, settings: KafkaSettings, topics: Sequence[str], *, from_beginning: bool
    ) -> None:
        self.settings = settings
        self.topics = list(topics)
        self.from_beginning = from_beginning
        self.skipped = 0  # records that are not output events (foreign producers)
        self._consumer: Any = None

    async def __aenter__(self) -> Follower:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect and position on every partition; raises KafkaUnavailable."""
        from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped,unused-ignore]
        from aiokafka.errors import KafkaError  # type: ignore[import-untyped,unused-ignore]

        self._consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="reson8-kafka-tail",
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._consumer.start()
                await self._position()
        except (KafkaError, OSError, TimeoutError) as exc:
            await self.stop()
            raise KafkaUnavailable(
                f"cannot read {', '.join(self.topics)} from {self.settings.describe()} "
                f"within {CONNECT_TIMEOUT_S:.0f} s ({type(exc).__name__})"
            ) from exc

    async def _position(self) -> None:
        from aiokafka import TopicPartition  # type: ignore[import-untyped,unused-ignore]

        # `topics()` fetches metadata but discards the partitions; aiokafka has no
        # public "metadata for these topics" call on a consumer without a group.
        cluster = await self._consumer._client.fetch_all_metadata()
        tps = []
        for topic in self.topics:
            parts = cluster.partitions_for_topic(topic)
            if not parts:
                await self.stop()
                raise KafkaUnavailable(
                    f"topic {topic} does not exist on {self.settings.describe()} "
                    "(wrong --topic-prefix?)",
                    retriable=False,
                )
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        if self.from_beginning:
            await self._consumer.seek_to_beginning(*tps)
            return
        for tp, offset in (await self._consumer.end_offsets(tps)).items():
            self._consumer.seek(tp, offset)

    async def stop(self) -> None:
        """Close the consumer; safe to call twice."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def poll(self, timeout_s: float = 0.5) -> list[Consumed]:
        """The events that arrived, waiting up to ``timeout_s`` for the first."""
        batches = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000))
        out: list[Consumed] = []
        for records in batches.values():
            for record in records:
                try:
                    event = parse_event(record.value)
                except ValidationError:
                    self.skipped += 1
                    continue
                out.append(Consumed(record.topic, event, int(record.timestamp)))
        out.sort(key=lambda c: c.timestamp_ms)
        return out


# --- CLI ------------------------------------------------------------------------------


def parse_topics(text: str) -> list[str]:
    """``transcripts,turns,sessions`` (any subset) -> unprefixed topic names."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in OUTPUT_TOPICS]
    if unknown or not names:
        raise ValueError(f"choose from {', '.join(OUTPUT_TOPICS)}; got {text!r}")
    return [OUTPUT_TOPICS[n] for n in dict.fromkeys(names)]


@dataclass
class _Writer:
    stream: TextIO
    as_json: bool
    renderer: CaptionRenderer

    def write(self, item: Consumed) -> None:
        text = json_line(item.topic, item.event) + "\n" if self.as_json else None
        self.stream.write(text if text is not None else self.renderer.feed(item.event))
        self.stream.flush()

    def close(self) -> None:
        if not self.as_json:
            self.stream.write(self.renderer.close())
            self.stream.flush()


async def _tail(args: argparse.Namespace, settings: KafkaSettings, writer: _Writer) -> int:
    from workers.tools.send import topic_prefix

    prefix = topic_prefix(args.topic_prefix)
    topics = [prefix + name for name in args.topics]
    deadline = time.monotonic() + args.timeout if args.timeout else None
    ended = 0
    async with Follower(settings, topics, from_beginning=args.from_beginning) as follower:
        while args.until_ended is None or ended < args.until_ended:
            if deadline is not None and time.monotonic() > deadline:
                raise Reson8KafkaError(
                    f"tail: {ended} of {args.until_ended} sessions ended within {args.timeout} s"
                )
            for item in await follower.poll(0.5):
                if args.session is not None and item.event.session_id != args.session:
                    continue
                writer.write(item)
                ended += item.event.type in ENDINGS
    return 0


def run(args: argparse.Namespace) -> int:
    """Handler of ``reson8-kafka tail``: Ctrl-C ends it with status 0."""
    from workers.tools.send import kafka_settings

    if args.until_ended is not None and "stt.sessions" not in args.topics:
        args.usage_error("--until-ended counts events of the sessions topic: add it to --topics")
    settings = kafka_settings(args.bootstrap_servers)
    tty = sys.stdout.isatty() and not args.json
    width = shutil.get_terminal_size().columns
    writer = _Writer(sys.stdout, args.json, CaptionRenderer(tty=tty, width=width))
    try:
        return asyncio.run(_tail(args, settings, writer))
    except KeyboardInterrupt:
        return 0
    finally:
        writer.close()
