"""Typed worker settings, from environment variables (and CLI flags on top).

Every field has an environment variable: ``RESON8_BASE_URL`` (or its older
name ``RESON8_API_URL``), ``RESON8_API_KEY`` and ``KAFKA_BOOTSTRAP_SERVERS``
by their usual names, everything else as ``RESON8_KAFKA_<FIELD>`` (upper
case). ``docs/configuration.md`` lists them.
The API key is a :class:`~pydantic.SecretStr`: it never appears in ``repr``,
logs or errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from workers.errors import ConfigError

DEFAULT_API_URL = "wss://api.reson8.dev"
ENV_ALIASES: dict[str, str] = {
    "api_url": "RESON8_BASE_URL",
    "api_key": "RESON8_API_KEY",
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
}
# Older names still read when the current one is unset.
DEPRECATED_ALIASES: dict[str, str] = {"api_url": "RESON8_API_URL"}
ENV_PREFIX = "RESON8_KAFKA_"
# Topic max.message.bytes of stt.audio.dlq (topology.topics): a dead letter of
# the largest record stt.audio takes, plus its error and source headers.
DLQ_RECORD_BYTES = 2 * 1024 * 1024 + 128 * 1024


class Settings(BaseModel):
    """Worker configuration. Build with :meth:`from_env`; override from CLI flags
    with :meth:`merged`. Validation errors surface as :class:`ConfigError`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_url: str = Field(
        DEFAULT_API_URL,
        description="Reson8 base URL (wss/ws/https/http); `RESON8_API_URL` is the older name",
    )
    api_key: SecretStr = Field(SecretStr(""), description="Reson8 API key (secret)")
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    app_id: str = Field("reson8-kafka", description="Faust app id = consumer group id")
    topic_prefix: str = Field("", description="prefix of every topic name")
    partitions: int = Field(12, ge=1, description="partitions of stt.audio (Faust tables match)")
    group_instance_id: str | None = Field(None, description="static membership id")
    web_host: str = Field("0.0.0.0", description="health/metrics HTTP bind address")
    web_port: int = Field(6066, ge=0, le=65535, description="health/metrics HTTP port")
    datadir: str = Field(".cache/faust", description="Faust data folder (tables, state)")
    max_record_bytes: int = Field(1_048_576, ge=1024, description="larger records go to the DLQ")
    fetch_max_wait_ms: int = Field(
        5,
        ge=0,
        le=1000,
        description="longest a fetch waits for fetch_min_bytes (adds at most this latency)",
    )
    fetch_min_bytes: int = Field(
        32768,
        ge=1,
        description="bytes a fetch waits for (up to fetch_max_wait_ms): fewer, larger fetches",
    )
    consumer_linger_ms: int = Field(
        3,
        ge=0,
        le=1000,
        description="after a fetch that brought records, let the next gather this long "
        "(fewer, larger runs under load; no delay when idle)",
    )
    producer_linger_ms: int = Field(
        5, ge=0, le=1000, description="how long output records gather into one request"
    )
    producer_max_request_bytes: int = Field(
        DLQ_RECORD_BYTES,
        ge=65536,
        description="largest record the worker produces (a dead letter is cut to fit)",
    )
    upstream_rate: int = Field(16000, description="PCM rate sent upstream for containers")
    g711_upstream: bool = Field(
        False,
        description="send mu-law/A-law to the realtime endpoint as is (only if it accepts them; "
        "else they are expanded to pcm_s16le, as turns gets them untouched)",
    )
    idle_timeout_s: float = Field(300.0, gt=0, description="close a session with no input")
    idle_flush_s: float = Field(2.0, gt=0, description="flush a quiet session after this")
    max_uncovered_s: float = Field(30.0, gt=0, description="force a flush beyond this")
    max_held_s: float = Field(
        60.0,
        gt=0,
        description="decode no further while a stream holds this much uncovered audio "
        "(bounds a session's memory; the input waits as bytes)",
    )
    silence_flush_after_s: float = Field(
        5.0, gt=0, description="flush at the next silence once this much audio is uncovered"
    )
    silence_flush_ms: int = Field(
        300, ge=10, description="trailing silence (local VAD) that makes a flush point"
    )
    end_timeout_s: float = Field(
        10.0,
        gt=0,
        description="give up waiting for finals after this long without any upstream message",
    )
    drain_timeout_s: float = Field(20.0, gt=0, description="SIGTERM drain bound")
    revoke_timeout_s: float = Field(
        5.0,
        gt=0,
        description="rebalance: how long the checkpoints of revoked sessions may take to be "
        "written before the rebalance goes on (the sessions are held, not drained)",
    )
    session_timeout_s: float = Field(
        10.0,
        ge=6,
        le=300,
        description="Kafka consumer session timeout: how soon a dead worker's partitions move "
        "(with static membership: how long a restarting worker keeps them)",
    )
    heartbeat_interval_s: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Kafka consumer heartbeat: how soon a member notices a rebalance (at most "
        "a third of the session timeout)",
    )
    partition_assignor: Literal["sticky", "roundrobin"] = Field(
        "sticky",
        description="how the group assigns partitions: sticky moves only what balance needs "
        "(calls that stay keep their connections); roundrobin is what earlier releases "
        "used: every member of a group needs the same one (docs/operations.md, upgrades)",
    )
    checkpoint_interval_s: float = Field(
        1.0,
        ge=0,
        description="gather the checkpoints of sessions that progressed this long, then write "
        "them together (a takeover may re-emit the finals of that window, same event ids)",
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="upstream handshake timeout")
    ping_interval_s: float = Field(20.0, gt=0, description="client ping interval (s)")
    ping_timeout_s: float = Field(20.0, gt=0, description="drop the link without pong")
    retry_initial_s: float = Field(0.2, gt=0, description="first reconnect delay")
    retry_max_s: float = Field(10.0, gt=0, description="largest reconnect delay")
    retry_attempts: int = Field(
        8, ge=1, description="reconnect attempts without progress before the session fails"
    )
    reconnect_allowance: float = Field(
        10.0, ge=1, description="reconnects a session may spend before covered audio pays for more"
    )
    reconnect_earn_s: float = Field(
        2.0, gt=0, description="seconds of newly covered audio that pay for one more reconnect"
    )
    stall_timeout_s: float = Field(
        15.0,
        gt=0,
        description="replace a connection that owes a flush confirmation and is silent this long",
    )
    telemetry_exporter: Literal["none", "console", "otlp"] = Field(
        "none", description="OpenTelemetry exporter"
    )
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP base URL")
    service_name: str = Field("reson8-kafka-worker", description="OTel service.name")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="event loop (asyncio's own when uvloop is not installed)"
    )

    @field_validator("api_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        return normalize_api_url(value)

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> Settings:
        if self.heartbeat_interval_s * 3 > self.session_timeout_s:
            raise ValueError("heartbeat_interval_s must be at most session_timeout_s / 3")
        return self

    @model_validator(mode="after")
    def _producer_fits_records(self) -> Settings:
        if self.producer_max_request_bytes < self.max_record_bytes + 65536:
            raise ValueError(
                "producer_max_request_bytes must exceed max_record_bytes by 64 KiB "
                "(a dead letter carries the record and its error headers)"
            )
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from the environment, with ``overrides`` (non-None) on top."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            for key in (env_name(name), DEPRECATED_ALIASES.get(name)):
                if key and env.get(key, "") != "" and name not in values:
                    values[name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "settings"
            raise ConfigError(f"setting {field}: {first['msg']}") from None

    def topic(self, name: str) -> str:
        """Full topic name of ``name`` (e.g. ``stt.audio``) with the prefix."""
        return self.topic_prefix + name


def normalize_api_url(value: str) -> str:
    """Accept ``https://``/``wss://``/``http://``/``ws://``; return the ws(s) form
    without a trailing slash. Raises ``ValueError`` for anything else."""
    parts = urlsplit(value.strip())
    scheme = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError("must be a ws://, wss://, http:// or https:// URL")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return ENV_ALIASES.get(field, ENV_PREFIX + field.upper())


CONFIG_DOC_HEADER = """# Configuration reference

Every worker setting is an environment variable; `reson8-kafka worker --help`
lists the CLI flags that override some of them. This page is generated from
`workers/settings.py` (`make docs`); a unit test fails when it is stale.

Kafka security, shared by the worker and `topics apply`:
`KAFKA_SECURITY_PROTOCOL` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
`KAFKA_SASL_MECHANISM` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512),
`KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`, `KAFKA_SSL_CAFILE`,
`KAFKA_SSL_CERTFILE`, `KAFKA_SSL_KEYFILE`.

"""


def configuration_markdown() -> str:
    """The configuration reference (docs/configuration.md), from the model itself."""
    rows = [CONFIG_DOC_HEADER + "| variable | default | meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.default
        if isinstance(default, SecretStr):
            default = "(secret, unset)"
        shown = "" if default is None else f"`{default}`"
        rows.append(f"| `{env_name(name)}` | {shown} | {info.description or ''} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # make docs
    import sys

    sys.stdout.write(configuration_markdown())
