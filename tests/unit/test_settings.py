"""Settings: environment parsing, URL normalisation, secrecy, the generated doc."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.errors import ConfigError
from workers.settings import Settings, configuration_markdown, normalize_api_url

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api.reson8.dev/", "wss://api.reson8.dev"),
        ("http://127.0.0.1:8765", "ws://127.0.0.1:8765"),
        ("wss://h/base/", "wss://h/base"),
        ("ws://h:1", "ws://h:1"),
    ],
)
def test_api_url_accepts_http_and_ws_forms(given: str, expected: str) -> None:
    assert normalize_api_url(given) == expected


def test_bad_api_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="api_url"):
        Settings.from_env({"RESON8_API_URL": "ftp://x"})


def test_environment_names_and_overrides() -> None:
    env = {
        "RESON8_API_KEY": "sk-secret-123",
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "RESON8_KAFKA_TOPIC_PREFIX": "acme.",
        "RESON8_KAFKA_IDLE_FLUSH_S": "1.5",
    }
    settings = Settings.from_env(env, idle_flush_s=None, partitions=6)
    assert settings.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.topic("stt.audio") == "acme.stt.audio"
    assert settings.idle_flush_s == 1.5
    assert settings.partitions == 6
    assert settings.api_key.get_secret_value() == "sk-secret-123"


def test_api_key_never_shows_in_repr_or_errors() -> None:
    settings = Settings.from_env({"RESON8_API_KEY": "sk-secret-123"})
    assert "sk-secret-123" not in repr(settings)
    assert "sk-secret-123" not in str(settings.model_dump())
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"RESON8_API_KEY": "sk-secret-123", "RESON8_KAFKA_PARTITIONS": "x"})
    assert "sk-secret-123" not in str(info.value)


def test_configuration_doc_is_current() -> None:
    assert DOC.read_text() == configuration_markdown(), "run `make docs`"
