"""The ``reson8-kafka`` command line.

Each subsystem contributes its subcommands through a ``register(subparsers)``
function in a light module (no heavy imports at module level); the handler set
with ``set_defaults(func=...)`` takes the parsed namespace and returns the exit
status. Errors from this project become one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from workers.errors import Reson8KafkaError

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _registrars() -> list[Registrar]:
    from emulator.cli import register as emulator
    from topology.cli import register as topology
    from workers.commands import register as workers
    from workers.tools import register as tools

    return [topology, emulator, workers, tools]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="reson8-kafka",
        description="Streaming speech-to-text over Kafka with Reson8.",
    )
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )
    for register in _registrars():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except Reson8KafkaError as exc:
        print(f"reson8-kafka: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
