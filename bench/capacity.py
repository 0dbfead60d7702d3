"""Sections 1-3: load ladders through the worker (or the baseline bridge).

A :class:`Rig` holds what every ladder shares (broker, in-process emulator with
its :class:`~bench.recorder.Recorder`, the CPU sampler, timings). A ladder
starts the system under test on fresh topics, then runs steps chosen by
:class:`~bench.search.Search`; after a step that fell behind, the system is
restarted on fresh topics so its backlog does not spill into the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import stack, syscalls
from bench.audio import Records
from bench.load import records_for, session_id
from bench.recorder import OutputReader, Recorder
from bench.results import Ladder, Step
from bench.search import Bounds, Search, behind_reason, drift
from bench.stats import chunk_latency, final_latency
from emulator.server import EmulatorServer

PARTITIONS = 12
MAX_SESSIONS = 100_000


@dataclass(frozen=True)
class Timing:
    """Seconds of one step: call starts spread over ``ramp``, then ``warmup``
    before the measured ``window``, then ``tail`` before the calls end."""

    ramp: float = 2.0
    warmup: float = 3.0
    window: float = 12.0
    tail: float = 1.0
    drain_timeout: float = 20.0

    @property
    def audio_s(self) -> float:
        return self.ramp + self.warmup + self.window + self.tail


@dataclass
class Rig:
    broker: stack.Broker
    emulator: EmulatorServer
    recorder: Recorder
    sampler: stack.Sampler
    logs: Path
    timing: Timing
    bounds: Bounds
    next_session: int = 0

    def take_sessions(self, count: int) -> int:
        """Reserve ``count`` session ids; returns the first index."""
        first = self.next_session
        if first + count > MAX_SESSIONS:
            raise RuntimeError(f"more than {MAX_SESSIONS} sessions in one run")
        self.next_session += count
        return first


def session_tags() -> frozenset[str]:
    """Every session id a run may use: the emulator accepts them as custom models."""
    return frozenset(session_id(i) for i in range(MAX_SESSIONS))


@dataclass
class _System:
    """A running worker or bridge and the topics it works on."""

    child: stack.Child
    prefix: str
    reader: OutputReader
    requests_file: Path

    @property
    def audio_topic(self) -> str:
        return self.prefix + "stt.audio"


@contextlib.asynccontextmanager
async def system(rig: Rig, kind: str, name: str) -> AsyncIterator[_System]:
    """Start the worker or the bridge on fresh topics; stop it on exit."""
    prefix = f"bench.{name}.{uuid.uuid4().hex[:6]}."
    await rig.broker.create_topics(prefix, PARTITIONS)
    log = rig.logs / f"{prefix}log"
    requests_file = rig.logs / f"{prefix}requests.json"
    child = await _start(rig, kind, prefix, log, _counting(requests_file))
    reader = OutputReader(rig.broker.bootstrap, prefix + "stt.transcripts", PARTITIONS)
    await reader.start()
    rig.sampler.watch("system", child.pid)
    try:
        yield _System(child, prefix, reader, requests_file)
    finally:
        rig.sampler.unwatch("system")
        await reader.stop()
        child.stop()


def _counting(requests_file: Path) -> dict[str, str]:
    """Environment that makes a child count its Kafka requests (bench/hooks)."""
    hooks = str(stack.REPO / "bench" / "hooks")
    path = os.pathsep.join(p for p in (hooks, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "RESON8_BENCH_KAFKA_REQUESTS": str(requests_file)}


async def _start(
    rig: Rig, kind: str, prefix: str, log: Path, counting: dict[str, str]
) -> stack.Child:
    if kind == "worker":
        port = stack.free_port()
        env = stack.worker_env(
            rig.broker.bootstrap, rig.emulator.url, prefix, PARTITIONS, port, rig.logs / "faust"
        )
        child = stack.Child([*stack.CLI, "worker"], log, {**env, **counting})
        await stack.wait_ready(child, port)
        return child
    argv = [
        sys.executable, "-m", "bench.bridge",
        "--bootstrap", rig.broker.bootstrap,
        "--source", prefix + "stt.audio",
        "--sink", prefix + "stt.transcripts",
        "--group", prefix + "bridge",
        "--url", rig.emulator.url,
    ]  # fmt: skip
    child = stack.Child(argv, log, counting)
    await child.line("ready", 60.0)
    return child


async def run_ladder(rig: Rig, kind: str, fmt: str, search: Search, name: str) -> Ladder:
    """Step the load up until ``kind`` falls behind on ``fmt`` input."""
    ladder = Ladder(name, kind, fmt)
    history: list[tuple[int, bool]] = []
    records = records_for(fmt, rig.timing.audio_s)
    while (n := search.next(history)) is not None:
        async with system(rig, kind, f"{kind}-{fmt}") as sut:
            if math.isnan(ladder.idle_rss_mb):
                ladder.idle_rss_mb = _idle_rss(rig)
            while n is not None:
                step = await run_step(rig, sut, fmt, n, records)
                ladder.steps.append(step)
                history.append((n, not step.kept_up))
                _progress(name, step)
                n = search.next(history)
                if not step.kept_up:
                    break  # restart on fresh topics: no backlog carried over
    return ladder


async def profile_step(rig: Rig, kind: str, fmt: str, sessions: int, out: Path) -> Step:
    """One extra step at ``sessions`` with py-spy attached (kept out of the ladder:
    the sampler costs CPU on a small machine)."""
    records = records_for(fmt, rig.timing.audio_s)
    async with system(rig, kind, f"{kind}-{fmt}-profile") as sut:
        return await run_step(rig, sut, fmt, sessions, records, profile=out)


def _idle_rss(rig: Rig) -> float:
    rig.sampler.sample_now()
    samples = rig.sampler.samples["system"]
    return samples[-1].rss_mb if samples else math.nan


def _progress(name: str, step: Step) -> None:
    verdict = "kept up" if step.kept_up else f"behind ({step.behind})"
    print(
        f"  {name}: {step.sessions} sessions, CPU {step.system_cpu:.2f}, "
        f"p50/p99 {step.chunk.p50:.1f}/{step.chunk.p99:.1f} ms: {verdict}",
        file=sys.stderr,
        flush=True,
    )


async def run_step(
    rig: Rig,
    sut: _System,
    fmt: str,
    sessions: int,
    records: Records,
    profile: Path | None = None,
) -> Step:
    """One step of ``sessions`` calls; returns its measurements. With
    ``profile``, py-spy samples the system during the window into that file."""
    first = rig.take_sessions(sessions)
    tag = f"{fmt}{sessions}-{first}"
    sids = [session_id(first + i) for i in range(sessions)]
    out = rig.logs / f"{tag}.npy"
    t = rig.timing
    profiler: list[asyncio.Task[None]] = []
    counters: list[asyncio.Task[_Counters]] = []

    def started(t0: float) -> None:
        begin = t0 + t.ramp + t.warmup
        counters.append(asyncio.create_task(_count(sut, begin, t.window)))
        if profile is not None:
            profiler.append(asyncio.create_task(_profile(sut.child.pid, begin, t.window, profile)))

    produced, t0 = await _load(rig, sut, fmt, sessions, first, out, started)
    if profiler:
        await profiler[0]
    counted = await counters[0]
    window = (t0 + t.ramp + t.warmup, t0 + t.ramp + t.warmup + t.window)
    with contextlib.suppress(TimeoutError):
        await rig.emulator.wait_until(lambda: rig.recorder.ended(sids), t.drain_timeout)
    sent = {k: v for k, v in rig.recorder.finals_sent.items() if window[0] <= v <= window[1]}
    await sut.reader.wait_for(list(sent), 5.0)
    step = _measure(rig, sut, sids, produced, records, fmt, window, counted)
    rig.recorder.forget(sids)
    return step


@dataclass(frozen=True)
class _Counters:
    kafka_requests: dict[str, int]
    syscalls: float


async def _count(sut: _System, begin: float, duration: float) -> _Counters:
    """Kafka requests and system calls of the system under test in the window."""
    await asyncio.sleep(max(0.0, begin - time.time()))  # until the window opens
    before = _requests(sut.requests_file)
    calls = await syscalls.count(sut.child.pid, duration)
    await asyncio.sleep(0.6)  # one refresh of the child's counts file, which lags by 0.5 s
    after = _requests(sut.requests_file)
    return _Counters({k: after.get(k, 0) - before.get(k, 0) for k in after}, calls)


def _requests(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()}


async def _load(
    rig: Rig,
    sut: _System,
    fmt: str,
    sessions: int,
    first: int,
    out: Path,
    started: Callable[[float], None],
) -> tuple[np.ndarray, float]:
    return await load_process(
        rig, sut.audio_topic, fmt, sessions, first, out, rig.timing.audio_s, "realtime", started
    )


async def _profile(pid: int, begin: float, duration: float, out: Path) -> None:
    """py-spy record of ``pid`` for ``duration`` seconds from wall time ``begin``."""
    await asyncio.sleep(max(0.0, begin - time.time()))  # until the window opens
    spy = str(Path(sys.executable).with_name("py-spy"))
    argv = [spy, "record", "--pid", str(pid), "--duration", str(int(duration)), "--rate", "100",
            "--format", "raw", "--nonblocking", "--output", str(out)]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    await proc.wait()


async def load_process(
    rig: Rig,
    topic: str,
    fmt: str,
    sessions: int,
    first: int,
    out: Path,
    audio_s: float,
    pace: str,
    started: Callable[[float], None] = lambda t0: None,
) -> tuple[np.ndarray, float]:
    """Run ``bench.load`` to the end; returns its produce times and start time."""
    argv = [
        sys.executable, "-m", "bench.load",
        "--bootstrap", rig.broker.bootstrap, "--topic", topic, "--fmt", fmt,
        "--sessions", str(sessions), "--first", str(first), "--duration", str(audio_s),
        "--ramp", str(rig.timing.ramp), "--pace", pace, "--out", str(out),
    ]  # fmt: skip
    load = stack.Child(argv, out.with_suffix(".log"))
    rig.sampler.watch("load", load.pid)
    try:
        t0 = float((await load.line("start", 60.0)).split()[1])
        started(t0)
        await load.line("done", audio_s + 120.0)
        await load.wait(30.0)
    finally:
        rig.sampler.unwatch("load")
        load.stop()
    return np.load(out), t0


def _measure(
    rig: Rig,
    sut: _System,
    sids: list[str],
    produced: np.ndarray,
    records: Records,
    fmt: str,
    window: tuple[float, float],
    counted: _Counters,
) -> Step:
    arrivals = {sid: rig.recorder.arrivals(sid) for sid in sids}
    chunks = chunk_latency(produced, records.positions(), arrivals, sids, window)
    sent_in_window = produced[(produced >= window[0]) & (produced <= window[1])]
    finals = final_latency(rig.recorder.finals_sent, sut.reader.readable, window)
    growth = drift(chunks.sent_at, chunks.latencies_ms)
    chunk = chunks.summary()
    s = rig.sampler
    return Step(
        sessions=len(sids),
        chunk=chunk,
        final=finals,
        system_cpu=s.cpu("system", *window),
        rss_mb=s.rss("system", *window),
        producer_cpu=s.cpu("load", *window),
        harness_cpu=s.cpu("bench", *window),
        broker_cpu=s.cpu("broker", *window),
        drift_ms=growth,
        behind=behind_reason(chunk, growth, rig.bounds) if sent_in_window.size else "no load",
        records=int(sent_in_window.size),
        kafka_requests=counted.kafka_requests,
        syscalls=counted.syscalls,
    )
