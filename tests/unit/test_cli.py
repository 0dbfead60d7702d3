"""The ``reson8-kafka`` command line: its subcommands, and errors as one line.

A project error (:class:`~workers.errors.Reson8KafkaError`) ends the command
with exit status 1 and one line on stderr, never a traceback; bad arguments
exit 2 in one line; Ctrl-C exits 130. Nothing here starts a worker: the
``worker`` command fails on its settings before it imports Faust.
"""

from __future__ import annotations

import argparse

import pytest

from workers import commands
from workers.cli import build_parser, main
from workers.errors import KafkaUnavailable

KEY = "r8_live_77aa0c1d2e3f4a5b"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A broker named in the environment (no local-broker lookup) and a key."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("RESON8_API_KEY", KEY)
    return monkeypatch


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_the_parser_has_every_subcommand() -> None:
    expected = {"worker", "kafka", "topics", "emulator", "send", "tail", "demo"}
    assert expected <= subcommands(build_parser())


def test_a_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([], capsys)
    assert code == 2
    assert "required" in one_line(err)


def test_an_invalid_setting_in_the_environment_is_one_line_and_exit_1(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("RESON8_KAFKA_PARTITIONS", "0")
    code, _, err = run(["worker"], capsys)
    assert code == 1
    assert one_line(err).startswith("reson8-kafka: error: setting partitions:")


def test_an_invalid_url_flag_is_one_line_without_the_key(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["worker", "--api-url", f"ftp://{KEY}@example.com"], capsys)
    assert code == 1
    line = one_line(err)
    assert "api_url" in line
    assert KEY not in err


def test_any_project_error_of_a_command_is_one_line_and_exit_1(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable(args: argparse.Namespace) -> int:
        raise KafkaUnavailable("broker 127.0.0.1:9 unreachable")

    env.setattr(commands, "run_worker", unreachable)
    code, _, err = run(["worker"], capsys)
    assert code == 1
    assert one_line(err) == "reson8-kafka: error: broker 127.0.0.1:9 unreachable"


def test_ctrl_c_exits_130_quietly(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    env.setattr(commands, "run_worker", interrupted)
    code, _, err = run(["worker"], capsys)
    assert (code, err) == (130, "")


def test_a_bad_argument_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["worker", "--partitions", "many"], capsys)
    assert code == 2
    assert one_line(err).startswith("reson8-kafka worker: error: argument --partitions")


def test_worker_help_names_the_upstream_url_variable(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["worker", "--help"], capsys)
    assert code == 0
    assert "RESON8_BASE_URL" in out or "RESON8_API_URL" in out
    assert "docs/configuration.md" in out
