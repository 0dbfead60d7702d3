"""The one exception tree: its shape, ``retriable``, structured fields, and
messages that never carry an API key handed only to structured fields."""

from __future__ import annotations

import inspect
import traceback

import pytest

from workers import errors
from workers.errors import (
    ConfigError,
    DecodeError,
    InputError,
    KafkaUnavailable,
    PublishError,
    Reson8KafkaError,
    UpstreamClosed,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRefused,
    UpstreamStalled,
)

KEY = "r8_live_3c9d0e1f2a4b5c6d"


def project_errors() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == errors.__name__
    ]


def test_every_error_of_the_module_derives_from_the_base() -> None:
    classes = project_errors()
    assert len(classes) >= 11
    for cls in classes:
        assert issubclass(cls, Reson8KafkaError), cls


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (DecodeError, InputError),
        (UpstreamRefused, UpstreamError),
        (UpstreamClosed, UpstreamError),
        (UpstreamProtocolError, UpstreamError),
        (UpstreamStalled, UpstreamError),
    ],
)
def test_the_tree_is_as_drawn(child: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(child, parent)


def test_every_class_in_the_tree_is_drawn_in_the_module_docstring() -> None:
    for cls in project_errors():
        assert cls.__name__ in (errors.__doc__ or ""), cls


# -- retriable --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retriable"),
    [(400, False), (401, False), (402, False), (403, False), (429, True), (500, True), (503, True)],
)
def test_a_refusal_is_retriable_only_for_429_and_5xx(status: int, retriable: bool) -> None:
    assert UpstreamRefused(status).retriable is retriable


@pytest.mark.parametrize(
    "error",
    [
        UpstreamClosed("lost", close_code=1006),
        UpstreamProtocolError("bad frame"),
        UpstreamStalled("silent"),
        KafkaUnavailable("no broker"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_losses_stalls_and_protocol_errors_are_retriable(error: Reson8KafkaError) -> None:
    assert error.retriable


@pytest.mark.parametrize(
    "error",
    [ConfigError("bad"), InputError("oversized", "big"), DecodeError("junk")],
    ids=lambda e: type(e).__name__,
)
def test_bad_settings_and_bad_input_are_not_retriable(error: Reson8KafkaError) -> None:
    assert not error.retriable


def test_retriable_is_per_instance_when_given() -> None:
    assert Reson8KafkaError("x", retriable=True).retriable
    assert not KafkaUnavailable("x", retriable=False).retriable
    assert KafkaUnavailable("y").retriable  # the class default is untouched
    assert PublishError("t", "kafka", "x", retriable=True).retriable
    assert not PublishError("t", "too_large", "x", retriable=False).retriable


# -- structured fields ------------------------------------------------------------------------


def test_a_refusal_keeps_status_code_and_detail() -> None:
    error = UpstreamRefused(402, code="payment_required", detail="no credit", session_id="s")
    assert (error.status, error.code, error.detail, error.session_id) == (
        402,
        "payment_required",
        "no credit",
        "s",
    )
    assert str(error) == "upstream refused the connection: HTTP 402 PAYMENT_REQUIRED (no credit)"


def test_an_input_error_carries_its_dead_letter_code() -> None:
    assert (InputError("bad_header", "stt-encoding").code, DecodeError("x").code) == (
        "bad_header",
        "undecodable_audio",
    )
    assert DecodeError("truncated OGG page").detail == "truncated OGG page"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (UpstreamProtocolError("bad"), "protocol_error"),
        (UpstreamStalled("silent"), "stall"),
        (UpstreamClosed("lost"), None),
        (UpstreamRefused(503), None),
        (UpstreamError("x", reason="custom"), "custom"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_the_reconnect_reason_of_each_upstream_error(
    error: UpstreamError, reason: str | None
) -> None:
    assert error.reason == reason


def test_a_publish_error_names_its_topic_and_code() -> None:
    error = PublishError("stt.audio.dlq", "too_large", "MessageSizeTooLargeError", retriable=False)
    assert (error.topic, error.code) == ("stt.audio.dlq", "too_large")
    assert "stt.audio.dlq" in str(error)


# -- no secret in any message ----------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        UpstreamError("handshake failed", session_id=KEY, code=KEY, reason=KEY),
        UpstreamRefused(401, session_id=KEY),
        UpstreamClosed("lost", close_code=1011, session_id=KEY),
        UpstreamProtocolError("bad frame", session_id=KEY),
        UpstreamStalled("silent", session_id=KEY),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_key_in_structured_fields_is_never_in_the_message(error: Exception) -> None:
    rendered = [str(error), repr(error), *traceback.format_exception_only(error)]
    for text in rendered:
        assert KEY not in text
