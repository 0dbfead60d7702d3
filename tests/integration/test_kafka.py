"""The real broker: produce/consume, ``topics apply`` and drift, ``kafka up/down/status``.

Needs Java 17+ and Maven (or ``KAFKA_BOOTSTRAP_SERVERS``); see tests/kafka_fixtures.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.kafka_fixtures import KafkaTestClient, NewTopic, Record
from topology import broker, cli
from topology.admin import admin_client, apply_topology, observe, read_plan
from topology.connection import KafkaSettings
from topology.topics import DAY_MS, DriftKind, TopicSpec, build_topology

pytestmark = pytest.mark.kafka


def _cli(argv: Sequence[str]) -> int:
    """Run a ``kafka``/``topics`` command as ``reson8-kafka`` would.

    Goes through workers.cli.main when every subsystem's CLI exists;
    until then through topology.cli's own parser and handlers.
    """
    try:
        from workers.cli import main

        return main(list(argv))
    except ImportError:
        parser = argparse.ArgumentParser(prog="reson8-kafka")
        cli.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(list(argv))
        handler: Callable[[argparse.Namespace], int] = args.func
        return handler(args)


async def test_produce_and_consume_with_headers(
    kafka: KafkaTestClient, new_topic: NewTopic
) -> None:
    topic = await new_topic("audio", partitions=3)
    records = [
        Record(f"chunk-{i}".encode(), key=b"session-1", headers=[("stt-seq", str(i).encode())])
        for i in range(5)
    ]
    await kafka.produce(topic, [*records, Record(b"other", key=b"session-2")])

    got = await kafka.consume(topic, 6, timeout_s=30)

    session_1 = [r for r in got if r.key == b"session-1"]
    assert [r.value for r in session_1] == [r.value for r in records]  # one partition, in order
    assert [dict(r.headers)["stt-seq"] for r in session_1] == [b"0", b"1", b"2", b"3", b"4"]
    assert len({r.partition for r in session_1}) == 1


async def test_consume_fails_after_its_deadline(
    kafka: KafkaTestClient, new_topic: NewTopic
) -> None:
    topic = await new_topic("empty")
    with pytest.raises(AssertionError, match="got 0 of 1 records"):
        await kafka.consume(topic, 1, timeout_s=0.5)


async def test_apply_twice_creates_then_changes_nothing(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    topology = build_topology(topic_prefix, partitions=3)

    first = await apply_topology(kafka_settings, topology)
    second = await apply_topology(kafka_settings, topology)

    assert first.created == topology.names.all()
    assert first.ok
    assert second.created == ()
    assert second.plan.is_noop
    assert second.plan.in_sync == topology.names.all()


async def test_applied_topics_carry_their_configs(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    topology = build_topology(topic_prefix, partitions=2)
    await apply_topology(kafka_settings, topology)
    async with admin_client(kafka_settings) as admin:
        observed = await observe(admin, topology.names.all())
    dlq = observed[topology.names.audio_dlq]
    assert dlq.partitions == 2
    assert dlq.configs["retention.ms"] == str(30 * DAY_MS)
    assert dlq.overrides["cleanup.policy"] == "delete"


async def test_wrong_partition_count_is_reported_not_changed(
    kafka_settings: KafkaSettings, topic_prefix: str, new_topic: NewTopic
) -> None:
    topology = build_topology(topic_prefix, partitions=3)
    await new_topic("stt.audio", partitions=1)

    report = await apply_topology(kafka_settings, topology, fix=True)

    (drift,) = report.remaining
    assert (drift.topic, drift.kind) == (topology.names.audio, DriftKind.TOO_FEW_PARTITIONS)
    assert len(report.created) == len(topology.topics) - 1
    plan = await read_plan(kafka_settings, topology)
    assert [d.kind for d in plan.drift] == [DriftKind.TOO_FEW_PARTITIONS]


async def test_partition_increase_only_with_the_flag(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    await apply_topology(kafka_settings, build_topology(topic_prefix, partitions=1))
    wider = build_topology(topic_prefix, partitions=2)

    report = await apply_topology(kafka_settings, wider, fix=True, allow_partition_increase=True)

    assert {d.kind for d in report.fixed} == {DriftKind.TOO_FEW_PARTITIONS}
    assert (await read_plan(kafka_settings, wider)).is_noop


async def test_config_drift_is_fixed_and_other_overrides_kept(
    kafka_settings: KafkaSettings, topic_prefix: str, new_topic: NewTopic
) -> None:
    topology = build_topology(topic_prefix, partitions=1)
    spec = topology.by_name()[topology.names.transcripts]
    configs = {**spec.configs, "retention.ms": "60000", "segment.ms": "3600000"}
    await new_topic("stt.transcripts", configs=configs)

    dry = await apply_topology(kafka_settings, topology)
    fixed = await apply_topology(kafka_settings, topology, fix=True)

    assert [(d.key, d.actual) for d in dry.remaining] == [("retention.ms", "60000")]
    assert [d.key for d in fixed.fixed] == ["retention.ms"]
    assert fixed.ok
    async with admin_client(kafka_settings) as admin:
        seen = (await observe(admin, [spec.name]))[spec.name]
    assert seen.configs["retention.ms"] == str(7 * DAY_MS)
    # AlterConfigs is not incremental: an override we did not resend would be reset.
    assert seen.overrides["segment.ms"] == "3600000"


def test_cli_topics_apply_exit_codes(
    kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    base = ["topics", "apply", "--prefix", topic_prefix, "--replication-factor", "1"]

    assert _cli([*base, "--partitions", "2"]) == 0
    assert _cli([*base, "--partitions", "2"]) == 0
    assert _cli([*base, "--partitions", "3"]) == cli.EXIT_DRIFT
    assert _cli(["topics", "describe", "--check", "--prefix", topic_prefix]) == cli.EXIT_DRIFT

    out = capsys.readouterr().out
    assert f"created  {topic_prefix}stt.audio" in out
    assert f"ok       {topic_prefix}stt.audio.dlq" in out
    assert f"drift    {topic_prefix}stt.audio: partitions is 2, expected 3" in out


def test_kafka_up_status_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    state = ["--state-dir", str(tmp_path / "run")]
    port = str(broker.free_port())
    try:
        assert _cli(["kafka", "status", *state]) == cli.EXIT_NOT_RUNNING
        assert _cli(["kafka", "up", "--port", port, *state]) == 0
        assert _cli(["kafka", "up", "--port", port, *state]) == 0  # idempotent
        assert _cli(["kafka", "status", *state]) == 0
    finally:
        assert _cli(["kafka", "down", *state]) == 0
    assert _cli(["kafka", "status", *state]) == cli.EXIT_NOT_RUNNING
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"127.0.0.1:{port}"] * 4


def test_kafka_up_reports_an_external_broker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")
    assert _cli(["kafka", "up"]) == 0
    assert capsys.readouterr().out == "kafka.example:9092\n"


def test_up_refuses_a_taken_port(tmp_path: Path, kafka_bootstrap: str) -> None:
    from workers.errors import ConfigError

    taken = int(kafka_bootstrap.rsplit(":", 1)[1])
    if not kafka_bootstrap.startswith("127.0.0.1:"):
        pytest.skip("needs the local test broker's port")
    with pytest.raises(ConfigError, match=f"port {taken}"):
        broker.up(taken, tmp_path / "run")


async def test_spec_with_unknown_config_is_refused(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    from topology.admin import create_topics
    from workers.errors import KafkaUnavailable

    bad = TopicSpec(topic_prefix + "bad", 1, 1, {"no.such.config": "1"})
    async with admin_client(kafka_settings) as admin:
        with pytest.raises(KafkaUnavailable, match="creating"):
            await create_topics(admin, [bad])
