"""WorkerApp: the Faust app wired to the registry, built without a broker.

Nothing is started: construction must not need Kafka. Covers the web pages
(``/healthz``, ``/ready``, ``/metrics``, answered by calling the views, no
server), the agent on the audio topic, the producer's request limit aligned
with the settings and the publisher, the settings check that a dead letter
fits the producer, and the API key registered for redaction at start-up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from workers import redact
from workers.app import WorkerApp, _ConsumerOffsets
from workers.errors import ConfigError
from workers.settings import Settings

KEY = "r8_live_0d1e2f3a4b5c6d7e"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No KAFKA_* from the developer's shell; the process-wide redaction
    (installed by WorkerApp) undone afterwards."""
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(redact, "_secrets", set())
    monkeypatch.setattr(redact, "_installed", False)
    yield
    logging.setLogRecordFactory(factory)


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[WorkerApp]:
    settings = Settings(
        api_key=KEY,
        topic_prefix="acme.",
        bootstrap_servers="127.0.0.1:9",  # nothing listens: nothing may connect
        max_record_bytes=500_000,
        producer_max_request_bytes=700_000,
    )
    app = WorkerApp(settings, datadir=tmp_path)
    yield app
    app.telemetry.shutdown()


async def page(worker: WorkerApp, path: str) -> Any:
    return await worker.app.web.views[path].get(None)


async def test_the_app_serves_health_readiness_and_metrics(worker: WorkerApp) -> None:
    assert {"/healthz", "/ready", "/metrics"} <= set(worker.app.web.views)


async def test_the_agent_consumes_the_prefixed_audio_topic(worker: WorkerApp) -> None:
    agent = worker.app.agents["transcribe"]
    assert agent.channel.get_topic_name() == "acme.stt.audio"


async def test_output_topics_carry_the_prefix(worker: WorkerApp) -> None:
    topics = worker.publisher.topics
    assert (topics.transcripts, topics.turns, topics.sessions, topics.dead_letters) == (
        "acme.stt.transcripts",
        "acme.stt.turns",
        "acme.stt.sessions",
        "acme.stt.audio.dlq",
    )


async def test_the_producer_takes_what_the_publisher_cuts_dead_letters_to(
    worker: WorkerApp,
) -> None:
    assert worker.app.conf.producer_max_request_size == 700_000
    assert worker.publisher.max_record_bytes == 700_000


async def test_healthz_answers_before_start(worker: WorkerApp) -> None:
    response = await page(worker, "/healthz")
    assert response.status == 200
    assert json.loads(response.body)["status"] == "ok"
    assert json.loads(response.body)["sessions"] == 0


async def test_ready_is_503_before_partitions_are_assigned(worker: WorkerApp) -> None:
    response = await page(worker, "/ready")
    assert response.status == 503
    assert json.loads(response.body) == {"ready": False}


async def test_metrics_is_the_prometheus_exposition(worker: WorkerApp) -> None:
    response = await page(worker, "/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    names = {f.name for f in text_string_to_metric_families(response.body.decode())}
    assert "reson8_worker_ready" in names


async def test_the_api_key_is_redacted_from_every_log_line(
    worker: WorkerApp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiokafka"):
        logging.getLogger("aiokafka").debug("sending %s", {"api_key": KEY})
    assert KEY not in caplog.text
    assert redact.MASK in caplog.text


# -- the settings the app relies on ---------------------------------------------------------


def test_the_producer_limit_must_leave_room_for_dead_letter_headers() -> None:
    with pytest.raises(ConfigError, match="producer_max_request_bytes"):
        Settings.from_env(
            {},
            max_record_bytes=1_000_000,
            producer_max_request_bytes=1_000_000 + 65_535,
        )


def test_a_producer_limit_64_kib_above_the_record_limit_is_accepted() -> None:
    settings = Settings.from_env(
        {}, max_record_bytes=1_000_000, producer_max_request_bytes=1_000_000 + 65_536
    )
    assert settings.producer_max_request_bytes == 1_065_536


def test_the_default_producer_limit_fits_the_default_record_limit() -> None:
    settings = Settings.from_env({})
    assert settings.producer_max_request_bytes >= settings.max_record_bytes + 65_536


async def test_a_failing_tick_is_logged_and_the_worker_goes_on(
    worker: WorkerApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A Faust timer that raises stops the whole worker (seen in a rebalance);
    the registry's tick must not."""

    async def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(worker.registry, "tick", broken)
    with caplog.at_level(logging.ERROR, logger="workers.app"):
        await worker._tick()
    assert "periodic work failed" in caplog.text


def test_offsets_of_a_partition_the_consumer_no_longer_has_are_unknown() -> None:
    """Between the consumer's new assignment and the registry's, the registry
    asks about partitions it still holds; aiokafka asserts on them."""

    class Consumer:
        def highwater(self, tp: object) -> int:
            raise AssertionError("Partition is not assigned")

    offsets = _ConsumerOffsets(SimpleNamespace(consumer=Consumer()), "stt.audio")  # type: ignore[arg-type]
    assert offsets.highwater(3) is None
