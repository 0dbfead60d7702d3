"""Section 5: a backlog of recorded calls replayed un-paced through a fresh worker.

The calls are produced (``bench.load --pace max``) before the worker starts,
so the worker meets a full topic, as after an outage or for a bulk import.
Timed from the worker being ready to every call's upstream connection having
closed (the worker closes it after the call's ``end`` was confirmed).
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid

from bench import stack
from bench.capacity import PARTITIONS, Rig, load_process
from bench.load import session_id
from bench.results import Backfill


async def run(rig: Rig, sessions: int, audio_s: float, timeout_s: float = 240.0) -> Backfill:
    prefix = f"bench.backfill.{uuid.uuid4().hex[:6]}."
    await rig.broker.create_topics(prefix, PARTITIONS)
    first = rig.take_sessions(sessions)
    sids = [session_id(first + i) for i in range(sessions)]
    out = rig.logs / f"backfill-{first}.npy"
    await load_process(rig, prefix + "stt.audio", "pcm", sessions, first, out, audio_s, "max")
    port = stack.free_port()
    env = stack.worker_env(
        rig.broker.bootstrap, rig.emulator.url, prefix, PARTITIONS, port, rig.logs / "faust"
    )
    child = stack.Child([*stack.CLI, "worker"], rig.logs / f"{prefix}log", env)
    rig.sampler.watch("system", child.pid)
    try:
        await stack.wait_ready(child, port)
        rig.sampler.sample_now()
        start = time.time()
        with contextlib.suppress(TimeoutError):
            await rig.emulator.wait_until(lambda: rig.recorder.ended(sids), timeout_s)
        end = time.time()
        rig.sampler.sample_now()
        cpu = rig.sampler.cpu("system", start - 1.0, end + 1.0) * (end - start)
    finally:
        rig.sampler.unwatch("system")
        child.stop()
    done = sum(1 for sid in sids if rig.recorder.ended([sid]))
    if done < sessions:
        print(f"  backfill: only {done} of {sessions} calls finished", file=sys.stderr)
    total = sum(rig.recorder.arrivals(sid)[0][-1:].sum() for sid in sids) / 32000
    rig.recorder.forget(sids)
    return Backfill(sessions, float(total), end - start, cpu)
