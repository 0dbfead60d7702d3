"""Rebalances of live workers keep what does not move (issue: scale events).

Sixteen live calls (PCM and Ogg/Opus, two per partition) on eight
partitions, produced in real time. Finals are timed by when the worker sent
them (the output records' timestamps), read by a reader that never pauses.

- A worker joins a group of two: it takes over some partitions; every call
  whose partition stayed keeps its upstream connection (no reconnect event,
  one ``session_started``) and its finals keep their usual spacing (+0.5 s).
- A worker leaves (SIGTERM): the same for the calls it did not own.
- Static membership: a worker restarted within the session timeout with its
  instance id gets its partitions back, and the other worker sees no
  rebalance at all.

No final is lost in any of them (every session's deduplicated finals equal
the fault-free transcription).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from emulator.samples import encode
from emulator.server import EmulatorServer
from emulator.tones import expected_finals, synthesize
from schemas.events import SessionEvent
from tests.e2e.harness import (
    Chunk,
    Metrics,
    Outputs,
    Stack,
    WorkerProcess,
    keys_on_partitions,
    produce_live,
    session_records,
    spoken,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

PARTITIONS = 8
UTTERANCES = spoken(24, stride=5, longest=2)
PAUSE_MS = 600
CHUNK_S = 0.1
WANT = expected_finals(UTTERANCES, pause_ms=PAUSE_MS)
TOLERANCE_MS = {"pcm": 10, "ogg": 30}
SETTLED = 4  # finals of every call before the membership changes


@pytest.fixture
def stack_partitions() -> int:
    return PARTITIONS


def calls() -> dict[str, list[Chunk]]:
    pcm = synthesize(UTTERANCES, pause_ms=PAUSE_MS)
    sessions: dict[str, list[Chunk]] = {}
    for sid in keys_on_partitions("pcm", PARTITIONS):
        sessions[sid] = session_records(
            pcm, chunk_bytes=3200, first_headers=[("stt-encoding", b"pcm_s16le")]
        )
    ogg = encode(pcm, 16000, 1, "ogg-opus")
    same_pace = -(-len(ogg) * 3200 // len(pcm))  # as many chunks as PCM: real time
    for sid in keys_on_partitions("ogg", PARTITIONS):
        sessions[sid] = session_records(ogg, chunk_bytes=same_pace)
    return sessions


def check_no_final_lost(out: Outputs, sessions: dict[str, list[Chunk]]) -> None:
    for sid in sessions:
        got = out.finals(sid)
        assert [g[0] for g in got] == [w[0] for w in WANT], sid
        tol = TOLERANCE_MS[sid.split("-")[0]]
        for (_, gs, gd), (_, ws, wd) in zip(got, WANT, strict=True):
            assert abs(gs - ws) <= tol, (sid, gs, ws)
            assert abs(gd - wd) <= 2 * tol, (sid, gd, wd)
        [ended] = out.events("session_ended", sid)
        assert isinstance(ended, SessionEvent)
        assert ended.finals == len(WANT), sid


def gaps(out: Outputs, sid: str) -> list[tuple[float, float]]:
    """(from, to) of every spacing between two consecutive finals of ``sid``."""
    return list(itertools.pairwise(out.final_times(sid)))


def longest_gap(out: Outputs, sid: str) -> float:
    return max(b - a for a, b in gaps(out, sid))


def usual_spacing(
    out: Outputs, sessions: dict[str, list[Chunk]], window: tuple[float, float]
) -> dict[str, float]:
    """Per format, the longest spacing of finals that does not overlap the
    membership change (``window``: from the change until every worker is
    ready again). PCM finals follow the speech (~1.1 s here); an Ogg/Opus
    producer's pages carry ~1 s of audio each, so its finals can come in pairs."""
    usual: dict[str, float] = {}
    for sid in sessions:
        fmt = sid.split("-")[0]
        calm = [b - a for a, b in gaps(out, sid) if b < window[0] or a > window[1]]
        usual[fmt] = max(usual.get(fmt, 0.0), *calm)
    return usual


