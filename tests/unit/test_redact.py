"""Redaction: no secret reaches a log line, at any level, from any logger.

``redact()`` on the renderings credentials show up in (header lines, dict and
JSON reprs, bearer subprotocols); ``install()`` seen through a handler attached
here, for our loggers and third-party ones at DEBUG, with %-args, broken
format strings and exception text; ``RedactingAdapter`` for the upstream
WebSocket client. Issue 12's regression runs websockets' own (sans-I/O)
client handshake, which logs ``> Authorization: ApiKey <key>`` at DEBUG.

The record factory and the module's secret registry are process-wide: each
test that installs gets them back as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from workers import redact
from workers.redact import MASK, RedactingAdapter

KEY = "r8_live_9f2c71d04a5b4e13"  # registered with install()/add_secrets
STRANGER = "tok_unregistered_58e1"  # a credential nobody registered


class Lines(logging.Handler):
    """Formats every record it sees, as a log file would hold it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No secrets registered and nothing installed; the record factory restored."""
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(redact, "_secrets", set())
    monkeypatch.setattr(redact, "_installed", False)
    yield
    logging.setLogRecordFactory(factory)


def capture(name: str) -> Iterator[Lines]:
    logger = logging.getLogger(name)
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def ws_log() -> Iterator[Lines]:
    yield from capture("websockets.client")


@pytest.fixture
def our_log() -> Iterator[Lines]:
    yield from capture("workers.registry")


# -- redact() ---------------------------------------------------------------------------


def test_a_registered_secret_is_masked_wherever_it_appears() -> None:
    redact.add_secrets([KEY])
    assert (
        redact.redact(f"url=wss://x/?k={KEY}&a=1 and {KEY}")
        == f"url=wss://x/?k={MASK}&a=1 and {MASK}"
    )


def test_values_too_short_to_be_secrets_are_not_registered() -> None:
    redact.add_secrets(["", "abc"])
    assert redact.redact("abc abcd") == "abc abcd"


@pytest.mark.parametrize(
    "text",
    [
        f"> Authorization: ApiKey {STRANGER}",  # websockets client, DEBUG
        str({"Authorization": f"ApiKey {STRANGER}"}),  # dict repr
        str({"authorization": f"Bearer {STRANGER}"}),
        f'{{"Authorization": "ApiKey {STRANGER}"}}',  # JSON
        f"<CIMultiDict('Authorization': 'Basic {STRANGER}')>",  # aiohttp headers repr
        f"authorization={STRANGER}",  # no scheme
        f"Sec-WebSocket-Protocol: bearer, {STRANGER}",  # bearer subprotocol
        str({"Sec-WebSocket-Protocol": f"bearer, {STRANGER}"}),
    ],
)
def test_header_credentials_are_masked_even_when_not_registered(text: str) -> None:
    out = redact.redact(text)
    assert STRANGER not in out
    assert MASK in out
    assert out.lower().startswith(text.lower()[:6])  # the rest of the line is kept


def test_header_credentials_in_a_headers_list_repr_are_masked() -> None:
    assert STRANGER not in redact.redact(str([("Authorization", f"ApiKey {STRANGER}")]))


def test_text_without_credentials_is_unchanged() -> None:
    text = "> Sec-WebSocket-Version: 13 (authorization pending)"
    assert redact.redact(text) == text


# -- install(): every logger ----------------------------------------------------------------


def test_issue_12_the_websockets_handshake_logs_no_api_key_at_debug(ws_log: Lines) -> None:
    redact.install([KEY])
    protocol = ClientProtocol(
        parse_uri("wss://api.reson8.dev/v1/stream"), logger=logging.getLogger("websockets.client")
    )
    request = protocol.connect()
    request.headers["Authorization"] = f"ApiKey {KEY}"
    protocol.send_request(request)
    assert f"websockets.client DEBUG > Authorization: ApiKey {MASK}" in ws_log.lines
    assert KEY not in ws_log.text


def test_an_unregistered_credential_in_a_third_party_debug_line_is_masked(ws_log: Lines) -> None:
    redact.install()
    logging.getLogger("websockets.client").debug("> %s: %s", "Authorization", f"Bearer {STRANGER}")
    assert ws_log.lines == [f"websockets.client DEBUG > Authorization: Bearer {MASK}"]


def test_percent_args_are_redacted_after_formatting(our_log: Lines) -> None:
    redact.install([KEY])
    logging.getLogger("workers.registry").info("connecting with %s to %s", KEY, "wss://x")
    assert our_log.lines == [f"workers.registry INFO connecting with {MASK} to wss://x"]


def test_exception_text_is_redacted(our_log: Lines) -> None:
    redact.install([KEY])
    try:
        raise RuntimeError(f"handshake failed for key {KEY}")
    except RuntimeError:
        logging.getLogger("workers.registry").exception("upstream failed")
    assert KEY not in our_log.text
    assert f"RuntimeError: handshake failed for key {MASK}" in our_log.text


def test_a_broken_format_string_is_logged_redacted_instead_of_raising(our_log: Lines) -> None:
    redact.install([KEY])
    logging.getLogger("workers.registry").warning("%d sessions", KEY)
    [line] = our_log.lines
    assert KEY not in line
    assert MASK in line


def test_secrets_given_to_a_later_install_are_masked_too(our_log: Lines) -> None:
    redact.install([KEY])
    redact.install(["sasl-password-77"])
    logging.getLogger("workers.registry").info("%s %s", KEY, "sasl-password-77")
    assert our_log.lines == [f"workers.registry INFO {MASK} {MASK}"]


# -- RedactingAdapter ------------------------------------------------------------------------


def test_the_adapter_masks_credentials_without_install(ws_log: Lines) -> None:
    adapter = RedactingAdapter(logging.getLogger("websockets.client"))
    adapter.debug("> %s: %s", "Authorization", f"ApiKey {STRANGER}")
    assert ws_log.lines == [f"websockets.client DEBUG > Authorization: ApiKey {MASK}"]


def test_the_adapter_on_the_websockets_handshake_logs_no_key(ws_log: Lines) -> None:
    redact.add_secrets([KEY])
    adapter = RedactingAdapter(logging.getLogger("websockets.client"))
    protocol = ClientProtocol(parse_uri("wss://api.reson8.dev/v1/stream"), logger=adapter)
    request = protocol.connect()
    request.headers["Authorization"] = f"ApiKey {KEY}"
    protocol.send_request(request)
    assert any(line.endswith(f"> Authorization: ApiKey {MASK}") for line in ws_log.lines)
    assert KEY not in ws_log.text


def test_the_adapter_respects_the_loggers_level(ws_log: Lines) -> None:
    logging.getLogger("websockets.client").setLevel(logging.INFO)
    RedactingAdapter(logging.getLogger("websockets.client")).debug("> noise")
    assert ws_log.lines == []


def test_the_adapter_redacts_exception_text(ws_log: Lines) -> None:
    """Regression: the adapter passed ``exc_info`` through unredacted."""
    redact.add_secrets([KEY])
    try:
        raise ConnectionError(f"rejected {KEY}")
    except ConnectionError:
        RedactingAdapter(logging.getLogger("websockets.client")).exception("handshake failed")
    assert KEY not in ws_log.text
