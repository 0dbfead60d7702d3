"""The load process: N live calls produced to ``stt.audio``, each paced in real time.

Run as ``python -m bench.load ...`` (a process of its own, so its CPU is not
the worker's nor the bench's). Session ``i`` starts ``ramp * i / N`` seconds
after the first, so records of different calls do not arrive in lockstep;
each record is due when its audio has been "captured" (its audio end time
after the session start). One scheduler loop sends whatever is due: cheaper
than a task per call. ``--pace max`` sends everything at once (a backlog).

Writes the produce time (``time.time()``, just before ``send``) of every
record to ``--out`` as a NumPy array ``[session, record]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

import numpy as np
from aiokafka import AIOKafkaProducer

from bench.audio import Records, container_records, ogg_opus_live, pcm_records, tone_program

Headers = list[tuple[str, bytes]]


def session_id(index: int) -> str:
    """Session ``index`` of the whole run; the id doubles as the upstream
    connection's tag (``custom_model_id``), which the emulator must accept."""
    return f"s{index:06d}"


def first_headers(fmt: str, sid: str) -> Headers:
    """Configuration headers of a session's first record; the session id rides in
    ``stt-custom-model-id`` so the emulator can tell the connections apart."""
    tag = [("stt-custom-model-id", sid.encode())]
    if fmt == "pcm":
        return [
            ("stt-encoding", b"pcm_s16le"),
            ("stt-sample-rate", b"16000"),
            ("stt-channels", b"1"),
            *tag,
        ]
    return [("stt-encoding", b"auto"), *tag]


def records_for(fmt: str, duration_s: float) -> Records:
    """The records every session of this load sends."""
    pcm = tone_program(duration_s)
    if fmt == "pcm":
        return pcm_records(pcm)
    return container_records(ogg_opus_live(pcm), len(pcm) / 32000)


def schedule(
    sessions: int, audio_end_s: Sequence[float], ramp_s: float, paced: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(due offsets s, session index, record index) of every record, in due order.

    Unpaced, records are interleaved across sessions (record 0 of every
    session, then record 1...), as a replayed backlog of calls would be.
    """
    count = len(audio_end_s)
    ends = np.asarray(audio_end_s, dtype=np.float64)
    starts = np.arange(sessions, dtype=np.float64) * ramp_s / max(1, sessions)
    if paced:
        due = starts[:, None] + ends[None, :]
    else:
        due = np.broadcast_to(np.arange(count, dtype=np.float64)[None, :], (sessions, count))
    order = np.argsort(due, axis=None, kind="stable")
    rows, cols = np.unravel_index(order, due.shape)
    return due.ravel()[order] * (1.0 if paced else 0.0), rows, cols


async def produce(args: argparse.Namespace) -> np.ndarray:
    records = records_for(args.fmt, args.duration)
    ids = [session_id(args.first + i) for i in range(args.sessions)]
    due, rows, cols = schedule(
        args.sessions, records.audio_end_s, args.ramp, args.pace == "realtime"
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        linger_ms=0,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
        client_id="bench-load",
    )
    await producer.start()
    produced = np.full((args.sessions, len(records.values)), np.nan)
    futures: list[asyncio.Future[object]] = []
    last = len(records.values) - 1
    try:
        await producer.partitions_for(args.topic)
        start = time.time() + 0.2
        print(f"start {start:.6f}", flush=True)
        for offset, i, j in zip(due.tolist(), rows.tolist(), cols.tolist(), strict=True):
            wait = start + offset - time.time()
            if wait > 0:
                await asyncio.sleep(wait)  # pacing: the call's own clock
            key = ids[i].encode()
            headers = first_headers(args.fmt, ids[i]) if j == 0 else []
            produced[i, j] = time.time()
            futures.append(
                await producer.send(args.topic, records.values[j], key=key, headers=headers)
            )
            if j == last:
                futures.append(
                    await producer.send(args.topic, b"", key=key, headers=[("stt-kind", b"end")])
                )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return produced


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--fmt", choices=("pcm", "ogg"), default="pcm")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--first", type=int, required=True, help="index of the first session")
    parser.add_argument("--duration", type=float, required=True, help="audio seconds per call")
    parser.add_argument("--ramp", type=float, default=2.0, help="spread of call starts (s)")
    parser.add_argument("--pace", choices=("realtime", "max"), default="realtime")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    produced = asyncio.run(produce(args))
    np.save(args.out, produced)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