def split(out: Outputs, sessions: dict[str, list[Chunk]]) -> tuple[list[str], list[str]]:
    """(stayed, moved): a moved session was resumed by a takeover."""
    moved = {
        e.session_id
        for e in out.events("upstream_reconnected")
        if isinstance(e, SessionEvent) and e.reason == "takeover"
    }
    return [s for s in sessions if s not in moved], [s for s in sessions if s in moved]


def reconnects(out: Outputs, sid: str) -> int:
    return len(out.events("upstream_reconnected", sid))


async def rebalance_seconds(workers: list[WorkerProcess], before: list[Metrics]) -> float:
    """The longest rebalance any of ``workers`` went through since ``before``."""
    longest = 0.0
    for worker, earlier in zip(workers, before, strict=True):
        now = await worker.metrics()
        count = now.value("reson8_rebalance_duration_seconds_count") - earlier.value(
            "reson8_rebalance_duration_seconds_count"
        )
        total = now.value("reson8_rebalance_duration_seconds_sum") - earlier.value(
            "reson8_rebalance_duration_seconds_sum"
        )
        if count:
            longest = max(longest, total)  # one rebalance each, in these tests
    return longest


def report(
    kind: str,
    out: Outputs,
    stayed: list[str],
    moved: list[str],
    usual: dict[str, float],
    seconds: float | None,
) -> str:
    def worst(group: list[str]) -> str:
        by_format: dict[str, float] = {}
        for sid in group:
            fmt = sid.split("-")[0]
            by_format[fmt] = max(by_format.get(fmt, 0.0), longest_gap(out, sid))
        return ", ".join(f"{f} {g:.2f} s" for f, g in sorted(by_format.items())) or "-"

    usual_text = ", ".join(f"{f} {g:.2f} s" for f, g in sorted(usual.items()))
    took = "no rebalance" if seconds is None else f"rebalance {seconds:.2f} s"
    return (
        f"\n{kind}: {len(stayed)} sessions stayed ({sum(reconnects(out, s) for s in stayed)} "
        f"reconnects, longest gap {worst(stayed)}), {len(moved)} moved "
        f"({sum(reconnects(out, s) for s in moved)} reconnects, longest gap {worst(moved)}); "
        f"usual spacing {usual_text}; {took}"
    )


def assert_undisturbed(out: Outputs, stayed: list[str], usual: dict[str, float]) -> None:
    for sid in stayed:
        assert reconnects(out, sid) == 0, sid
        assert len(out.events("session_started", sid)) == 1, sid
        [ended] = out.events("session_ended", sid)
        assert isinstance(ended, SessionEvent)
        assert ended.reconnects == 0, sid
        bound = usual[sid.split("-")[0]] + 0.5
        assert longest_gap(out, sid) <= bound, (sid, longest_gap(out, sid), bound)


def worker(stack: Stack, emulator: EmulatorServer, log: Path, **env: str) -> WorkerProcess:
    return WorkerProcess(stack, emulator.url, log, env_extra=env)


async def test_a_worker_joining_moves_only_its_share_and_the_rest_carry_on(
    stack: Stack, emulator: EmulatorServer, tmp_path: Path
) -> None:
    sessions = calls()
    workers = [worker(stack, emulator, tmp_path / f"worker-{i}.log") for i in range(3)]
    for w in workers[:2]:
        w.start()
    try:
        for w in workers[:2]:
            await w.ready()
        async with Outputs(stack) as out:
            producing = asyncio.create_task(produce_live(stack, sessions, chunk_s=CHUNK_S))
            await out.until(lambda _: all(len(out.finals(s)) >= SETTLED for s in sessions), 60)
            changed = time.time()
            before = [await w.metrics() for w in workers[:2]]
            workers[2].start()
            await workers[2].ready()
            settled = time.time()
            assert not producing.done(), "the calls ended before the join"
            await producing
            await out.until(out.ended(sessions), timeout_s=120)
            seconds = await rebalance_seconds(workers[:2], before)
            newcomer = await workers[2].metrics()
    finally:
        for w in workers:
            w.stop()
    check_no_final_lost(out, sessions)
    stayed, moved = split(out, sessions)
    # 8 partitions over 3 members: the newcomer takes 2 (two calls each).
    assert len(moved) == 4, moved
    assert newcomer.value("reson8_sessions_resumed_total") == len(moved)
    usual = usual_spacing(out, sessions, (changed, settled))
    print(report("join", out, stayed, moved, usual, seconds))
    assert_undisturbed(out, stayed, usual)


