"""``reson8-kafka demo``: the whole pipeline on one machine, in one command.

Order: sample calls (espeak-ng, cached) -> Kafka (reused when running or named
by ``KAFKA_BOOTSTRAP_SERVERS``, else started) -> the emulator with the
whisper recognizer (``--recognizer``) as a subprocess (or ``--upstream-url``) -> topics
under the fixed prefix ``demo.`` -> a worker subprocess, awaited on
``/ready`` -> the calls sent in real time, concurrently, while their captions
are shown -> a summary. Everything the demo started is stopped on the way out
(normal end, error, Ctrl-C or SIGTERM), in reverse order, through one
:class:`contextlib.ExitStack`; what it found running is left alone.

Latency in the summary is *end to end*: from the moment the record carrying a
final's last audio was produced to the broker timestamp of the final's record
(both clocks are this machine's). Word accuracy is the share of each script's
words found, in order, in its session's finals (:func:`emulator.accuracy.word_accuracy`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from topology.connection import KafkaSettings
from workers.errors import ConfigError, Reson8KafkaError
from workers.tools.captions import CaptionRenderer
from workers.tools.demo_samples import Sample, ensure_samples
from workers.tools.plan import Pacer
from workers.tools.send import AUDIO_TOPIC, SentSession, prepare, send_sessions
from workers.tools.tail import ENDINGS, OUTPUT_TOPICS, Consumed, Follower

__all__ = ["Measured", "run", "summarize"]

PREFIX = "demo."
APP_ID = "demo.reson8-kafka"
PARTITIONS = 4
READY_TIMEOUT_S = 90.0
EMULATOR_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 25.0  # worker drain (20 s default) plus margin
# Calls start this far apart, so their words do not all end at once (models are
# loaded once per emulator decode process, not per call).
STAGGER_S = 1.0
DEFAULT_RECOGNIZER = "whisper"
REPO = Path(__file__).resolve().parents[2]


def _cache() -> Path:
    from topology.broker import cache_dir

    return cache_dir().parent / "demo"


class _Say:
    """Progress lines of the demo itself (stderr), ``demo: <what>  <where>``."""

    def __init__(self, stream: TextIO, tty: bool) -> None:
        self.stream = stream
        self.tty = tty

    def __call__(self, what: str, where: str = "") -> None:
        head = f"demo: {what:<10}" if where else f"demo: {what}"
        line = f"{head} {where}".rstrip()
        self.stream.write((f"\x1b[36m{line}\x1b[0m" if self.tty else line) + "\n")
        self.stream.flush()


# --- processes -------------------------------------------------------------------------


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        # Own process group: the terminal's Ctrl-C reaches the demo only, which
        # then stops its children in order (worker drains before the emulator goes).
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, process_group=0
        )


def _stopper(proc: subprocess.Popen[bytes], name: str, say: _Say) -> Callable[[], None]:
    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        say("stopped", f"{name} (pid {proc.pid})")

    return stop


def _log_tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return " | ".join(text[-lines:])


def _wait_for(
    check: Callable[[], str | None], proc: subprocess.Popen[bytes], log: Path, what: str, s: float
) -> str:
    """Poll ``check`` until it returns a value; fail when ``proc`` exits or after ``s``."""
    deadline = time.monotonic() + s
    while True:
        found = check()
        if found is not None:
            return found
        if proc.poll() is not None:
            raise ConfigError(f"{what} exited with {proc.returncode}: {_log_tail(log)}")
        if time.monotonic() > deadline:
            raise ConfigError(f"{what} not ready after {s:.0f} s; see {log}")
        time.sleep(0.1)  # poll interval, bounded by the deadline


# --- the stack ---------------------------------------------------------------------------


def _kafka(stack: contextlib.ExitStack, say: _Say) -> KafkaSettings:
    from topology import broker

    settings = KafkaSettings.from_env()
    if settings.bootstrap_servers:
        say("Kafka", f"{settings.describe()} (from KAFKA_BOOTSTRAP_SERVERS, reused)")
        return settings
    running = broker.status()
    if running is not None:
        say("Kafka", f"{running.bootstrap} (already running, pid {running.pid}; reused)")
        return settings.with_bootstrap(running.bootstrap)
    say("starting", "Kafka (local single-node KRaft broker; first run downloads jars)")
    port: int | None = broker.DEFAULT_PORT
    if broker._port_in_use(broker.DEFAULT_PORT):
        port = None
    state = broker.up(port)

    def stop() -> None:
        broker.down()
        say("stopped", f"Kafka at {state.bootstrap}")

    stack.callback(stop)
    say("Kafka", f"{state.bootstrap} (started by the demo, pid {state.pid}; log {state.log_file})")
    return settings.with_bootstrap(state.bootstrap)


def _emulator(stack: contextlib.ExitStack, say: _Say, logs: Path, recognizer: str) -> str:
    log = logs / "emulator.log"
    cmd = [sys.executable, "-m", "emulator.cli", "--port", "0", "--recognizer", recognizer]
    proc = _spawn(cmd, log)
    stack.callback(_stopper(proc, "emulator", say))
    pattern = re.compile(r"listening on (ws://\S+)")

    def url() -> str | None:
        match = pattern.search(log.read_text(errors="replace")) if log.exists() else None
        return match.group(1) if match else None

    found = _wait_for(url, proc, log, "the emulator", EMULATOR_TIMEOUT_S)
    say("emulator", f"{found} ({recognizer} recognizer, pid {proc.pid}; log {log})")
    return found


async def _apply_topics(settings: KafkaSettings) -> list[str]:
    from topology.admin import apply_topology, broker_count
    from topology.topics import build_topology

    rf = min(3, await broker_count(settings))
    report = await apply_topology(
        settings, build_topology(PREFIX, partitions=PARTITIONS, replication_factor=rf)
    )
    return [item.render() for item in report.remaining]


def _ready(port: int) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as resp:
                return "ready" if resp.status == 200 else None
        except (urllib.error.URLError, OSError):
            return None

    return check


@dataclass(frozen=True)
class _Upstream:
    url: str
    api_key: str


def _worker(
    stack: contextlib.ExitStack, say: _Say, settings: KafkaSettings, up: _Upstream, logs: Path
) -> None:
    from topology.broker import free_port

    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "RESON8_API_URL": up.url,
        "RESON8_BASE_URL": up.url,  # the vendor's newer name; the worker may read either
        "RESON8_API_KEY": up.api_key,
        "RESON8_KAFKA_TOPIC_PREFIX": PREFIX,
        "RESON8_KAFKA_APP_ID": APP_ID,
        "RESON8_KAFKA_PARTITIONS": str(PARTITIONS),
        "RESON8_KAFKA_WEB_PORT": str(port),
        "RESON8_KAFKA_WEB_HOST": "127.0.0.1",
        # A busy laptop can fall behind real time; the default 10 s wait for
        # finals after `end` would then drop the last ones.
        "RESON8_KAFKA_END_TIMEOUT_S": "60",
    }
    log = logs / "worker.log"
    started = time.monotonic()
    proc = _spawn([sys.executable, "-m", "workers.cli", "worker"], log, env)
    stack.callback(_stopper(proc, "worker", say))
    _wait_for(_ready(port), proc, log, "the worker", READY_TIMEOUT_S)
    say(
        "worker",
        f"pid {proc.pid}, group {APP_ID}, ready in {time.monotonic() - started:.1f} s "
        f"(http://127.0.0.1:{port}/ready; log {log})",
    )


# --- the live part -----------------------------------------------------------------------


@dataclass
class Measured:
    """What the demo observed for one session."""

    sent: SentSession
    sample: Sample
    finals: list[tuple[str, float]] = field(default_factory=list)  # (text, latency s)
    first_final_s: float | None = None
    ended: Consumed | None = None

    @property
    def words(self) -> tuple[int, int]:
        """``(right, total)`` words of the script found in order in the finals."""
        from emulator.accuracy import word_accuracy

        return word_accuracy(" ".join(self.sample.script), " ".join(t for t, _ in self.finals))

    def observe(self, item: Consumed) -> None:
        """Record a final (transcript or turn end) with its latency, or the session's end."""
        event = item.event
        if event.type in ENDINGS:
            self.ended = item
            return
        text = getattr(event, "text", None)
        final = event.type == "turn_end" or getattr(event, "is_final", False)
        if not final or not text:
            return
        start_ms = getattr(event, "start_ms", None) or 0
        audio_end = (start_ms + (getattr(event, "duration_ms", None) or 0)) / 1000
        produced = self.sent.produced_at(audio_end)
        at = item.timestamp_ms / 1000
        if produced is not None:
            self.finals.append((text, max(0.0, at - produced)))
        if self.first_final_s is None and self.sent.produced:
            self.first_final_s = at - self.sent.produced[0][1]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summarize(measured: Sequence[Measured], wall_s: float) -> list[str]:
    """The summary table: per session, then totals with mean and p95 latency."""
    lines = [
        f"{'session':<26} {'endpoint':<9} {'audio s':>7} {'finals':>6} {'first final':>11} "
        f"{'words right':>11}"
    ]
    latencies: list[float] = []
    audio = 0.0
    right = total = 0
    for m in measured:
        ended = m.ended.event if m.ended is not None else None
        seconds = getattr(ended, "audio_seconds", None) or m.sent.audio.duration_s
        audio += seconds
        latencies += [lat for _, lat in m.finals]
        first = f"{m.first_final_s:.1f} s" if m.first_final_s is not None else "-"
        status = "" if ended is None or ended.type == "session_ended" else f"  {ended.type}"
        got, count = m.words
        right, total = right + got, total + count
        lines.append(
            f"{m.sent.session_id:<26} {m.sample.options.endpoint:<9} {seconds:7.1f} "
            f"{len(m.finals):6d} {first:>11} {f'{got}/{count}':>11}{status}"
        )
    lines.append(f"{len(measured)} sessions, {audio:.1f} s of audio in {wall_s:.1f} s")
    if total:
        lines.append(f"words right: {right}/{total} ({right / total:.0%})")
    if latencies:
        lines.append(
            f"{len(latencies)} finals; latency from the final's last audio produced to the "
            f"final in Kafka: mean {sum(latencies) / len(latencies):.2f} s, "
            f"p95 {_percentile(latencies, 0.95):.2f} s"
        )
    return lines


