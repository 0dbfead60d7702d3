"""``topics apply`` against a real cluster, through aiokafka's admin client.

The thin I/O shell around :mod:`topology.topics`: :func:`observe` reads the
cluster into :class:`~topology.topics.ObservedTopic` values,
:func:`apply_topology` creates what is missing and, when asked, fixes
what is safe to fix. Every aiokafka error is translated into
:class:`~workers.errors.KafkaUnavailable` here (``retriable`` copied from
aiokafka's own flag).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import (  # type: ignore[import-untyped,unused-ignore]
    AIOKafkaAdminClient,
    NewPartitions,
    NewTopic,
)
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped,unused-ignore]
    ConfigResource,
    ConfigResourceType,
)
from aiokafka.errors import (  # type: ignore[import-untyped,unused-ignore]
    KafkaError,
    for_code,
)

from topology.connection import KafkaSettings, client_kwargs
from topology.topics import (
    Drift,
    ObservedTopic,
    Plan,
    TopicSpec,
    Topology,
    compute_plan,
    config_fixes,
    partition_fixes,
)
from workers.errors import KafkaUnavailable

# DescribeConfigs config_source: set on the topic itself (KIP-226).
_DYNAMIC_TOPIC_CONFIG = 1
_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
METADATA_WAIT_S = 30.0


def _unavailable(what: str, exc: BaseException) -> KafkaUnavailable:
    retriable = bool(getattr(exc, "retriable", True))
    return KafkaUnavailable(f"{what}: {exc!r}", retriable=retriable)


def _check(code: int, what: str, message: str | None = None) -> None:
    if code:
        error = for_code(code)(message or "")
        raise _unavailable(what, error)


@asynccontextmanager
async def admin_client(settings: KafkaSettings, *, timeout_s: float = 30.0) -> AsyncIterator[Any]:
    """A started ``AIOKafkaAdminClient``, closed on exit.

    Raises KafkaUnavailable when the cluster cannot be reached within
    ``timeout_s``.
    """
    admin = AIOKafkaAdminClient(
        **client_kwargs(settings),
        client_id="reson8-kafka-topology",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        try:
            async with asyncio.timeout(timeout_s):
                await admin.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            raise _unavailable(f"cannot reach Kafka at {settings.describe()}", exc) from exc
        yield admin
    finally:
        await admin.close()


def _observed_shapes(metadata: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    shapes: dict[str, tuple[int, int]] = {}
    for topic in metadata:
        if topic["error_code"] == _UNKNOWN_TOPIC:
            continue
        _check(topic["error_code"], f"describing topic {topic['topic']}")
        partitions = topic["partitions"]
        rf = min((len(p["replicas"]) for p in partitions), default=0)
        shapes[topic["topic"]] = (len(partitions), rf)
    return shapes


def _configs_of(resource: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str | None]]:
    _check(
        resource["error_code"],
        f"describing configs of {resource['resource_name']}",
        resource["error_message"],
    )
    effective: dict[str, str] = {}
    overrides: dict[str, str | None] = {}
    for entry in resource["config_entries"]:
        name, value = entry["config_names"], entry["config_value"]
        if value is not None:
            effective[name] = value
        if entry["config_source"] == _DYNAMIC_TOPIC_CONFIG:
            overrides[name] = None if entry["is_sensitive"] else value
    return effective, overrides


async def observe(admin: Any, names: Iterable[str]) -> dict[str, ObservedTopic]:
    """Partitions, replication factor and configs of those ``names`` that exist."""
    try:
        shapes = _observed_shapes(await admin.describe_topics(list(names)))
        if not shapes:
            return {}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in shapes]
        responses = await admin.describe_configs(resources)
    except KafkaError as exc:
        raise _unavailable("describing topics", exc) from exc
    observed: dict[str, ObservedTopic] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            name = resource["resource_name"]
            effective, overrides = _configs_of(resource)
            partitions, rf = shapes[name]
            observed[name] = ObservedTopic(name, partitions, rf, effective, overrides)
    return observed


async def wait_for_topics(admin: Any, partitions: Mapping[str, int], timeout_s: float) -> None:
    """Poll metadata until each topic has its partition count, each with a leader.

    A topic (or a partition) is created on the controller first; producers
    and the next ``observe`` need the broker's metadata cache to catch up.
    ``partitions`` maps topic name -> expected partition count.
    """
    if not partitions:
        return  # an empty Metadata request would mean "all topics"
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = await admin.describe_topics(list(partitions))
        if all(_is_ready(topic, partitions[topic["topic"]]) for topic in metadata):
            return
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(f"topics {sorted(partitions)} not ready after {timeout_s:.0f}s")
        await asyncio.sleep(0.05)  # poll interval, bounded by the deadline


def _is_ready(topic: Mapping[str, Any], expected_partitions: int) -> bool:
    parts = topic["partitions"]
    return (
        topic["error_code"] == 0
        and len(parts) == expected_partitions
        and all(p["leader"] >= 0 for p in parts)
    )


async def create_topics(admin: Any, specs: Iterable[TopicSpec]) -> None:
    """Create ``specs`` and wait until they are usable.

    A topic that appeared meanwhile is not an error (it is left as it is;
    the next plan reports its drift, if any).
    """
    wanted = {s.name: s for s in specs}
    if not wanted:
        return
    new = [
        NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
        for s in wanted.values()
    ]
    try:
        response = await admin.create_topics(new)
        created: dict[str, int] = {}
        for error in response.to_object()["topic_errors"]:
            name, code = error["topic"], error["error_code"]
            if code == 0:
                created[name] = wanted[name].partitions
            elif code != _TOPIC_ALREADY_EXISTS:
                _check(code, f"creating {name}", error["error_message"])
        await wait_for_topics(admin, created, METADATA_WAIT_S)
    except KafkaError as exc:
        raise _unavailable("creating topics", exc) from exc


async def delete_topics(admin: Any, names: Iterable[str]) -> None:
    """Delete ``names``; ones already gone are ignored (used by test clean-up)."""
    try:
        response = await admin.delete_topics(list(names))
    except KafkaError as exc:
        raise _unavailable("deleting topics", exc) from exc
    for name, code, *_ in response.topic_error_codes:
        if code != _UNKNOWN_TOPIC:
            _check(code, f"deleting {name}")


def _merged_configs(seen: ObservedTopic, changes: Mapping[str, str]) -> dict[str, str]:
    hidden = sorted(k for k, v in seen.overrides.items() if v is None and k not in changes)
    if hidden:
        # Sending the set without them would silently reset them to the broker default.
        raise KafkaUnavailable(
            f"{seen.name}: cannot alter configs, sensitive overrides {hidden} are unreadable",
            retriable=False,
        )
    merged = {k: v for k, v in seen.overrides.items() if v is not None}
    merged.update(changes)
    return merged


async def alter_configs(
    admin: Any, changes: Mapping[str, Mapping[str, str]], observed: Mapping[str, ObservedTopic]
) -> None:
    """Set ``changes`` (topic -> {config: value}), keeping the topics' other overrides."""
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, topic, _merged_configs(observed[topic], cfg))
        for topic, cfg in changes.items()
    ]
    if not resources:
        return
    try:
        responses = await admin.alter_configs(resources)
    except KafkaError as exc:
        raise _unavailable("altering topic configs", exc) from exc
    for response in responses:
        for res in response.to_object()["resources"]:
            _check(res["error_code"], f"altering {res['resource_name']}", res["error_message"])
    await wait_for_configs(admin, changes, METADATA_WAIT_S)


