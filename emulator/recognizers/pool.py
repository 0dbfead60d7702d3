"""Decode jobs in worker processes, one per core, finals first.

The event loop never decodes: :meth:`DecodePool.decode` queues a job and
awaits its words. ``workers`` runner tasks (default: one per core) each take
the most urgent job (finals, then whole files, then interims; oldest first)
and run it in a process of a :class:`concurrent.futures.ProcessPoolExecutor`,
so at most ``workers`` jobs are in flight and a final never waits behind a
queue of interims. An interim that became moot while queued (``wanted``
False) is answered with no words without running. Worker processes are
spawned (never forked from a process with threads) and load their engines
once, at start-up.

Use ``async with DecodePool(("whisper",)) as pool``; :meth:`run` runs any
picklable function there (the prerecorded endpoint transcribes whole files).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from emulator.recognizers.base import DecodeJob, Word

__all__ = ["FILE", "FINAL", "INTERIM", "DecodePool"]

log = logging.getLogger("emulator.pool")

FINAL, FILE, INTERIM = 0, 1, 2  # priorities: lower runs first
_T = TypeVar("_T")


def _warm(engines: Sequence[str]) -> None:
    """Worker-process initializer: load the engines before the first job."""
    from emulator.recognizers.engines import load_engine

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in engines:
        load_engine(name)


def _ready() -> int:
    return os.getpid()


class DecodePool:
    """A priority queue in front of a process pool; start it before use, close it after."""

    def __init__(self, engines: Sequence[str], workers: int | None = None) -> None:
        self.engines = tuple(engines)
        self.workers = workers or os.cpu_count() or 1
        self._executor: ProcessPoolExecutor | None = None
        self._queue: asyncio.PriorityQueue[tuple[int, int, Callable[[], Any], Any]] = (
            asyncio.PriorityQueue()
        )
        self._order = itertools.count()
        self._runners: list[asyncio.Task[None]] = []
        self.jobs_run = 0
        self.jobs_skipped = 0

    async def start(self) -> None:
        """Spawn the processes and wait until each has loaded its engines."""
        context = multiprocessing.get_context("spawn")
        self._executor = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_warm, initargs=(self.engines,)
        )
        loop = asyncio.get_running_loop()
        # One trivial call per process: every initializer has run when they are back.
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, _ready) for _ in range(self.workers))
        )
        self._runners = [loop.create_task(self._runner()) for _ in range(self.workers)]

    async def close(self) -> None:
        """Stop the runners and the processes (queued jobs are dropped)."""
        for task in self._runners:
            task.cancel()
        for task in self._runners:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._runners = []
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def __aenter__(self) -> DecodePool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def decode(self, job: DecodeJob) -> list[Word]:
        """The words of ``job`` (``[]`` when it was moot or its engine failed)."""
        from emulator.recognizers.engines import run_job

        def call() -> Any:
            if not job.wanted:
                self.jobs_skipped += 1
                return None
            return (run_job, job)

        try:
            return await self._submit(FINAL if job.final else INTERIM, call) or []
        except Exception:  # a broken engine costs this utterance, not the server
            log.exception("decode job %d (%s) failed", job.job_id, job.engine)
            return []

    async def run(self, priority: int, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` in a worker process (picklable, module-level ``fn``)."""
        result: _T = await self._submit(priority, lambda: (fn, *args))
        return result

    async def _submit(self, priority: int, call: Callable[[], Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((priority, next(self._order), call, future))
        return await future

    async def _runner(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            _, _, call, future = await self._queue.get()
            if future.done():  # the caller went away
                continue
            try:
                work = call()
                result = None if work is None else await self._execute(loop, work)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(result)

    async def _execute(self, loop: asyncio.AbstractEventLoop, work: tuple[Any, ...]) -> Any:
        if self._executor is None:
            raise RuntimeError("the decode pool is not running")
        self.jobs_run += 1
        return await loop.run_in_executor(self._executor, *work)
