"""``reson8-kafka emulator`` / ``python -m emulator.cli``: startup output and clean stops."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from emulator.cli import build_config, register
from emulator.errors import ConfigError
from emulator.faults import Faults

ROOT = Path(__file__).resolve().parents[2]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["emulator", *argv])


def test_options_become_a_config() -> None:
    args = _parse(
        "--port", "0", "--recognizer", "tones", "--api-key", "a", "--api-key", "b",
        "--max-sessions", "3", "--ping-interval", "5", "--ping-timeout", "2",
        "--token-ttl", "60", "--fault", "drop_after_ms=3000", "--fault", "delay_ms=10",
    )  # fmt: skip
    config = build_config(args)
    assert config.api_keys == ("a", "b")
    assert (config.max_sessions, config.ping_interval, config.ping_timeout) == (3, 5.0, 2.0)
    assert config.token_ttl_s == 60.0
    assert config.faults == Faults(drop_after_ms=3000, delay_ms=10)


@pytest.mark.parametrize(
    "argv", [("--fault", "nonsense"), ("--max-sessions", "0"), ("--port", "70000")]
)
def test_bad_options_are_config_errors(argv: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError):
        build_config(_parse(*argv))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serves_then_stops_cleanly_on_a_signal(signum: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulator.cli", "--port", "0", "--recognizer", "tones",
        "--api-key", "very-secret-key",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert first.startswith("emulator: listening on ws://127.0.0.1:")
        url = first.rsplit(" ", 1)[1].strip()
        headers = {"Authorization": "ApiKey very-secret-key"}
        async with connect(f"{url}/v1/speech-to-text/realtime", additional_headers=headers):
            pass
        process.send_signal(signum)
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err
    text = first + out.decode() + err.decode()
    assert "recognizer: tones" in text
    assert "1 configured API key(s)" in text
    assert "very-secret-key" not in text
    assert text.rstrip().endswith("emulator: stopped")


def test_registered_in_the_reson8_kafka_command(capsys: pytest.CaptureFixture[str]) -> None:
    from workers.cli import main

    assert main(["emulator", "--port", "70000", "--api-key", "k"]) == 1
    assert capsys.readouterr().err.strip() == ("emulator: error: --port must be in 0..65535")
