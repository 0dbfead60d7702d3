"""``reson8-kafka emulator``: run the local Reson8-compatible server.

Light on purpose: the server (websockets, PyAV, recognizers) is imported inside
the handler, so building the CLI parser stays fast. Also runnable on its own as
``python -m emulator.cli``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from emulator.errors import ConfigError, EmulatorError

if TYPE_CHECKING:
    from emulator.server import EmulatorConfig, EmulatorServer

__all__ = ["build_config", "main", "register", "run"]

_HELP = "run the local Reson8-compatible emulator (realtime, turns, prerecorded, tokens)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``emulator`` subcommand to the ``reson8-kafka`` parser."""
    parser = sub.add_parser("emulator", help=_HELP, description=_HELP)
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's options (shared by the subcommand and ``python -m``)."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port, 0 = any free (8765)")
    parser.add_argument(
        "--recognizer",
        choices=("whisper", "pocketsphinx", "tones"),
        default="whisper",
        help="whisper (tiny.en, best), pocketsphinx (small, English) or tones (exact, tests)",
    )
    parser.add_argument(
        "--decode-workers",
        type=int,
        default=None,
        metavar="N",
        help="decode processes of a real recognizer (default: one per core)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=25 * 1024 * 1024,
        metavar="N",
        help="largest prerecorded body; above it 413 PAYLOAD_TOO_LARGE (25 MiB)",
    )
    parser.add_argument(
        "--refusal-style",
        choices=("json", "bare"),
        default="json",
        help="json: X-Error-Message + {code, detail} (docs); bare: empty upgrade refusals, "
        "lower_snake codes (the vendor's newest client)",
    )
    parser.add_argument(
        "--no-turn-continuation",
        action="store_true",
        help="turns: never send turn_continuation; a later candidate replaces the pending one",
    )
    parser.add_argument(
        "--repeat-candidates",
        action="store_true",
        help="turns: send every turn_end_candidate twice (clients must de-duplicate)",
    )
    parser.add_argument(
        "--custom-model",
        action="append",
        default=[],
        metavar="ID",
        help="accepted custom_model_id (repeatable); any other id is refused with 400",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accepted API key (repeatable); none given: any non-empty key",
    )
    parser.add_argument("--max-sessions", type=int, default=None, metavar="N")
    parser.add_argument("--ping-interval", type=float, default=20.0, metavar="S")
    parser.add_argument("--ping-timeout", type=float, default=20.0, metavar="S")
    parser.add_argument("--token-ttl", type=float, default=600.0, metavar="S")
    parser.add_argument("--utterance-end-ms", type=int, default=300, metavar="MS")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="server-wide fault, e.g. drop_after_ms=3000 (repeatable; see emulator.faults)",
    )


def build_config(args: argparse.Namespace) -> EmulatorConfig:
    """Validate the parsed options; raises :class:`ConfigError`."""
    from emulator.faults import FaultError, Faults
    from emulator.server import EmulatorConfig

    try:
        faults = Faults.parse(args.fault)
    except FaultError as exc:
        raise ConfigError(f"--fault {exc}") from None
    if args.max_sessions is not None and args.max_sessions < 1:
        raise ConfigError("--max-sessions must be at least 1")
    if not 0 <= args.port <= 65535:
        raise ConfigError("--port must be in 0..65535")
    if args.decode_workers is not None and args.decode_workers < 1:
        raise ConfigError("--decode-workers must be at least 1")
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        recognizer=args.recognizer,
        api_keys=tuple(args.api_key),
        custom_models=tuple(args.custom_model),
        token_ttl_s=args.token_ttl,
        max_sessions=args.max_sessions,
        ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout or None,
        utterance_end_ms=args.utterance_end_ms,
        faults=faults,
        decode_workers=args.decode_workers,
        max_body_bytes=args.max_body_bytes,
        refusal_style=args.refusal_style,
        turn_continuation=not args.no_turn_continuation,
        repeat_candidates=args.repeat_candidates,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns 0 after a clean stop, 1 on a bad option.

    Errors become one line on stderr: the emulator does not lean on the
    worker's CLI to print them.
    """
    import asyncio

    try:
        config = build_config(args)
        return asyncio.run(_serve(config))
    except EmulatorError as exc:
        print(f"emulator: error: {exc}", file=sys.stderr)
        return 1


async def _serve(config: EmulatorConfig) -> int:
    import asyncio
    import signal

    from emulator.server import EmulatorServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with EmulatorServer(config) as server:
            _banner(server)
            await stop.wait()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from exc
    print("emulator: stopped", flush=True)
    return 0


def _banner(server: EmulatorServer) -> None:
    from schemas.wire import LANGUAGES

    cfg = server.config
    limit = cfg.max_sessions if cfg.max_sessions is not None else "unlimited"
    lines = [
        f"emulator: listening on {server.url}",
        f"  realtime: {server.url}/v1/speech-to-text/realtime",
        f"  turns:    {server.url}/v1/speech-to-text/turns",
        f"  tokens:   POST {server.http_url}/v1/auth/token",
        f"  prerecorded: POST {server.http_url}/v1/speech-to-text/prerecorded",
        f"  recognizer: {cfg.recognizer}; auth: {server.auth.mode}; max sessions: {limit}",
        f"  transcribes: {server.transcribes}; languages accepted: {' '.join(sorted(LANGUAGES))}",
        f"  decode workers: {server.pool.workers if server.pool else 'none (in-process)'}; "
        f"refusals: {cfg.refusal_style}; turn_continuation: {cfg.turn_continuation}; "
        f"repeated candidates: {cfg.repeat_candidates}",
        f"  ping: every {cfg.ping_interval}s, timeout {cfg.ping_timeout}s; faults: {cfg.faults}",
    ]
    print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m emulator.cli``)."""
    parser = argparse.ArgumentParser(prog="emulator", description=_HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
