"""Pure tests of topology.topics (specs, prefixes, drift), topology.connection and the CLI text."""

from __future__ import annotations

import argparse
import ssl
from dataclasses import replace
from pathlib import Path

import pytest

from topology import broker, cli
from topology.connection import KafkaSettings, client_kwargs
from topology.topics import (
    AUDIO_DLQ,
    BASE_NAMES,
    DAY_MS,
    DriftKind,
    ObservedTopic,
    TopicSpec,
    build_topology,
    compute_plan,
    config_fixes,
    partition_fixes,
    topic_names,
)
from workers.errors import ConfigError


def observed_as_planned(spec: TopicSpec) -> ObservedTopic:
    return ObservedTopic(spec.name, spec.partitions, spec.replication_factor, dict(spec.configs))


# --- names and specs -----------------------------------------------------------------------


def test_topic_names_apply_the_prefix() -> None:
    names = topic_names("acme.")
    assert names.audio == "acme.stt.audio"
    assert names.audio_dlq == "acme.stt.audio.dlq"
    assert names.all() == tuple("acme." + n for n in BASE_NAMES)


def test_topic_names_without_prefix_are_the_contract_names() -> None:
    assert topic_names().all() == (
        "stt.audio",
        "stt.transcripts",
        "stt.turns",
        "stt.sessions",
        "stt.audio.dlq",
        "stt.checkpoints",
    )


@pytest.mark.parametrize("prefix", ["a b.", "ü.", "x/", "p" * 240])
def test_illegal_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        topic_names(prefix)


def test_every_topic_is_co_partitioned_with_the_input() -> None:
    topology = build_topology("t.", partitions=7, replication_factor=3)
    assert {spec.partitions for spec in topology.topics} == {7}
    assert {spec.replication_factor for spec in topology.topics} == {3}
    assert [spec.name for spec in topology.topics] == list(topology.names.all())


def test_defaults_retention_and_sizes() -> None:
    specs = build_topology().by_name()
    assert specs["stt.audio"].partitions == 12
    assert specs["stt.audio"].configs["retention.ms"] == str(7 * DAY_MS)
    assert specs["stt.transcripts"].configs["retention.ms"] == str(7 * DAY_MS)
    assert specs[AUDIO_DLQ].configs["retention.ms"] == str(30 * DAY_MS)
    assert all(
        s.configs["cleanup.policy"] == "delete" for n, s in specs.items() if n != "stt.checkpoints"
    )
    # The checkpoints are a table: only the last entry per session matters.
    assert specs["stt.checkpoints"].configs["cleanup.policy"] == "compact"
    # A dead letter is the input record plus headers: it must fit.
    audio_max = int(specs["stt.audio"].configs["max.message.bytes"])
    assert int(specs[AUDIO_DLQ].configs["max.message.bytes"]) > audio_max


@pytest.mark.parametrize(("rf", "min_isr"), [(1, "1"), (2, "1"), (3, "2"), (5, "2")])
def test_min_insync_follows_replication(rf: int, min_isr: str) -> None:
    topology = build_topology(replication_factor=rf)
    assert {s.configs["min.insync.replicas"] for s in topology.topics} == {min_isr}


