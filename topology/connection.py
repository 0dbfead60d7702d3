"""How every aiokafka client of this project reaches the cluster.

One typed settings object, read from the environment, and one function that
turns it into keyword arguments for ``AIOKafkaProducer``,
``AIOKafkaConsumer`` and ``AIOKafkaAdminClient`` (they share these names)::

    settings = KafkaSettings.from_env()
    producer = AIOKafkaProducer(**client_kwargs(settings))

Environment variables (all optional):

=========================  ==================================================
``KAFKA_BOOTSTRAP_SERVERS``  ``host:port[,host:port...]``; unset means the
                             local broker (see ``topology.broker``)
``KAFKA_SECURITY_PROTOCOL``  ``PLAINTEXT`` (default), ``SSL``,
                             ``SASL_PLAINTEXT``, ``SASL_SSL``
``KAFKA_SASL_MECHANISM``     ``PLAIN`` (default), ``SCRAM-SHA-256``,
                             ``SCRAM-SHA-512``
``KAFKA_SASL_USERNAME``      SASL user
``KAFKA_SASL_PASSWORD``      SASL password (never printed, never in ``repr``)
``KAFKA_SSL_CAFILE``         CA bundle that signs the brokers' certificates
``KAFKA_SSL_CERTFILE``       client certificate (mutual TLS)
``KAFKA_SSL_KEYFILE``        client key (mutual TLS)
=========================  ==================================================

This module imports nothing from aiokafka, so the CLI and the worker's
settings can load it cheaply.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from workers.errors import ConfigError

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
"""Name of the variable that points every tool at an existing cluster."""

SECURITY_PROTOCOLS = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
SASL_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})


@dataclass(frozen=True)
class KafkaSettings:
    """Where the cluster is and how to authenticate to it.

    Build it with :meth:`from_env` (or directly in tests), then pass it to
    :func:`client_kwargs`. ``bootstrap_servers`` is empty when the
    environment names no cluster; the caller must then fill it in (the CLI
    uses the local broker's address, see :meth:`with_bootstrap`).
    """

    bootstrap_servers: str = ""
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    # repr=False: settings end up in log lines and tracebacks; the password must not.
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSettings:
        """Read the ``KAFKA_*`` variables; raise ConfigError when they contradict."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        return cls(
            bootstrap_servers=get(BOOTSTRAP_ENV) or "",
            security_protocol=(get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper(),
            sasl_mechanism=(get("KAFKA_SASL_MECHANISM") or "PLAIN").upper(),
            sasl_username=get("KAFKA_SASL_USERNAME"),
            sasl_password=env.get("KAFKA_SASL_PASSWORD") or None,
            ssl_cafile=get("KAFKA_SSL_CAFILE"),
            ssl_certfile=get("KAFKA_SSL_CERTFILE"),
            ssl_keyfile=get("KAFKA_SSL_KEYFILE"),
        )

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in {"SSL", "SASL_SSL"}

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    def with_bootstrap(self, bootstrap_servers: str) -> KafkaSettings:
        """The same credentials, pointed at another address (e.g. the local broker)."""
        return replace(self, bootstrap_servers=bootstrap_servers)

    def describe(self) -> str:
        """One line safe to print: address, protocol and user, never the password."""
        text = f"{self.bootstrap_servers or '(unset)'} ({self.security_protocol}"
        if self.uses_sasl:
            text += f", {self.sasl_mechanism} as {self.sasl_username}"
        return text + ")"


def _validate(settings: KafkaSettings) -> None:
    if settings.security_protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(
            f"KAFKA_SECURITY_PROTOCOL={settings.security_protocol!r} is not one of "
            f"{', '.join(sorted(SECURITY_PROTOCOLS))}"
        )
    if settings.uses_sasl:
        if settings.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(
                f"KAFKA_SASL_MECHANISM={settings.sasl_mechanism!r} is not one of "
                f"{', '.join(sorted(SASL_MECHANISMS))}"
            )
        if not settings.sasl_username or settings.sasl_password is None:
            raise ConfigError(
                f"{settings.security_protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise ConfigError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE must be set together")


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for ``settings``, or None for a plaintext protocol.

    Certificates are verified against ``ssl_cafile`` (the system store when
    unset) and host names are checked, as aiokafka's own helper does.
    """
    if not settings.uses_tls:
        return None
    try:
        context = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile is not None:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the Kafka TLS files: {exc}") from exc
    return context


def client_kwargs(settings: KafkaSettings | None = None) -> dict[str, Any]:
    """Keyword arguments shared by aiokafka's producer, consumer and admin client.

    ``settings`` defaults to :meth:`KafkaSettings.from_env`. Raises
    ConfigError when no bootstrap address is known; the caller adds its own
    options (``client_id``, ``group_id``...) to the returned dict.
    """
    settings = KafkaSettings.from_env() if settings is None else settings
    if not settings.bootstrap_servers:
        raise ConfigError(
            f"no Kafka address: set {BOOTSTRAP_ENV} or start the local broker "
            "with `reson8-kafka kafka up`"
        )
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.uses_sasl:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password
    return kwargs


def resolve_settings(environ: Mapping[str, str] | None = None) -> KafkaSettings:
    """Settings from the environment, or the local broker when none is named.

    Order: ``KAFKA_BOOTSTRAP_SERVERS``, then the broker started by
    ``reson8-kafka kafka up`` (its default state folder). Raises ConfigError
    when neither exists; the caller should tell the user to start one.
    """
    settings = KafkaSettings.from_env(environ)
    if settings.bootstrap_servers:
        return settings
    from topology.broker import status  # lazy: only needed without the env variable

    local = status()
    if local is None:
        raise ConfigError(
            f"no Kafka address: set {BOOTSTRAP_ENV} or start the local broker "
            "with `reson8-kafka kafka up`"
        )
    return settings.with_bootstrap(local.bootstrap)