async def _live(
    settings: KafkaSettings,
    samples: Sequence[Sample],
    out: TextIO,
    say: _Say,
    tty: bool,
    timeout_s: float,
) -> list[Measured]:
    from workers.tools.audiofile import load

    measured = {}
    for sample in samples:
        sid = f"{sample.name}-{secrets.token_hex(3)}"
        sent = prepare(load(sample.path, sample.options), sample.options, 100, sid)
        measured[sent.session_id] = Measured(sent, sample)
    topics = [PREFIX + name for name in OUTPUT_TOPICS.values()]
    sessions = [m.sent for m in measured.values()]
    renderer = CaptionRenderer(tty=tty)
    async with Follower(settings, topics, from_beginning=False) as follower:
        # Said from inside the event loop: a Ctrl-C from here on cancels it cleanly.
        say("sending", _describe(samples) + f", in real time, {STAGGER_S:.0f} s apart")
        sender = asyncio.create_task(
            send_sessions(settings, PREFIX + AUDIO_TOPIC, sessions, Pacer(1.0), stagger_s=STAGGER_S)
        )
        try:
            await _follow(follower, measured, renderer, out, sender, timeout_s)
        finally:
            out.write(renderer.close())
            sender.cancel()
    return list(measured.values())


async def _follow(
    follower: Follower,
    measured: dict[str, Measured],
    renderer: CaptionRenderer,
    out: TextIO,
    sender: asyncio.Task[None],
    timeout_s: float,
) -> None:
    deadline = time.monotonic() + timeout_s
    while any(m.ended is None for m in measured.values()):
        if sender.done() and sender.exception() is not None:
            sender.result()
        if time.monotonic() > deadline:
            raise Reson8KafkaError(f"the demo sessions did not end within {timeout_s:.0f} s")
        for item in await follower.poll(0.3):
            target = measured.get(item.event.session_id)
            if target is None:
                continue  # another run's or another producer's session
            target.observe(item)
            out.write(renderer.feed(item.event))
            out.flush()
    await sender


