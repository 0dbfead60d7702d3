"""The topics of reson8-kafka as data, and the pure diff against a cluster.

Nothing here does I/O. :func:`build_topology` says what should exist,
:func:`compute_plan` compares it with what a cluster reported
(:class:`ObservedTopic`, filled in by ``topology.admin``) and returns a
:class:`Plan`: topics to create, and drift, each item marked fixable or not.

Why the numbers (see ARCHITECTURE.md, "Delivery"):

- ``stt.audio`` is the durable audio buffer: the worker replays from its
  committed offset after a crash, so retention must outlive any outage we
  intend to recover from (7 days by default).
- Every topic keyed by session id has the same partition count as
  ``stt.audio`` (co-partitioned), so one worker owns a session's input and
  output partitions alike and Faust's changelog lines up with the input.
- ``stt.checkpoints`` holds one entry per live session (where a new owner
  resumes it): compacted, with small segments so compaction keeps the log
  that a worker reads on every partition assignment short.
- The dead-letter topic keeps longer (30 days) because someone has to look
  at it, and accepts slightly larger records than the input, because a dead
  letter is the input record unchanged plus error headers.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DAY_MS = 24 * 60 * 60 * 1000

AUDIO = "stt.audio"
TRANSCRIPTS = "stt.transcripts"
TURNS = "stt.turns"
SESSIONS = "stt.sessions"
AUDIO_DLQ = "stt.audio.dlq"
CHECKPOINTS = "stt.checkpoints"
BASE_NAMES = (AUDIO, TRANSCRIPTS, TURNS, SESSIONS, AUDIO_DLQ, CHECKPOINTS)

DEFAULT_PARTITIONS = 12
LOCAL_REPLICATION_FACTOR = 1
CLUSTER_REPLICATION_FACTOR = 3

AUDIO_MAX_MESSAGE_BYTES = 2 * 1024 * 1024
# A dead letter is the input record plus stt-error-* and source headers.
DLQ_MAX_MESSAGE_BYTES = AUDIO_MAX_MESSAGE_BYTES + 128 * 1024

_LEGAL_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
# Kafka's limit on topic names (Topic.MAX_NAME_LENGTH).
_MAX_NAME_LENGTH = 249


@dataclass(frozen=True)
class TopicNames:
    """The concrete names of the six topics for one prefix.

    Obtain it with :func:`topic_names`; the worker subscribes to ``audio``
    and produces to the others.
    """

    audio: str
    transcripts: str
    turns: str
    sessions: str
    audio_dlq: str
    checkpoints: str

    def all(self) -> tuple[str, ...]:
        return (
            self.audio,
            self.transcripts,
            self.turns,
            self.sessions,
            self.audio_dlq,
            self.checkpoints,
        )


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it yields legal Kafka topic names, else raise ValueError.

    A prefix is prepended as is (``"acme."`` gives ``acme.stt.audio``).
    """
    bad = sorted(set(prefix) - _LEGAL_NAME_CHARS)
    if bad:
        raise ValueError(f"topic prefix {prefix!r} has illegal characters {''.join(bad)!r}")
    longest = max(len(name) for name in BASE_NAMES)
    if len(prefix) + longest > _MAX_NAME_LENGTH:
        raise ValueError(f"topic prefix {prefix!r} makes names longer than {_MAX_NAME_LENGTH}")
    return prefix


def topic_names(prefix: str = "") -> TopicNames:
    """The topic names for ``prefix`` (multi-tenant clusters); raises ValueError if illegal."""
    validate_prefix(prefix)
    return TopicNames(*(prefix + name for name in BASE_NAMES))


