"""Fixtures shared by the whole-process tests: the emulator, topics, a worker.

A module that needs another partition count overrides ``stack_partitions``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from emulator.server import EmulatorConfig, EmulatorServer
from tests.e2e.harness import Stack, WorkerProcess
from topology.connection import KafkaSettings


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    """The emulator with the deterministic recognizer (exact expected words)."""
    async with EmulatorServer(EmulatorConfig(recognizer="tones")) as server:
        yield server


@pytest.fixture
def stack_partitions() -> int:
    return 3


@pytest.fixture
async def stack(kafka_settings: KafkaSettings, topic_prefix: str, stack_partitions: int) -> Stack:
    """This test's topics (unique prefix), created."""
    s = Stack(kafka_settings, topic_prefix, partitions=stack_partitions)
    await s.create_topics()
    return s


@pytest.fixture
async def worker(
    stack: Stack, emulator: EmulatorServer, tmp_path: Path
) -> AsyncIterator[WorkerProcess]:
    """A ready worker process on ``stack`` talking to ``emulator``."""
    proc = WorkerProcess(stack, emulator.url, tmp_path / "worker.log")
    proc.start()
    try:
        await proc.ready()
        yield proc
    finally:
        proc.stop()
