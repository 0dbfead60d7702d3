"""``reson8-kafka kafka up|down|status`` and ``reson8-kafka topics apply|describe``.

Light at import time (argparse only); handlers import the broker and the
aiokafka-based admin code when they run. ``kafka ...`` commands print the
bootstrap address alone on stdout (so ``export
KAFKA_BOOTSTRAP_SERVERS=$(reson8-kafka kafka up)`` works) and details on
stderr. Exit statuses: 0 fine, 1 error (printed by ``workers.cli``),
``kafka status`` 1 when not running, ``topics apply`` 3 when drift remains.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from topology.admin import ApplyReport
    from topology.connection import KafkaSettings
    from topology.topics import Drift, Plan, Topology

EXIT_DRIFT = 3
EXIT_NOT_RUNNING = 1
_BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"  # == topology.connection.BOOTSTRAP_ENV (kept light)


def _info(text: str) -> None:
    print(text, file=sys.stderr)


def _external_bootstrap() -> str | None:
    return os.environ.get(_BOOTSTRAP_ENV, "").strip() or None


def _state_dir(args: argparse.Namespace) -> Path | None:
    state_dir: str | None = args.state_dir
    return Path(state_dir) if state_dir else None


# --- kafka up | down | status -----------------------------------------------------------


def _kafka_up(args: argparse.Namespace) -> int:
    external = _external_bootstrap()
    if external is not None:
        print(external)
        _info(f"using {_BOOTSTRAP_ENV}={external}; no local broker started")
        return 0
    from topology import broker

    state = broker.up(args.port, _state_dir(args))
    print(state.bootstrap)
    _info(f"Kafka ready at {state.bootstrap} (pid {state.pid}, log {state.log_file})")
    return 0


def _kafka_down(args: argparse.Namespace) -> int:
    from topology import broker

    state = broker.down(_state_dir(args), purge=args.purge)
    if state is None:
        _info("no local Kafka was running")
        return 0
    print(state.bootstrap)
    _info(f"Kafka at {state.bootstrap} stopped" + (", data deleted" if args.purge else ""))
    return 0


def _kafka_status(args: argparse.Namespace) -> int:
    from topology import broker

    external = _external_bootstrap()
    if external is not None:
        from topology.connection import KafkaSettings, client_kwargs

        # Same credentials as every other client, so a SASL cluster is probed correctly.
        kwargs = client_kwargs(KafkaSettings.from_env())
        asyncio.run(broker.probe(external, **_probe_options(kwargs)))
        print(external)
        _info(f"Kafka at {external} answers (from {_BOOTSTRAP_ENV})")
        return 0
    state = broker.status(_state_dir(args))
    if state is None:
        _info("no local Kafka is running; start it with `reson8-kafka kafka up`")
        return EXIT_NOT_RUNNING
    print(state.bootstrap)
    _info(f"Kafka running at {state.bootstrap} (pid {state.pid}, data {state.data_dir})")
    return 0


def _probe_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k != "bootstrap_servers"}


# --- topics apply | describe ------------------------------------------------------------


def _topology(args: argparse.Namespace, replication_factor: int) -> Topology:
    from topology.topics import build_topology
    from workers.errors import ConfigError

    try:
        return build_topology(
            args.prefix, partitions=args.partitions, replication_factor=replication_factor
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


async def _replication_factor(args: argparse.Namespace, settings: KafkaSettings) -> int:
    if args.replication_factor is not None:
        rf: int = args.replication_factor
        return rf
    from topology.admin import broker_count
    from topology.topics import CLUSTER_REPLICATION_FACTOR

    # RF 3 on a real cluster, whatever a smaller (dev, CI) cluster can hold.
    return min(CLUSTER_REPLICATION_FACTOR, await broker_count(settings))


def _fix_hint(item: Drift) -> str:
    if item.fixable():
        return "fix with --fix"
    if item.fixable(allow_partition_increase=True):
        return "fix with --fix --allow-partition-increase; re-maps keys"
    return "not fixable by this tool"


def render_plan(plan: Plan) -> list[str]:
    """Lines describing ``plan``: what is missing, in sync, and drifted."""
    lines = [f"missing  {spec.name} (partitions={spec.partitions})" for spec in plan.create]
    lines += [f"ok       {name}" for name in plan.in_sync]
    lines += [f"drift    {item.render()} ({_fix_hint(item)})" for item in plan.drift]
    return lines


def render_report(report: ApplyReport) -> list[str]:
    """Lines describing what ``topics apply`` did and what drift remains."""
    lines = [f"created  {name}" for name in report.created]
    lines += [f"ok       {name}" for name in report.plan.in_sync]
    lines += [f"fixed    {item.render()}" for item in report.fixed]
    lines += [f"drift    {item.render()} ({_fix_hint(item)})" for item in report.remaining]
    if any(item.key == "partitions" for item in report.fixed):
        lines.append(
            "warning: partitions were added; keys now hash to other partitions, so a "
            "session's new records may land on another partition than its old ones"
        )
    return lines


async def _apply(args: argparse.Namespace) -> int:
    from topology.admin import apply_topology
    from topology.connection import resolve_settings

    settings = resolve_settings()
    topology = _topology(args, await _replication_factor(args, settings))
    report = await apply_topology(
        settings,
        topology,
        fix=args.fix,
        allow_partition_increase=args.allow_partition_increase,
    )
    for line in render_report(report):
        print(line)
    if not report.ok:
        hint = "" if args.fix else " (see --fix)"
        _info(f"{len(report.remaining)} drift item(s) remain on {settings.describe()}{hint}")
        return EXIT_DRIFT
    return 0


def _topics_apply(args: argparse.Namespace) -> int:
    return asyncio.run(_apply(args))


async def _check(args: argparse.Namespace) -> int:
    from topology.admin import read_plan
    from topology.connection import resolve_settings

    settings = resolve_settings()
    topology = _topology(args, await _replication_factor(args, settings))
    plan = await read_plan(settings, topology)
    for line in render_plan(plan):
        print(line)
    return 0 if plan.is_noop else EXIT_DRIFT


def _topics_describe(args: argparse.Namespace) -> int:
    if args.check:
        return asyncio.run(_check(args))
    from topology.topics import LOCAL_REPLICATION_FACTOR

    rf = args.replication_factor or LOCAL_REPLICATION_FACTOR
    print(_topology(args, rf).render())
    return 0


# --- registration -----------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_topology_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default="", help="topic name prefix, e.g. 'acme.'")
    parser.add_argument(
        "--partitions", type=_positive, default=12, help="partitions of every topic (default 12)"
    )
    parser.add_argument(
        "--replication-factor",
        type=_positive,
        default=None,
        help="default: min(3, brokers in the cluster); 1 for describe",
    )


def _register_kafka(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kafka = sub.add_parser("kafka", help="the local single-node Kafka broker")
    cmds = kafka.add_subparsers(dest="kafka_command", required=True)
    up = cmds.add_parser("up", help="start it (or find it running) and print its address")
    up.add_argument("--port", type=_positive, default=9092, help="listener port (default 9092)")
    up.set_defaults(func=_kafka_up)
    down = cmds.add_parser("down", help="stop it (SIGTERM, then SIGKILL)")
    down.add_argument("--purge", action="store_true", help="also delete its data")
    down.set_defaults(func=_kafka_down)
    status = cmds.add_parser("status", help="print its address; exit 1 if not running")
    status.set_defaults(func=_kafka_status)
    for parser in (up, down, status):
        parser.add_argument("--state-dir", default=None, help="default: .cache/kafka/run")


def _register_topics(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = sub.add_parser("topics", help="the topic topology")
    cmds = topics.add_subparsers(dest="topics_command", required=True)
    apply = cmds.add_parser("apply", help="create missing topics, report (and --fix) drift")
    _add_topology_options(apply)
    apply.add_argument("--fix", action="store_true", help="alter drifted configs")
    apply.add_argument(
        "--allow-partition-increase",
        action="store_true",
        help="with --fix, also add partitions (re-maps keys to partitions)",
    )
    apply.set_defaults(func=_topics_apply)
    describe = cmds.add_parser("describe", help="print the topic specs")
    _add_topology_options(describe)
    describe.add_argument(
        "--check", action="store_true", help="compare with the cluster; exit 3 on differences"
    )
    describe.set_defaults(func=_topics_describe)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``kafka`` and ``topics`` commands to the top-level subparsers."""
    _register_kafka(sub)
    _register_topics(sub)
