"""The emulator's one exception tree; nothing here imports the worker.

::

    EmulatorError
    ├── ConfigError        the server's own configuration is wrong (CLI: exit 1)
    ├── RequestError       refuse this request with ``status`` (safe ``detail``)
    │   ├── AuthError      401 (emulator.auth)
    │   └── FaultError     400, a malformed fault parameter (emulator.faults)
    ├── UnsupportedInput   the recognizer cannot do this language / rate (400);
    │                      also a ``ValueError``
    └── DecodeError        audio bytes cannot be decoded: close a stream with
                           1007, answer a prerecorded request with 400

Foreign errors (``av``, ``ctranslate2``, ``pocketsphinx``) are translated where
they are called, with ``raise ... from``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "EmulatorError",
    "RequestError",
    "UnsupportedInput",
]


class EmulatorError(Exception):
    """Root of every error the emulator raises on purpose."""


class ConfigError(EmulatorError):
    """A server option is invalid (unknown recognizer, bad port...): fix it, don't retry."""


class RequestError(EmulatorError):
    """Refuse the request with HTTP ``status``; ``detail`` is safe to send back."""

    status = 400

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status


class UnsupportedInput(EmulatorError, ValueError):
    """The recognizer cannot transcribe this (a language or sample rate): answer 400."""


class DecodeError(EmulatorError):
    """Audio could not be demuxed or decoded; ``detail`` says why (no audio bytes in it)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