@dataclass(frozen=True)
class TopicSpec:
    """One topic as it should exist. ``configs`` holds Kafka topic configs as strings."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def render(self) -> str:
        """A human-readable block: name, shape, then one config per line."""
        lines = [
            f"{self.name}  partitions={self.partitions} "
            f"replication_factor={self.replication_factor}"
        ]
        if self.description:
            lines.append(f"    # {self.description}")
        lines.extend(f"    {key}={value}" for key, value in sorted(self.configs.items()))
        return "\n".join(lines)


@dataclass(frozen=True)
class Topology:
    """All topics for one prefix, co-partitioned. Build it with :func:`build_topology`."""

    prefix: str
    topics: tuple[TopicSpec, ...]

    @property
    def names(self) -> TopicNames:
        return topic_names(self.prefix)

    def by_name(self) -> dict[str, TopicSpec]:
        return {spec.name: spec for spec in self.topics}

    def render(self) -> str:
        return "\n\n".join(spec.render() for spec in self.topics)


def _min_insync(replication_factor: int) -> int:
    # With RF 3, acks=all survives one broker down; RF 1 or 2 cannot demand 2.
    return 2 if replication_factor >= 3 else 1


def _delete_configs(retention_ms: int, replication_factor: int) -> dict[str, str]:
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(retention_ms),
        "min.insync.replicas": str(_min_insync(replication_factor)),
    }


def build_topology(
    prefix: str = "",
    *,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = LOCAL_REPLICATION_FACTOR,
    audio_retention_ms: int = 7 * DAY_MS,
    output_retention_ms: int = 7 * DAY_MS,
    dlq_retention_ms: int = 30 * DAY_MS,
) -> Topology:
    """The desired topics; every topic gets ``partitions`` (co-partitioning).

    Raises ValueError for a bad prefix or non-positive numbers. Use
    ``replication_factor=3`` (:data:`CLUSTER_REPLICATION_FACTOR`) on real clusters.
    """
    if partitions < 1 or replication_factor < 1:
        raise ValueError("partitions and replication factor must be at least 1")
    names = topic_names(prefix)
    rf = replication_factor

    def spec(name: str, configs: dict[str, str], description: str) -> TopicSpec:
        return TopicSpec(name, partitions, rf, configs, description)

    audio_cfg = _delete_configs(audio_retention_ms, rf)
    audio_cfg["max.message.bytes"] = str(AUDIO_MAX_MESSAGE_BYTES)
    dlq_cfg = _delete_configs(dlq_retention_ms, rf)
    dlq_cfg["max.message.bytes"] = str(DLQ_MAX_MESSAGE_BYTES)
    out_cfg = _delete_configs(output_retention_ms, rf)
    checkpoint_cfg = {
        "cleanup.policy": "compact",
        "segment.ms": str(10 * 60 * 1000),
        "min.cleanable.dirty.ratio": "0.1",
        "delete.retention.ms": str(DAY_MS),
        "min.insync.replicas": str(_min_insync(rf)),
    }
    return Topology(
        prefix,
        (
            spec(names.audio, audio_cfg, "input audio chunks; the durable replay buffer"),
            spec(names.transcripts, dict(out_cfg), "transcript events (interim and final)"),
            spec(names.turns, dict(out_cfg), "turn events"),
            # Not compacted: a consumer needs every lifecycle event, not the last one.
            spec(names.sessions, dict(out_cfg), "session lifecycle events"),
            spec(names.audio_dlq, dlq_cfg, "input records that could not be processed"),
            spec(names.checkpoints, checkpoint_cfg, "per-session resume checkpoints (compacted)"),
        ),
    )


@dataclass(frozen=True)
class ObservedTopic:
    """A topic as the cluster reported it.

    ``configs`` holds the effective values; ``overrides`` only those set on
    the topic itself (None where the broker hides a sensitive value). Kafka's
    non-incremental AlterConfigs resets every override it is not sent, so a
    fix must send ``overrides`` back along with the changes.
    """

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)
    overrides: Mapping[str, str | None] = field(default_factory=dict)


class DriftKind(enum.Enum):
    """How an existing topic differs from its spec."""

    TOO_FEW_PARTITIONS = "too_few_partitions"
    TOO_MANY_PARTITIONS = "too_many_partitions"
    REPLICATION_FACTOR = "replication_factor"
    CONFIG = "config"


@dataclass(frozen=True)
class Drift:
    """One difference between a spec and the cluster.

    ``key`` is the config name for CONFIG drift, else ``partitions`` or
    ``replication_factor``. Ask :meth:`fixable` before trying to fix it.
    """

    topic: str
    kind: DriftKind
    key: str
    expected: str
    actual: str

    def fixable(self, *, allow_partition_increase: bool = False) -> bool:
        """Whether ``topics apply --fix`` may change this without losing data.

        Configs are altered in place. Adding partitions keeps data but
        re-maps keys (hash(key) % partitions), so a session's later chunks
        land elsewhere than its earlier ones: allowed only on request.
        Fewer partitions or another replication factor need a new topic or
        a reassignment, which this tool does not do.
        """
        if self.kind is DriftKind.CONFIG:
            return True
        return self.kind is DriftKind.TOO_FEW_PARTITIONS and allow_partition_increase

    def render(self) -> str:
        return f"{self.topic}: {self.key} is {self.actual}, expected {self.expected}"


@dataclass(frozen=True)
class Plan:
    """What ``topics apply`` would do: create ``create``, then deal with ``drift``."""

    create: tuple[TopicSpec, ...]
    drift: tuple[Drift, ...]
    in_sync: tuple[str, ...]

    @property
    def is_noop(self) -> bool:
        return not self.create and not self.drift

    def drift_for(self, topic: str) -> tuple[Drift, ...]:
        return tuple(d for d in self.drift if d.topic == topic)


def _shape_drift(spec: TopicSpec, seen: ObservedTopic) -> list[Drift]:
    drift: list[Drift] = []
    if seen.partitions != spec.partitions:
        kind = (
            DriftKind.TOO_FEW_PARTITIONS
            if seen.partitions < spec.partitions
            else DriftKind.TOO_MANY_PARTITIONS
        )
        drift.append(
            Drift(spec.name, kind, "partitions", str(spec.partitions), str(seen.partitions))
        )
    if seen.replication_factor != spec.replication_factor:
        drift.append(
            Drift(
                spec.name,
                DriftKind.REPLICATION_FACTOR,
                "replication_factor",
                str(spec.replication_factor),
                str(seen.replication_factor),
            )
        )
    return drift


def _config_drift(spec: TopicSpec, seen: ObservedTopic) -> list[Drift]:
    return [
        Drift(spec.name, DriftKind.CONFIG, key, value, seen.configs.get(key, "(unset)"))
        for key, value in sorted(spec.configs.items())
        if seen.configs.get(key) != value
    ]


def topic_drift(spec: TopicSpec, seen: ObservedTopic) -> list[Drift]:
    """Every difference between ``spec`` and the observed topic of the same name."""
    return _shape_drift(spec, seen) + _config_drift(spec, seen)


def compute_plan(topology: Topology, observed: Mapping[str, ObservedTopic]) -> Plan:
    """Compare the desired topics with ``observed`` (name -> topic; absent = missing)."""
    create: list[TopicSpec] = []
    drift: list[Drift] = []
    in_sync: list[str] = []
    for spec in topology.topics:
        seen = observed.get(spec.name)
        if seen is None:
            create.append(spec)
            continue
        found = topic_drift(spec, seen)
        drift.extend(found)
        if not found:
            in_sync.append(spec.name)
    return Plan(tuple(create), tuple(drift), tuple(in_sync))


def config_fixes(drift: Iterable[Drift]) -> dict[str, dict[str, str]]:
    """Topic -> {config: expected value} for the CONFIG items of ``drift``."""
    fixes: dict[str, dict[str, str]] = {}
    for item in drift:
        if item.kind is DriftKind.CONFIG:
            fixes.setdefault(item.topic, {})[item.key] = item.expected
    return fixes


def partition_fixes(drift: Iterable[Drift]) -> dict[str, int]:
    """Topic -> new total partition count for the TOO_FEW_PARTITIONS items of ``drift``."""
    return {
        item.topic: int(item.expected)
        for item in drift
        if item.kind is DriftKind.TOO_FEW_PARTITIONS
    }
