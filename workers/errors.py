"""The one exception tree of reson8-kafka.

::

    Reson8KafkaError                 base; every error has ``retriable``
    ├── ConfigError                  bad settings / CLI arguments (not retriable)
    ├── InputError                   a bad input record -> dead-letter topic
    │   └── DecodeError              audio that cannot be demuxed/decoded
    ├── UpstreamError                the Reson8 connection (session_id, status, close_code, reason)
    │   ├── UpstreamRefused          handshake refused with an HTTP status
    │   ├── UpstreamClosed           connection lost after it was open
    │   ├── UpstreamProtocolError    a malformed or unexpected server frame
    │   └── UpstreamStalled          an open connection owed an answer and stayed silent
    ├── PublishError                 an output record could not be produced (topic, code)
    └── KafkaUnavailable             broker unreachable / topology problems

Foreign errors (``websockets``, ``av``, ``aiokafka``) are translated at the
boundary with ``raise ... from`` so callers only catch these. No error message
ever contains an API key: build messages from structured fields, not from
request objects.
"""

from __future__ import annotations


class Reson8KafkaError(Exception):
    """Base of every error raised by this project."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class ConfigError(Reson8KafkaError):
    """A setting or CLI argument is invalid; the caller should fix it, not retry."""


class InputError(Reson8KafkaError):
    """An input record cannot be processed; route it to the dead-letter topic.

    ``code`` is the machine-readable ``stt-error-code`` header value.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class DecodeError(InputError):
    """Audio bytes could not be demuxed or decoded."""

    def __init__(self, detail: str) -> None:
        super().__init__("undecodable_audio", detail)


class UpstreamError(Reson8KafkaError):
    """The Reson8 WebSocket failed. ``retriable`` tells whether to reconnect."""

    def __init__(
        self,
        message: str,
        *,
        session_id: str | None = None,
        status: int | None = None,
        close_code: int | None = None,
        code: str | None = None,
        retriable: bool | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, retriable=retriable)
        self.session_id = session_id
        self.status = status
        self.close_code = close_code
        self.code = code
        self.reason = reason  # the reconnect reason when no status/close code says it


class UpstreamRefused(UpstreamError):
    """The handshake was refused. 400/401/402 are permanent for the session;
    429 and 5xx are retriable (see reson8-protocol.md, "Errors")."""

    def __init__(
        self,
        status: int,
        *,
        code: str | None = None,
        detail: str | None = None,
        session_id: str | None = None,
    ) -> None:
        retriable = status == 429 or status >= 500
        msg = f"upstream refused the connection: HTTP {status}"
        if code:
            msg += f" {code.upper()}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg, session_id=session_id, status=status, code=code, retriable=retriable)
        self.detail = detail


class UpstreamClosed(UpstreamError):
    """An open connection was lost (drop, ping timeout, server close). Retriable."""

    def __init__(
        self, message: str, *, close_code: int | None = None, session_id: str | None = None
    ) -> None:
        super().__init__(message, close_code=close_code, session_id=session_id, retriable=True)


class UpstreamProtocolError(UpstreamError):
    """The server sent a frame that is not valid protocol. Retriable: the link
    is replaced and the uncovered audio replayed; repeated ones spend the
    session's reconnect budget."""

    def __init__(self, message: str, *, session_id: str | None = None) -> None:
        super().__init__(message, session_id=session_id, retriable=True, reason="protocol_error")


class UpstreamStalled(UpstreamError):
    """An open connection owed an answer (a flush) and sent nothing for too long."""

    def __init__(self, message: str, *, session_id: str | None = None) -> None:
        super().__init__(message, session_id=session_id, retriable=True, reason="stall")


class PublishError(Reson8KafkaError):
    """An output record could not be produced. ``code`` names why
    (``too_large``, ``kafka``); ``retriable`` tells whether a new attempt may work."""

    def __init__(self, topic: str, code: str, detail: str, *, retriable: bool) -> None:
        super().__init__(f"cannot produce to {topic}: {detail}", retriable=retriable)
        self.topic = topic
        self.code = code


class KafkaUnavailable(Reson8KafkaError):
    """The broker cannot be reached or refused an admin operation."""

    retriable = True
