"""Command-line validation of send/tail/demo: one line on stderr, no traceback.

Usage errors exit 2 (argparse, or flags that contradict each other); errors
found while running exit 1. Nothing here reaches Kafka.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.samples import encode
from workers.cli import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    return code, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["send"], "the following arguments are required: FILE"),
        (["send", "a.wav", "--pace", "fast"], "pace must be realtime, max or a positive Nx"),
        (["send", "a.wav", "--chunk-ms", "0"], "must be at least 1"),
        (["send", "a.wav", "--chunk-ms", "5"], "must be 10..10000 ms"),
        (["send", "a.wav", "b.wav", "--session", "x"], "exactly one FILE"),
        (["send", "a.wav", "--labels", "agent,caller"], "--labels needs --split"),
        (["send", "a.wav", "--sample-rate", "8000"], "add --encoding"),
        (["send", "a.wav", "--encoding", "opus"], "invalid choice"),
        (["send", "a.wav", "--options", "include_nope"], "unknown flag 'include_nope'"),
        (
            ["send", "a.wav", "--endpoint", "turns", "--options", "include_interim"],
            "not accepted by the turns endpoint",
        ),
        (["tail", "--topics", "words"], "choose from transcripts, turns, sessions"),
        (["tail", "--until-ended", "0"], "must be at least 1"),
        (["tail", "--topics", "turns", "--until-ended", "1"], "add it to --topics"),
        (["demo", "--upstream-url", "wss://x"], "needs --api-key or RESON8_API_KEY"),
    ],
)
def test_usage_errors_exit_2_in_one_line(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RESON8_API_KEY", raising=False)
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert message in one_line(err)


def test_missing_file_exits_1_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli(["send", str(tmp_path / "nope.wav")], capsys)
    assert code == 1
    assert one_line(err) == f"reson8-kafka: error: {tmp_path / 'nope.wav'}: no such file"


def test_unreadable_audio_exits_1_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.wav"
    path.write_bytes(b"these are not the sounds you are looking for" * 20)
    code, err = run_cli(["send", str(path)], capsys)
    assert code == 1
    assert "PyAV cannot open it" in one_line(err)


def test_split_of_a_mono_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mono.wav"
    path.write_bytes(encode(b"\x00\x00" * 1600, 16000, 1, "wav"))
    code, err = run_cli(["send", str(path), "--split"], capsys)
    assert code == 1
    assert "--split needs a file with 2+ channels" in one_line(err)


def test_raw_audio_must_hold_whole_frames(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "odd.raw"
    path.write_bytes(b"\x00" * 321)
    code, err = run_cli(["send", str(path), "--encoding", "pcm_s16le"], capsys)
    assert code == 1
    assert "not a whole number of pcm_s16le frames" in one_line(err)