async def test_a_worker_leaving_hands_over_only_its_own_calls(
    stack: Stack, emulator: EmulatorServer, tmp_path: Path
) -> None:
    sessions = calls()
    workers = [worker(stack, emulator, tmp_path / f"worker-{i}.log") for i in range(3)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            await w.ready()
        async with Outputs(stack) as out:
            producing = asyncio.create_task(produce_live(stack, sessions, chunk_s=CHUNK_S))
            await out.until(lambda _: all(len(out.finals(s)) >= SETTLED for s in sessions), 60)
            changed = time.time()
            before = [await w.metrics() for w in workers[:2]]
            leaving = await workers[2].metrics()
            workers[2].signal(signal.SIGTERM)
            assert await workers[2].wait() == 0
            for w in workers[:2]:
                await w.ready()
            settled = time.time()
            assert not producing.done(), "the calls ended before the leave"
            await producing
            await out.until(out.ended(sessions), timeout_s=120)
            seconds = await rebalance_seconds(workers[:2], before)
    finally:
        for w in workers:
            w.stop()
    check_no_final_lost(out, sessions)
    stayed, moved = split(out, sessions)
    owned = leaving.value("reson8_sessions_active")
    assert len(moved) == owned, (moved, owned)  # the leaver's calls, and only those
    assert 4 <= len(moved) <= 6  # 2 or 3 of the 8 partitions
    usual = usual_spacing(out, sessions, (changed, settled))
    print(report("leave", out, stayed, moved, usual, seconds))
    assert_undisturbed(out, stayed, usual)


async def test_a_static_member_restarted_in_time_gets_its_partitions_back_unnoticed(
    stack: Stack, emulator: EmulatorServer, tmp_path: Path
) -> None:
    sessions = calls()
    group = {"RESON8_KAFKA_SESSION_TIMEOUT_S": "30"}  # the restart must fit in it
    stays = worker(
        stack, emulator, tmp_path / "stays.log", RESON8_KAFKA_GROUP_INSTANCE_ID="w-0", **group
    )
    first = worker(
        stack, emulator, tmp_path / "restarts-1.log", RESON8_KAFKA_GROUP_INSTANCE_ID="w-1", **group
    )
    again = worker(
        stack, emulator, tmp_path / "restarts-2.log", RESON8_KAFKA_GROUP_INSTANCE_ID="w-1", **group
    )
    stays.start()
    try:
        await stays.ready()  # the first member: the group's leader
        first.start()
        await first.ready()
        async with Outputs(stack) as out:
            producing = asyncio.create_task(produce_live(stack, sessions, chunk_s=CHUNK_S))
            await out.until(lambda _: all(len(out.finals(s)) >= SETTLED for s in sessions), 60)
            changed = time.time()
            before = await stays.metrics()
            first.signal(signal.SIGTERM)
            assert await first.wait() == 0
            again.start()
            await again.ready()
            settled = time.time()
            assert not producing.done(), "the calls ended before the restart"
            await producing
            await out.until(out.ended(sessions), timeout_s=120)
            after = await stays.metrics()
            restarted = await again.metrics()
    finally:
        for w in (stays, first, again):
            w.stop()
    check_no_final_lost(out, sessions)
    stayed, moved = split(out, sessions)
    assert after.value("reson8_rebalances_total") == before.value("reson8_rebalances_total")
    assert after.value("reson8_sessions_resumed_total") == 0  # it took nothing over
    assert restarted.value("reson8_sessions_resumed_total") == len(moved) > 0
    usual = usual_spacing(out, sessions, (changed, settled))
    print(report("static restart", out, stayed, moved, usual, None))
    assert_undisturbed(out, stayed, usual)
    starts = Counter(e.session_id for e in out.events("session_started"))
    assert all(starts[s] == 1 for s in sessions)