async def _keep_following(settings: KafkaSettings, out: TextIO, tty: bool) -> None:
    renderer = CaptionRenderer(tty=tty)
    topics = [PREFIX + name for name in OUTPUT_TOPICS.values()]
    async with Follower(settings, topics, from_beginning=False) as follower:
        try:
            while True:
                for item in await follower.poll(0.5):
                    out.write(renderer.feed(item.event))
                    out.flush()
        finally:
            out.write(renderer.close())


# --- entry point ----------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the ExitStack stops the children either way."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _upstream(args: argparse.Namespace) -> _Upstream | None:
    if args.upstream_url is None:
        return None
    key = args.api_key or os.environ.get("RESON8_API_KEY", "")
    if not key:
        args.usage_error("--upstream-url needs --api-key or RESON8_API_KEY")
    return _Upstream(args.upstream_url, key)


def run(args: argparse.Namespace) -> int:
    """Handler of ``reson8-kafka demo``; returns 0, or 130 after Ctrl-C/SIGTERM."""
    upstream = _upstream(args)
    tty = sys.stdout.isatty()
    say = _Say(sys.stderr, sys.stderr.isatty())
    status = 0
    with _sigterm_as_interrupt(), contextlib.ExitStack() as stack:
        stack.callback(say, "all stopped")  # registered first: runs last
        try:
            _run(args, stack, say, upstream, tty)
        except KeyboardInterrupt:
            say("interrupted; stopping what the demo started")
            status = 130
        # Clean-up must finish: a second Ctrl-C or SIGTERM would orphan the children
        # (each stop is bounded by STOP_TIMEOUT_S, then SIGKILL).
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
    return status


