"""``send``, ``tail`` and ``demo`` as a user runs them: real processes, real broker."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.samples import encode
from emulator.tones import synthesize
from tests.e2e.harness import REPO, Stack, WorkerProcess, free_port
from topology.connection import KafkaSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

UTTERANCES = [["alpha", "bravo"], ["charlie", "delta", "echo"]]
CLI = [sys.executable, "-m", "workers.cli"]


@pytest.fixture
def stack_partitions() -> int:
    return 2


def cli_env(kafka: KafkaSettings) -> dict[str, str]:
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}


async def run_cli(args: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.timeout(180)
async def test_send_a_wav_and_an_ogg_then_tail_their_finals(
    stack: Stack, worker: WorkerProcess, tmp_path: Path
) -> None:
    pcm = synthesize(UTTERANCES)
    wav, ogg = tmp_path / "first call.wav", tmp_path / "second.ogg"
    wav.write_bytes(encode(pcm, 16000, 1, "wav"))
    ogg.write_bytes(encode(pcm, 16000, 1, "ogg-opus"))
    env = cli_env(stack.kafka)
    tail = asyncio.create_task(
        run_cli(
            [
                *("tail", "--json", "--from-beginning", "--until-ended", "2", "--timeout", "90"),
                *("--topic-prefix", stack.prefix),
            ],
            env,
            120,
        )
    )
    code, out, err = await run_cli(
        ["send", str(wav), str(ogg), "--pace", "4x", "--topic-prefix", stack.prefix], env, 60
    )
    assert code == 0, err
    sessions = dict(line.split("\t")[0::3][::-1] for line in out.strip().splitlines())
    assert re.fullmatch(r"first-call-[0-9a-f]{6}", sessions[str(wav)])
    assert "done" in err

    code, out, err = await tail
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    want = [" ".join(u) for u in UTTERANCES]
    for sid in sessions.values():
        finals = [
            e["text"]
            for e in events
            if e["session_id"] == sid and e["type"] == "transcript" and e["is_final"]
        ]
        assert finals == want
        assert any(e["type"] == "session_ended" and e["session_id"] == sid for e in events)
    assert {e["topic"] for e in events} >= {
        stack.topic("stt.transcripts"),
        stack.topic("stt.sessions"),
    }


async def test_send_to_an_unreachable_broker_fails_in_one_line(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(encode(synthesize([["alpha"]]), 16000, 1, "wav"))
    started = time.monotonic()
    code, _, err = await run_cli(
        ["send", str(wav), "--bootstrap-servers", f"127.0.0.1:{free_port()}"], dict(os.environ), 60
    )
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[-1].startswith("reson8-kafka: error: cannot reach Kafka at 127.0.0.1:")
    assert "Traceback" not in err
    assert time.monotonic() - started < 30


async def test_send_to_a_missing_topic_says_how_to_create_it(
    kafka_settings: KafkaSettings, topic_prefix: str, tmp_path: Path
) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(encode(synthesize([["alpha"]]), 16000, 1, "wav"))
    code, _, err = await run_cli(
        ["send", str(wav), "--topic-prefix", topic_prefix], cli_env(kafka_settings), 60
    )
    assert code == 1
    assert f"topic {topic_prefix}stt.audio does not exist" in err.strip().splitlines()[-1]


# --- the demo -------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def started_pids(stderr: str) -> list[int]:
    return [int(p) for p in re.findall(r"demo: (?:emulator|worker) .*?pid (\d+)", stderr)]


def demo_env(kafka: KafkaSettings, tmp_path: Path) -> dict[str, str]:
    # Its own cache: samples generated fresh, logs kept with the test.
    return {**cli_env(kafka), "RESON8_KAFKA_CACHE": str(tmp_path / "kafka-cache")}


@pytest.mark.timeout(300)
def test_demo_runs_end_to_end_and_leaves_no_process(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    done = subprocess.run(
        [*CLI, "demo", "--sentences", "1", "--timeout", "150"],
        cwd=REPO,
        env=demo_env(kafka_settings, tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Kafka      " + kafka_settings.bootstrap_servers in done.stderr  # reused, not started
    pids = started_pids(done.stderr)
    assert len(pids) == 2, done.stderr
    assert not [p for p in pids if alive(p)]
    assert "demo: all stopped" in done.stderr
    assert re.search(r"3 sessions, [\d.]+ s of audio", done.stdout), done.stdout
    assert re.search(r"latency .* mean [\d.]+ s, p95 [\d.]+ s", done.stdout)
    # Correct words from real ASR: one sentence of each call, most words right.
    text = done.stdout.lower()
    assert "status of my order" in text
    assert "account number" in text


@pytest.mark.timeout(300)
def test_demo_interrupted_stops_what_it_started(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [*CLI, "demo", "--sentences", "1"],
        cwd=REPO,
        env=demo_env(kafka_settings, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = ""
    try:
        for line in proc.stderr:  # blocks per line; the test timeout bounds it
            seen += line
            if line.startswith("demo: sending"):
                break
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seen += rest
    assert proc.returncode == 130, seen
    pids = started_pids(seen)
    assert len(pids) == 2, seen
    assert not [p for p in pids if alive(p)]
    assert "interrupted; stopping what the demo started" in seen
    assert "Traceback" not in seen
