"""The user's tools: ``send``, ``tail`` and ``demo``.

Light at import time (argparse only): each handler imports its module when it
runs. Usage errors (flags that contradict each other) exit 2 with one line,
through ``args.usage_error``, which every parser here sets to its own
``error``; runtime errors are project errors (exit 1, one line).
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _pace(text: str) -> float | None:
    from workers.tools.plan import parse_pace

    try:
        return parse_pace(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _chunk_ms(text: str) -> int:
    value = _positive_int(text)
    if not 10 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be 10..10000 ms, got {value}")
    return value


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _topics(text: str) -> list[str]:
    from workers.tools.tail import parse_topics

    try:
        return parse_topics(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run_send(args: argparse.Namespace) -> int:
    from workers.tools.send import run

    return run(args)


def _run_tail(args: argparse.Namespace) -> int:
    from workers.tools.tail import run

    return run(args)


def _run_demo(args: argparse.Namespace) -> int:
    from workers.tools.demo import run

    return run(args)


def _kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topic-prefix",
        default=None,
        help="prefix of the topic names (default: $RESON8_KAFKA_TOPIC_PREFIX, else none)",
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        help="Kafka address (default: $KAFKA_BOOTSTRAP_SERVERS, else the local broker)",
    )


def _register_send(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = sub.add_parser(
        "send",
        help="produce audio files to stt.audio, paced like live calls",
        description="Send each FILE as one session: records of ~--chunk-ms of audio, "
        "configuration headers on the first, an end record last. Prints "
        "'SESSION<TAB>RECORDS<TAB>SECONDS<TAB>FILE' per file on stdout.",
    )
    send.add_argument("files", nargs="+", metavar="FILE", help="audio file (any container)")
    send.add_argument("--session", help="session id (one FILE only; default: stem + suffix)")
    send.add_argument(
        "--pace", type=_pace, default=1.0, help="realtime (default), max, or Nx (e.g. 2x)"
    )
    send.add_argument("--chunk-ms", type=_chunk_ms, default=100, help="audio per record (100)")
    send.add_argument("--endpoint", choices=("realtime", "turns"), default="realtime")
    send.add_argument("--split", action="store_true", help="one upstream session per channel")
    send.add_argument("--labels", type=_comma_list, default=[], help="channel labels, e.g. a,b")
    send.add_argument(
        "--options",
        type=_comma_list,
        default=[],
        help="Reson8 flags, e.g. include_words,include_interim",
    )
    send.add_argument(
        "--encoding",
        choices=("auto", "pcm_s16le", "mulaw", "alaw"),
        default="auto",
        help="auto = a container (default); raw audio needs its encoding",
    )
    send.add_argument("--sample-rate", type=_positive_int, help="raw audio only")
    send.add_argument("--channels", type=_positive_int, help="raw audio only")
    send.add_argument("--language", help="e.g. en (comma list allowed)")
    send.add_argument("--custom-model-id", help="Reson8 custom model id")
    _kafka_options(send)
    send.set_defaults(func=_run_send, usage_error=send.error)


def _register_tail(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tail = sub.add_parser(
        "tail",
        help="follow the output topics as live captions (or JSON lines)",
        description="Interim text is rewritten in place on a terminal; finals are "
        "committed with [mm:ss.s] timestamps. Ctrl-C stops (exit 0).",
    )
    tail.add_argument("--session", help="only this session")
    tail.add_argument(
        "--topics",
        type=_topics,
        default=list(("stt.transcripts", "stt.turns", "stt.sessions")),
        help="comma list of transcripts,turns,sessions (default: all)",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per line (+ topic)")
    tail.add_argument("--from-beginning", action="store_true", help="not only new events")
    tail.add_argument(
        "--until-ended",
        type=_positive_int,
        metavar="N",
        help="exit 0 after N session_ended/session_failed events",
    )
    tail.add_argument(
        "--timeout", type=float, metavar="S", help="with --until-ended: exit 1 after S seconds"
    )
    _kafka_options(tail)
    tail.set_defaults(func=_run_tail, usage_error=tail.error)


def _register_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="one command: broker, emulator, worker, sample calls, live captions",
        description="Starts what is missing (local Kafka, the emulator with the "
        "whisper recognizer, a worker), sends generated sample calls and shows "
        "their live transcript, then a summary; stops what it started.",
    )
    demo.add_argument(
        "--recognizer",
        choices=("whisper", "pocketsphinx", "tones"),
        default="whisper",
        help="the emulator's recognizer (whisper)",
    )
    demo.add_argument("--upstream-url", help="use this Reson8 service instead of the emulator")
    demo.add_argument("--api-key", help="its API key (default: $RESON8_API_KEY)")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="after the summary, keep everything running and follow the demo topics "
        "until Ctrl-C (send your own files meanwhile)",
    )
    # Test hooks (shorter runs); not part of the documented interface.
    demo.add_argument("--sentences", type=_positive_int, default=None, help=argparse.SUPPRESS)
    demo.add_argument("--timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    demo.set_defaults(func=_run_demo, usage_error=demo.error)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``send``, ``tail`` and ``demo`` to the ``reson8-kafka`` command line."""
    _register_send(sub)
    _register_tail(sub)
    _register_demo(sub)