def _run(
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    say: _Say,
    upstream: _Upstream | None,
    tty: bool,
) -> None:
    cache = _cache()
    started = time.monotonic()
    samples, generated = ensure_samples(cache, args.sentences)
    origin = (
        f"generated with espeak-ng in {time.monotonic() - started:.1f} s"
        if generated
        else ("cached")
    )
    say("samples", f"{len(samples)} calls in {cache} ({origin})")
    settings = _kafka(stack, say)
    if upstream is None:
        url = _emulator(stack, say, cache / "logs", args.recognizer)
        upstream = _Upstream(url, "demo-key-not-secret")
    else:
        say("upstream", f"{upstream.url} (API key from {'--api-key' if args.api_key else 'env'})")
    drift = asyncio.run(_apply_topics(settings))
    say(
        "topics",
        f"{PREFIX}stt.* ({PARTITIONS} partitions)" + (f"; drift: {drift}" if drift else ""),
    )
    _worker(stack, say, settings, upstream, cache / "logs")
    began = time.monotonic()
    measured = asyncio.run(_live(settings, samples, sys.stdout, say, tty, args.timeout))
    for line in summarize(measured, time.monotonic() - began):
        print(line)
    sys.stdout.flush()
    if args.keep:
        say("keeping", f"the stack up; try: reson8-kafka send --topic-prefix {PREFIX} FILE")
        asyncio.run(_keep_following(settings, sys.stdout, tty))


def _describe(samples: Sequence[Sample]) -> str:
    parts = []
    for s in samples:
        how = s.options.endpoint + (" split agent/caller" if s.options.split else "")
        parts.append(f"{s.path.name} ({how})")
    return ", ".join(parts)
