"""Secrets never reach a log line, at any level, from any library.

:func:`install` (called once by the worker at start-up) wraps the logging
record factory, so every record created by any logger (ours, websockets,
aiohttp, aiokafka, faust) is rendered and redacted before a handler sees it:
the registered secret values become ``***``, and so does the credential of
any ``Authorization`` header or bearer subprotocol, whoever logs it (the
websockets client logs request headers at DEBUG). Exception text is
redacted the same way.

:class:`RedactingAdapter` does the same for one logger, for a library that
takes a logger object (the upstream WebSocket client).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable, MutableMapping
from typing import Any

MASK = "***"
_HEADER = re.compile(
    r"(?i)(authorization['\"]?\s*[:=,]\s*['\"]?(?:apikey|bearer|basic|token)?\s*)([^\s'\",;)]+)"
)
_SUBPROTOCOL = re.compile(
    r"(?i)(sec-websocket-protocol['\"]?\s*[:=,]\s*['\"]?bearer\s*,\s*)([^\s'\",;)]+)"
)
_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def redact(text: str) -> str:
    """``text`` with every known secret and header credential masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _HEADER.sub(lambda m: m.group(1) + MASK, text)
    return _SUBPROTOCOL.sub(lambda m: m.group(1) + MASK, text)


def add_secrets(values: Iterable[str]) -> None:
    """Mask these values wherever they appear (ignores values under 4 characters)."""
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= 4)


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: keep what the caller gave, redacted
        message = f"{record.msg!r} {record.args!r}"
    record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install(secrets: Iterable[str] = ()) -> None:
    """Redact every log record of this process from now on. Idempotent."""
    global _installed
    add_secrets(secrets)
    with _lock:
        if _installed:
            return
        _installed = True
    factory = logging.getLogRecordFactory()

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(make)


class RedactingAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter whose messages are redacted before they are logged
    (records below DEBUG, a library's wire-level log, are logged at DEBUG)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg!r} {args!r}"
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            if exc_info is True:
                exc_info = sys.exc_info()
            elif isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip()
        self.logger.log(max(level, logging.DEBUG), "%s", redact(text), **kwargs)
