"""CLI subcommands of the worker package: ``worker`` (and the user tools).

Top-level imports stay light; Faust is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``worker`` to the ``reson8-kafka`` command line."""
    worker = sub.add_parser(
        "worker",
        help="run the speech-to-text worker (a Kafka consumer group member)",
        description="Consume stt.audio, transcribe with Reson8, publish events. "
        "Every flag has an environment variable (see docs/configuration.md).",
    )
    worker.add_argument("--bootstrap-servers", help="Kafka bootstrap servers")
    worker.add_argument("--api-url", help="Reson8 base URL (env RESON8_BASE_URL)")
    worker.add_argument("--app-id", help="consumer group id (default reson8-kafka)")
    worker.add_argument("--topic-prefix", help="prefix of every topic name")
    worker.add_argument("--partitions", type=int, help="partitions of stt.audio")
    worker.add_argument("--web-port", type=int, help="health/metrics port (default 6066)")
    worker.add_argument("--group-instance-id", help="static membership id (rolling restarts)")
    worker.add_argument(
        "--telemetry",
        dest="telemetry_exporter",
        choices=["none", "console", "otlp"],
        help="OpenTelemetry exporter",
    )
    worker.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    worker.set_defaults(func=run_worker)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "bootstrap_servers",
        "api_url",
        "app_id",
        "topic_prefix",
        "partitions",
        "web_port",
        "group_instance_id",
        "telemetry_exporter",
        "log_level",
    )
    return {name: getattr(args, name) for name in names}


def install_event_loop(name: str) -> str:
    """Make ``name`` the event loop of this process (and of the threads Faust
    starts); returns the one installed: uvloop when asked for and importable
    (10-60 % off every socket and task operation), else asyncio's own."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            return "asyncio (uvloop is not installed)"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    return "asyncio"


def run_worker(args: argparse.Namespace) -> int:
    """Run the worker until SIGTERM/SIGINT (drains, then exits)."""
    from workers.settings import Settings

    overrides = _overrides(args)
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and args.bootstrap_servers is None:
        from topology.connection import resolve_settings

        overrides["bootstrap_servers"] = resolve_settings().bootstrap_servers
    settings = Settings.from_env(**overrides)
    loop = install_event_loop(settings.event_loop)
    print(
        f"reson8-kafka worker: Kafka {settings.bootstrap_servers}, upstream "
        f"{settings.api_url}, group {settings.app_id}, {loop} event loop",
        file=sys.stderr,
    )
    import faust

    from workers.app import create_app

    app = create_app(settings)
    logging.getLogger("workers").setLevel(settings.log_level.upper())
    from workers.upstream import WIRE_DEBUG

    # The upstream client's own wire log (redacted) at debug; otherwise only its
    # warnings: it logs every connection at INFO, which the worker's
    # upstream_connected events and metrics already count.
    wire = WIRE_DEBUG if settings.log_level == "debug" else logging.WARNING
    logging.getLogger("reson8.upstream.wire").setLevel(wire)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    # faust's terminal spinner sets the root logger to DEBUG (Worker.
    # _setup_spinner_handler), so every debug call in aiokafka, websockets and
    # faust builds a LogRecord that no handler prints: ~6 % of the worker's CPU
    # under load (docs/BENCHMARKS.md, profile). No spinner: the level stays.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0  # pragma: no cover - execute_from_commandline exits