@pytest.mark.parametrize(("partitions", "rf"), [(0, 1), (1, 0)])
def test_non_positive_shapes_are_refused(partitions: int, rf: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        build_topology(partitions=partitions, replication_factor=rf)


def test_render_lists_shape_and_configs() -> None:
    text = build_topology("p.", partitions=3).render()
    assert "p.stt.audio  partitions=3 replication_factor=1" in text
    assert "    retention.ms=604800000" in text


# --- drift ---------------------------------------------------------------------------------------


def test_missing_topics_are_created() -> None:
    topology = build_topology(partitions=3)
    plan = compute_plan(topology, {})
    assert plan.create == topology.topics
    assert not plan.drift
    assert not plan.is_noop


def test_matching_cluster_is_a_noop() -> None:
    topology = build_topology(partitions=3)
    observed = {s.name: observed_as_planned(s) for s in topology.topics}
    plan = compute_plan(topology, observed)
    assert plan.is_noop
    assert plan.in_sync == tuple(s.name for s in topology.topics)


def test_extra_broker_configs_are_not_drift() -> None:
    topology = build_topology(partitions=3)
    observed = {
        s.name: replace(observed_as_planned(s), configs={**s.configs, "segment.bytes": "1"})
        for s in topology.topics
    }
    assert compute_plan(topology, observed).is_noop


def test_config_drift_is_fixable() -> None:
    topology = build_topology(partitions=3)
    audio = topology.by_name()["stt.audio"]
    seen = replace(observed_as_planned(audio), configs={**audio.configs, "retention.ms": "1000"})
    plan = compute_plan(topology, {audio.name: seen})
    (drift,) = plan.drift_for("stt.audio")
    assert (drift.kind, drift.key, drift.actual) == (DriftKind.CONFIG, "retention.ms", "1000")
    assert drift.fixable()
    assert config_fixes(plan.drift) == {"stt.audio": {"retention.ms": str(7 * DAY_MS)}}
    assert len(plan.create) == 5


def test_unset_config_is_drift() -> None:
    topology = build_topology(partitions=1)
    spec = topology.topics[0]
    configs = {k: v for k, v in spec.configs.items() if k != "max.message.bytes"}
    seen = replace(observed_as_planned(spec), configs=configs)
    (drift,) = compute_plan(topology, {spec.name: seen}).drift
    assert drift.actual == "(unset)"


def test_too_few_partitions_needs_the_explicit_flag() -> None:
    topology = build_topology(partitions=6)
    spec = topology.topics[0]
    seen = replace(observed_as_planned(spec), partitions=3)
    (drift,) = compute_plan(topology, {spec.name: seen}).drift
    assert drift.kind is DriftKind.TOO_FEW_PARTITIONS
    assert not drift.fixable()
    assert drift.fixable(allow_partition_increase=True)
    assert partition_fixes([drift]) == {spec.name: 6}
    assert drift.render() == "stt.audio: partitions is 3, expected 6"


@pytest.mark.parametrize(
    ("partitions", "rf", "kind"),
    [(24, 1, DriftKind.TOO_MANY_PARTITIONS), (12, 3, DriftKind.REPLICATION_FACTOR)],
)
def test_shrinking_and_replication_are_never_fixable(
    partitions: int, rf: int, kind: DriftKind
) -> None:
    topology = build_topology(partitions=12)
    spec = topology.topics[0]
    seen = replace(observed_as_planned(spec), partitions=partitions, replication_factor=rf)
    (drift,) = compute_plan(topology, {spec.name: seen}).drift
    assert drift.kind is kind
    assert not drift.fixable(allow_partition_increase=True)
    assert partition_fixes([drift]) == {}
    assert config_fixes([drift]) == {}


def test_render_plan_hints_how_to_fix() -> None:
    topology = build_topology(partitions=6)
    audio, transcripts = topology.topics[:2]
    observed = {
        audio.name: replace(observed_as_planned(audio), partitions=3),
        transcripts.name: replace(
            observed_as_planned(transcripts), configs={**transcripts.configs, "retention.ms": "5"}
        ),
    }
    lines = cli.render_plan(compute_plan(topology, observed))
    assert lines[:3] == [
        "missing  stt.turns (partitions=6)",
        "missing  stt.sessions (partitions=6)",
        "missing  stt.audio.dlq (partitions=6)",
    ]
    assert any("--allow-partition-increase" in line for line in lines)
    assert any(line.endswith("(fix with --fix)") for line in lines)


# --- connection settings ------------------------------------------------------------------------


def test_settings_from_env_plaintext() -> None:
    settings = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092"})
    assert client_kwargs(settings) == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_settings_never_show_the_password() -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "k:9093",
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "scram-sha-512",
        "KAFKA_SASL_USERNAME": "svc",
        "KAFKA_SASL_PASSWORD": "hunter2",
    }
    settings = KafkaSettings.from_env(env)
    kwargs = client_kwargs(settings)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_password"] == "hunter2"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in settings.describe()
    assert settings.describe() == "k:9093 (SASL_SSL, SCRAM-SHA-512 as svc)"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "KAFKA_SASL_USERNAME"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "GSSAPI"},
            "KAFKA_SASL_MECHANISM",
        ),
        ({"KAFKA_SSL_CERTFILE": "/c.pem"}, "KAFKA_SSL_KEYFILE"),
    ],
)
def test_contradictory_settings_are_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KafkaSettings.from_env(env)


def test_missing_tls_file_is_a_config_error() -> None:
    settings = KafkaSettings("k:9093", "SSL", ssl_cafile="/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="TLS files"):
        client_kwargs(settings)


def test_no_bootstrap_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="kafka up"):
        client_kwargs(KafkaSettings())


# --- broker configuration (pure parts) --------------------------------------------------------


def test_server_properties_single_node_kraft() -> None:
    text = broker.server_properties(19092, 19093, Path("/d"))
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_cluster_ids_have_kafka_uuid_shape() -> None:
    ids = {broker.new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_cli_registers_its_commands() -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["topics", "apply", "--prefix", "x.", "--fix", "--partitions", "3"])
    assert (args.prefix, args.partitions, args.fix) == ("x.", 3, True)
    assert not args.allow_partition_increase
    assert parser.parse_args(["kafka", "up"]).port == 9092
