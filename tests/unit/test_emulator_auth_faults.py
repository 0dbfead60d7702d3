"""Emulator credentials (emulator.auth) and fault specifications (emulator.faults)."""

from __future__ import annotations

import pytest

from emulator.auth import Authenticator, AuthError
from emulator.faults import FaultError, Faults


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_configured_keys_only() -> None:
    auth = Authenticator(["k1", "k2"])
    assert auth.check({"authorization": "ApiKey k2"}, [], {}).kind == "api_key"
    with pytest.raises(AuthError, match="invalid API key") as info:
        auth.check({"authorization": "ApiKey nope"}, [], {})
    assert "nope" not in str(info.value)


def test_any_non_empty_key_without_configured_keys() -> None:
    auth = Authenticator()
    assert auth.check({"authorization": "apikey anything"}, [], {}).kind == "api_key"
    with pytest.raises(AuthError):
        auth.check({"authorization": "ApiKey "}, [], {})
    with pytest.raises(AuthError, match="missing credentials"):
        auth.check({}, [], {})


@pytest.mark.parametrize("name", ["api_key", "token", "access_token", "Key"])
def test_credentials_in_the_query_are_refused(name: str) -> None:
    with pytest.raises(AuthError, match="query string"):
        Authenticator().check({"authorization": "ApiKey k"}, [], {name: "k"})


def test_tokens_expire_after_the_ttl() -> None:
    clock = _Clock()
    auth = Authenticator(["k"], token_ttl_s=60, clock=clock)
    issued = auth.issue_token("ApiKey k")
    assert (issued.token_type, issued.expires_in) == ("Bearer", 60)
    bearer = {"authorization": f"Bearer {issued.access_token}"}
    assert auth.check(bearer, [], {}).kind == "bearer"
    clock.now += 59.9
    auth.check(bearer, [], {})
    clock.now += 0.1
    with pytest.raises(AuthError, match="expired"):
        auth.check(bearer, [], {})


def test_token_endpoint_needs_a_valid_key() -> None:
    auth = Authenticator(["k"])
    for header in (None, "ApiKey wrong", "Bearer k"):
        with pytest.raises(AuthError):
            auth.issue_token(header)


def test_subprotocol_bearer_selects_bearer_not_the_token() -> None:
    auth = Authenticator()
    token = auth.issue_token("ApiKey k").access_token
    credentials = auth.check({}, ["bearer", token], {})
    assert credentials.subprotocol == "bearer"
    with pytest.raises(AuthError, match="unknown bearer token"):
        auth.check({}, ["bearer", "forged"], {})
    with pytest.raises(AuthError, match="missing bearer token"):
        auth.check({}, ["bearer"], {})


def test_mode_never_shows_a_key() -> None:
    assert "secret" not in Authenticator(["secret"]).mode


def test_faults_parse_and_query_override() -> None:
    server = Faults.parse(["drop_after_ms=3000", "delay_ms = 20"])
    assert server == Faults(drop_after_ms=3000, delay_ms=20)
    per_connection = server.from_query(
        {"emulator_drop_after_ms": "500", "emulator_refuse": "429", "language": "en"}
    )
    assert per_connection == Faults(drop_after_ms=500, refuse=429, delay_ms=20)
    assert per_connection.refuse_status == 429
    assert Faults(refuse_first=2).refuse_status == 503


@pytest.mark.parametrize(
    ("specs", "param"),
    [
        (["drop_after_ms"], "drop_after_ms"),
        (["nope=1"], "nope"),
        (["delay_ms=-1"], "delay_ms"),
        (["refuse=200"], "refuse"),
    ],
)
def test_bad_fault_specs(specs: list[str], param: str) -> None:
    with pytest.raises(FaultError) as info:
        Faults.parse(specs)
    assert info.value.param == param


def test_unknown_emulator_query_parameter_is_an_error() -> None:
    with pytest.raises(FaultError, match="emulator_bogus"):
        Faults().from_query({"emulator_bogus": "1"})
