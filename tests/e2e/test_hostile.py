"""Thousands of hostile records on the same partitions as good calls (issue 12).

Random bytes, truncated and corrupt containers, extreme header values, bad
and missing keys, oversized values and one-record sessions by the thousand,
interleaved with good sessions of four formats. The worker stays ready
throughout, every hostile record is in the DLQ with the right code, the good
sessions' finals equal a clean run's, and every partition is committed to its
end within seconds of the last record.

Figures (records per second, DLQ latency, the longest event-loop block, the
worker's memory) are printed for the closing note: ``pytest -s``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from emulator.samples import encode
from emulator.server import EmulatorServer
from emulator.tones import expected_finals, synthesize
from tests.e2e.harness import (
    Chunk,
    Outputs,
    Stack,
    WorkerProcess,
    committed_offsets,
    end_offsets,
    produce_records,
    session_records,
)
from tests.fuzz.hostile import catalogue
from topology.connection import client_kwargs
from workers.probe import http_status

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(420)]

PARTITIONS = 4
ONE_RECORD_SESSIONS = 2000
MAX_RECORD_BYTES = 65536
UTTERANCES = [["alpha", "bravo"], ["charlie", "delta", "echo"], ["foxtrot"]]
FORMATS = {  # format -> (headers, timing tolerance in ms)
    "pcm_s16le": ([("stt-encoding", b"pcm_s16le")], 0),
    "wav": ([], 0),
    "ogg-opus": ([], 30),
    "mp3": ([], 30),
}
Expected = dict[tuple[bytes | None, int], str]  # (key, index within its session) -> code


@pytest.fixture
def stack_partitions() -> int:
    return PARTITIONS


def good_sessions() -> dict[str, list[Chunk]]:
    pcm = synthesize(UTTERANCES)
    out = {}
    for fmt, (headers, _) in FORMATS.items():
        data = pcm if fmt == "pcm_s16le" else encode(pcm, 16000, 1, fmt)
        for copy in range(2):
            out[f"good-{fmt}-{copy}"] = session_records(
                data, chunk_bytes=1777 + 5 * copy, first_headers=headers
            )
    return out


def hostile_sessions(rng: random.Random) -> tuple[list[tuple[Any, ...]], Expected]:
    """Hostile records as (key, value, headers) in sessions, and their codes."""
    records: list[tuple[Any, ...]] = []
    codes: Expected = {}

    def session(key: bytes | None, chunks: list[tuple[bytes, tuple[Any, ...], str]]) -> None:
        for index, (value, headers, code) in enumerate(chunks):
            records.append((key, value, headers))
            codes[(key, index)] = code

    end = (("stt-kind", b"end"),)
    for copy in range(20):
        for h in catalogue(seed=copy):
            key = h.key if h.key != b"" else f"h-{h.name}-{copy}".encode()
            if h.code == "undecodable_audio":  # the audio, then its end (the session failed)
                session(key, [(h.value, h.headers, h.code), (b"", end, "session_failed")])
            else:
                session(key, [(h.value, h.headers, h.code)])
        junk = bytes(rng.getrandbits(8) for _ in range(MAX_RECORD_BYTES + 1000))
        session(f"big-{copy}".encode(), [(junk, (), "oversized")])
        for fmt in ("wav", "ogg-opus", "mp3"):  # a real container, cut and corrupted
            data = bytearray(encode(synthesize([["golf"]]), 16000, 1, fmt))
            cut = rng.randrange(40, len(data))
            data = data[:cut]
            for _ in range(10):
                data[rng.randrange(12, len(data))] = rng.getrandbits(8)
            records.append((f"cut-{fmt}-{copy}".encode(), bytes(data), ()))
            records.append((f"cut-{fmt}-{copy}".encode(), b"", end))
    for n in range(ONE_RECORD_SESSIONS):  # one record each, no container header
        value = b"\x00junk" + bytes(rng.getrandbits(8) for _ in range(rng.randrange(8, 600)))
        session(f"one-{n}".encode(), [(value, (), "undecodable_audio")])
    return records, codes


def interleave(good: dict[str, list[Chunk]], hostile: list[tuple[Any, ...]]) -> list[Any]:
    """The good sessions' records spread evenly among the hostile ones (each
    session's records stay in order)."""
    goods = [
        (sid.encode(), cs[i].value, tuple(cs[i].headers))
        for i in range(max(len(cs) for cs in good.values()))
        for sid, cs in good.items()
        if i < len(cs)
    ]
    step = max(1, len(hostile) // len(goods))
    order: list[Any] = []
    for i, record in enumerate(hostile):
        if i % step == 0 and goods:
            order.append(goods.pop(0))
        order.append(record)
    return order + goods


class Watch:
    """Polls the worker's /ready and /healthz while the test runs."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.not_ready = 0
        self.polls = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            status = await http_status(self.worker.web_port, "/ready")
            self.polls += 1
            self.not_ready += status != 200
            await asyncio.sleep(0.2)  # a poll interval, not a wait for a condition

    async def health(self) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.worker.web_port)
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        raw = await reader.read()
        writer.close()
        return dict(json.loads(raw.split(b"\r\n\r\n", 1)[1]))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def test_hostile_records_cost_their_sessions_only(
    stack: Stack, emulator: EmulatorServer, tmp_path: Path
) -> None:
    rng = random.Random(12)
    good = good_sessions()
    hostile, codes = hostile_sessions(rng)
    worker = WorkerProcess(
        stack,
        emulator.url,
        tmp_path / "worker.log",
        env_extra={"RESON8_KAFKA_MAX_RECORD_BYTES": str(MAX_RECORD_BYTES)},
    )
    worker.start()
    try:
        await worker.ready()
        assert worker.proc is not None
        rss_before = peak_rss_kib(worker.proc.pid)
        cpu_before = cpu_seconds(worker.proc.pid)
        watch = Watch(worker)
        watch.task = asyncio.create_task(watch.run())
        async with Outputs(stack) as out:
            started = time.monotonic()
            await produce_records(stack, interleave(good, hostile))
            await out.until(out.ended(good), timeout_s=240)
            letters = await dead_letters_until(stack, codes, timeout_s=120)
            done = time.monotonic()
        ends = await end_offsets(stack)
        await until_committed(stack, ends, timeout_s=30)
        health = await watch.health()
        watch.task.cancel()
        rss_after = peak_rss_kib(worker.proc.pid)
        cpu = cpu_seconds(worker.proc.pid) - cpu_before
    finally:
        worker.stop()

    # The worker stayed ready and its loop was never blocked for long.
    assert watch.polls > 5
    assert watch.not_ready == 0
    assert health["max_loop_lag_s"] < 1.0
    # Every hostile record is in the DLQ with its code.
    got = dlq_codes(letters)
    for (key, index), code in codes.items():
        assert got.get(key, [])[index : index + 1] == [code], (key, index, got.get(key))
    assert not [k for k in got if k is not None and k.startswith(b"good-")]
    # The good sessions' finals equal a clean run's.
    want = expected_finals(UTTERANCES)
    for sid in good:
        tolerance = FORMATS[sid.split("-", 1)[1].rsplit("-", 1)[0]][1]
        finals = out.finals(sid)
        assert [f[0] for f in finals] == [w[0] for w in want], sid
        for (_, gs, _), (_, ws, _) in zip(finals, want, strict=True):
            assert abs(gs - ws) <= tolerance, sid
    report(letters, started, done, health, (rss_before, rss_after), cpu)


async def dead_letters_until(stack: Stack, codes: Expected, timeout_s: float) -> list[Any]:
    """Read the DLQ until every expected dead letter is there."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        stack.topic("stt.audio.dlq"),
        **client_kwargs(stack.kafka),
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    letters: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not all(
            len(got.get(key, [])) > index for got in [dlq_codes(letters)] for key, index in codes
        ):
            assert time.monotonic() < deadline, f"{len(letters)} dead letters so far"
            batches = await consumer.getmany(timeout_ms=500)
            letters += [r for rs in batches.values() for r in rs]
    finally:
        await consumer.stop()
    return letters


def dlq_codes(letters: list[Any]) -> dict[bytes | None, list[str]]:
    got: dict[bytes | None, list[str]] = {}

    def source(record: Any) -> tuple[int, int]:
        headers = dict(record.headers)
        return int(headers["stt-source-partition"]), int(headers["stt-source-offset"])

    for record in sorted(letters, key=source):
        headers = dict(record.headers)
        got.setdefault(record.key, []).append(headers["stt-error-code"].decode())
    return got


async def until_committed(stack: Stack, ends: dict[int, int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        committed = await committed_offsets(stack, stack.prefix + "worker")
        if all(committed.get(p, 0) >= end for p, end in ends.items()):
            return
        assert time.monotonic() < deadline, f"committed {committed}, ends {ends}"
        await asyncio.sleep(0.5)  # the worker commits every second


def report(
    letters: list[Any],
    started: float,
    done: float,
    health: dict[str, Any],
    rss: tuple[int, int],
    cpu: float,
) -> None:
    """Print the figures of the closing note (``pytest -s``)."""
    latencies = sorted(r.timestamp - int(dict(r.headers)["stt-source-timestamp"]) for r in letters)
    codes = Counter(dict(r.headers)["stt-error-code"].decode() for r in letters)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"\nhostile: {len(letters)} dead letters {dict(codes)}; "
        f"{len(letters) / (done - started):.0f} records/s end to end; "
        f"DLQ latency p50 {p50} ms, p99 {p99} ms; "
        f"longest loop block {health['max_loop_lag_s'] * 1000:.0f} ms; "
        f"worker CPU {cpu:.1f} s ({cpu / len(letters) * 1000:.2f} ms per dead letter); "
        f"peak RSS {rss[0] / 1024:.0f} -> {rss[1] / 1024:.0f} MiB"
    )
