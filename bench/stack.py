"""The processes a benchmark run needs, started from the repo's own files.

- :class:`Broker`: a private Kafka broker (``reson8-kafka kafka up`` on a free
  port, state in a temporary folder), always purged on exit, Ctrl-C included.
- :class:`Child`: a Python child process (worker, bridge, load) with its log.
- :class:`Sampler`: reads CPU and RSS of several processes twice a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import procstat
from topology.admin import apply_topology
from topology.connection import KafkaSettings
from topology.topics import build_topology
from workers.probe import http_status

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "workers.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Broker:
    """``with Broker() as broker:`` a running broker at ``broker.bootstrap``."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="reson8-bench-kafka-")
        self.state_dir = Path(self._dir.name) / "state"
        self.bootstrap = ""
        self.pid = 0

    def __enter__(self) -> Broker:
        port = free_port()
        command = [*CLI, "kafka", "up", "--port", str(port), "--state-dir", str(self.state_dir)]
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            self.__exit__()
            raise RuntimeError(f"kafka up failed: {proc.stderr.strip()}")
        self.bootstrap = proc.stdout.split()[0]
        match = re.search(r"pid (\d+)", proc.stderr + proc.stdout)
        self.pid = int(match.group(1)) if match else 0
        return self

    def __exit__(self, *exc: object) -> None:
        command = [*CLI, "kafka", "down", "--state-dir", str(self.state_dir), "--purge"]
        subprocess.run(command, cwd=REPO, capture_output=True, check=False)
        self._dir.cleanup()

    @property
    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap)

    async def create_topics(self, prefix: str, partitions: int) -> None:
        await apply_topology(self.settings, build_topology(prefix, partitions=partitions))


def kafka_version() -> str:
    """The broker version pinned in ``topology/kafka/pom.xml``."""
    pom = (REPO / "topology" / "kafka" / "pom.xml").read_text()
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    return match.group(1) if match else "unknown"


class Child:
    """A child process whose output goes to ``log``; :meth:`stop` kills it."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=self._out,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def line(self, prefix: str, timeout_s: float) -> str:
        """Wait for a stdout line starting with ``prefix``; raise if the process dies."""
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        async with asyncio.timeout(timeout_s):
            while True:
                text = (await asyncio.to_thread(stdout.readline)).decode()
                if not text:
                    raise RuntimeError(f"{self.log.name}: exited; see {self.log}")
                if text.startswith(prefix):
                    return text.strip()

    async def wait(self, timeout_s: float) -> int:
        async with asyncio.timeout(timeout_s):
            return await asyncio.to_thread(self.proc.wait)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self._out.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def worker_env(
    bootstrap: str, api_url: str, prefix: str, partitions: int, web_port: int, datadir: Path
) -> dict[str, str]:
    """The worker's settings for a benchmark (see docs/configuration.md)."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RESON8_API_URL": api_url,
        "RESON8_API_KEY": "bench-key-not-secret",
        "RESON8_KAFKA_APP_ID": prefix + "worker",
        "RESON8_KAFKA_TOPIC_PREFIX": prefix,
        "RESON8_KAFKA_PARTITIONS": str(partitions),
        "RESON8_KAFKA_WEB_PORT": str(web_port),
        "RESON8_KAFKA_WEB_HOST": "127.0.0.1",
        "RESON8_KAFKA_DATADIR": str(datadir),
        "RESON8_KAFKA_LOG_LEVEL": "warning",
    }


async def wait_ready(child: Child, web_port: int, timeout_s: float = 60.0) -> None:
    """Wait until the worker's ``/ready`` answers 200 (it polls: no event to wait on)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"worker exited {child.proc.returncode}; see {child.log}")
        if await http_status(web_port, "/ready") == 200:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"worker not ready in {timeout_s:.0f} s; see {child.log}")


class Sampler:
    """Samples CPU time and RSS of named processes every ``period_s``."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s = period_s
        self.pids: dict[str, int] = {}
        self.samples: dict[str, list[procstat.Sample]] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self.samples[name] = []

    def unwatch(self, name: str) -> None:
        self.pids.pop(name, None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def sample_now(self) -> None:
        now = time.time()
        for name, pid in list(self.pids.items()):
            sample = procstat.read(pid, now)
            if sample is not None:
                self.samples[name].append(sample)

    async def _run(self) -> None:
        while True:
            self.sample_now()
            await asyncio.sleep(self.period_s)  # the sampling period itself

    def cpu(self, name: str, start: float, end: float) -> float:
        return procstat.cpu_between(self.samples.get(name, []), start, end)

    def rss(self, name: str, start: float, end: float) -> float:
        return procstat.peak_rss(self.samples.get(name, []), start, end)