async def wait_for_configs(
    admin: Any, changes: Mapping[str, Mapping[str, str]], timeout_s: float
) -> None:
    """Poll until the broker reports ``changes`` as the topics' effective configs.

    AlterConfigs answers once the controller accepted the change; the
    broker that serves DescribeConfigs applies it a moment later, and the
    next ``observe`` must not report drift that is already fixed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        observed = await observe(admin, changes)
        if all(
            name in observed and _has_configs(observed[name], cfg) for name, cfg in changes.items()
        ):
            return
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(f"config changes not visible after {timeout_s:.0f}s")
        await asyncio.sleep(0.05)  # poll interval, bounded by the deadline


def _has_configs(seen: ObservedTopic, configs: Mapping[str, str]) -> bool:
    return all(seen.configs.get(key) == value for key, value in configs.items())


async def add_partitions(admin: Any, totals: Mapping[str, int]) -> None:
    """Raise each topic's partition count to the given total."""
    if not totals:
        return
    try:
        await admin.create_partitions({t: NewPartitions(n) for t, n in totals.items()})
        await wait_for_topics(admin, totals, METADATA_WAIT_S)
    except KafkaError as exc:
        raise _unavailable("adding partitions", exc) from exc


@dataclass(frozen=True)
class ApplyReport:
    """Outcome of :func:`apply_topology`.

    ``remaining`` is the drift still present; the caller should exit
    non-zero when it is not empty.
    """

    plan: Plan
    created: tuple[str, ...]
    fixed: tuple[Drift, ...]
    remaining: tuple[Drift, ...]

    @property
    def ok(self) -> bool:
        return not self.remaining


async def broker_count(settings: KafkaSettings) -> int:
    """How many brokers the cluster's metadata lists (at least 1)."""
    async with admin_client(settings) as admin:
        try:
            cluster = await admin.describe_cluster()
        except KafkaError as exc:
            raise _unavailable("describing the cluster", exc) from exc
    return max(1, len(cluster["brokers"]))


async def read_plan(settings: KafkaSettings, topology: Topology) -> Plan:
    """What ``apply`` would do on the cluster of ``settings``, changing nothing."""
    async with admin_client(settings) as admin:
        observed = await observe(admin, topology.by_name())
    return compute_plan(topology, observed)


async def apply_topology(
    settings: KafkaSettings,
    topology: Topology,
    *,
    fix: bool = False,
    allow_partition_increase: bool = False,
) -> ApplyReport:
    """Create missing topics; with ``fix``, also fix the drift that is safe to fix.

    Never deletes a topic or data. Partition increases happen only with
    ``allow_partition_increase`` (they re-map keys to partitions).
    """
    async with admin_client(settings) as admin:
        observed = await observe(admin, topology.by_name())
        plan = compute_plan(topology, observed)
        await create_topics(admin, plan.create)
        fixable: tuple[Drift, ...] = ()
        if fix:
            fixable = tuple(
                d
                for d in plan.drift
                if d.fixable(allow_partition_increase=allow_partition_increase)
            )
            await alter_configs(admin, config_fixes(fixable), observed)
            await add_partitions(admin, partition_fixes(fixable))
    remaining = tuple(d for d in plan.drift if d not in fixable)
    return ApplyReport(plan, tuple(s.name for s in plan.create), fixable, remaining)
