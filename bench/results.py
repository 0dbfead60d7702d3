"""What one ``make bench`` run measured: plain data, rendered by ``bench.report``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from bench.stats import Percentiles


@dataclass(frozen=True)
class Step:
    """One load step: ``sessions`` live calls for the step's steady window.

    CPU figures are cores (CPU seconds per wall second) over the window;
    ``system_cpu``/``rss_mb`` are those of the system under test (the worker
    or the baseline bridge), the others of the load generator, the bench
    process (emulator and output reader) and the broker.
    """

    sessions: int
    chunk: Percentiles
    final: Percentiles
    system_cpu: float
    rss_mb: float
    producer_cpu: float
    harness_cpu: float
    broker_cpu: float
    drift_ms: float
    behind: str | None = None
    records: int = 0  # audio records produced in the window
    kafka_requests: Mapping[str, int] = field(default_factory=dict)  # by type, in the window
    syscalls: float = math.nan  # of the system under test in the window (perf), NaN if unknown

    @property
    def kept_up(self) -> bool:
        return self.behind is None

    def requests_per_1000(self, kind: str | None = None) -> float:
        """Kafka requests (of ``kind``, or all) per 1,000 audio records."""
        if not self.records or not self.kafka_requests:
            return math.nan
        n = sum(v for k, v in self.kafka_requests.items() if kind is None or k == kind)
        return 1000 * n / self.records

    def syscalls_per_record(self) -> float:
        return self.syscalls / self.records if self.records else math.nan

    def broker_ms_per_session(self) -> float:
        """Broker CPU (ms per second) per live session."""
        return 1000 * self.broker_cpu / self.sessions if self.sessions else math.nan


@dataclass
class Ladder:
    """The steps of one system and input format, in the order they ran."""

    name: str
    system: str  # "worker" | "bridge"
    fmt: str  # "pcm" | "ogg"
    idle_rss_mb: float = math.nan
    steps: list[Step] = field(default_factory=list)

    @property
    def best(self) -> Step | None:
        """The largest load that kept up."""
        good = [s for s in self.steps if s.kept_up]
        return max(good, key=lambda s: s.sessions) if good else None

    @property
    def first_behind(self) -> Step | None:
        late = [s for s in self.steps if not s.kept_up]
        return min(late, key=lambda s: s.sessions) if late else None

    def cpu_per_session(self) -> float:
        """Cores per session at the best step (NaN when no step kept up)."""
        best = self.best
        return best.system_cpu / best.sessions if best else math.nan

    def sessions_per_core(self) -> float:
        """Sessions one fully used core carries, at the best step's cost per session."""
        cost = self.cpu_per_session()
        return 1 / cost if cost and not math.isnan(cost) else math.nan

    def rss_per_session_mb(self) -> float:
        best = self.best
        if best is None or math.isnan(self.idle_rss_mb):
            return math.nan
        return (best.rss_mb - self.idle_rss_mb) / best.sessions

    def target_sessions(self, target_p99_ms: float) -> int | None:
        """Largest load whose produce -> upstream p99 met the target."""
        ok = [s.sessions for s in self.steps if s.kept_up and s.chunk.p99 <= target_p99_ms]
        return max(ok) if ok else None


@dataclass(frozen=True)
class Floors:
    """Raw round trips on this machine, no worker involved."""

    kafka: Percentiles
    websocket: Percentiles


@dataclass(frozen=True)
class Transcode:
    """Decode + resample speed of one codec, multiples of real time (wall)."""

    codec: str
    audio_s: float
    worker_x: float  # ContainerDecoder fed ~100 ms pieces
    plain_x: float  # a plain PyAV decode + resample loop of the whole file


@dataclass(frozen=True)
class Backfill:
    """A backlog replayed un-paced through the worker."""

    sessions: int
    audio_s: float
    wall_s: float
    worker_cpu_s: float

    @property
    def speed(self) -> float:
        """Audio seconds per wall second."""
        return self.audio_s / self.wall_s if self.wall_s else math.nan

    @property
    def per_core(self) -> float:
        """Audio seconds per worker CPU second (per fully used core)."""
        return self.audio_s / self.worker_cpu_s if self.worker_cpu_s else math.nan


@dataclass(frozen=True)
class ProfileRow:
    """One function's share of the worker's samples under load."""

    function: str
    self_pct: float
    total_pct: float


@dataclass(frozen=True)
class Machine:
    command: str
    cores: int
    cpu_model: str
    python: str
    kafka: str
    date: str
    wall_s: float = math.nan


@dataclass
class Results:
    """Everything a run measured; sections that did not run stay empty."""

    machine: Machine
    ladders: list[Ladder] = field(default_factory=list)
    floors: Floors | None = None
    transcode: list[Transcode] = field(default_factory=list)
    backfill: Backfill | None = None
    profile: list[ProfileRow] = field(default_factory=list)
    profile_sessions: int = 0
    plots: list[tuple[str, str]] = field(default_factory=list)  # (caption, file name)

    def ladder(self, system: str, fmt: str) -> Ladder | None:
        for ladder in self.ladders:
            if ladder.system == system and ladder.fmt == fmt:
                return ladder
        return None
