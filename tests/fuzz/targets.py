"""Fuzz targets: every parser of untrusted bytes in the worker.

Each target takes arbitrary bytes and must return normally or raise one of
the errors the product turns into a dead letter or a failed session
(:data:`ALLOWED`); anything else is a bug. They bound their own work, so a
hang shows as a timeout of the runner. The unit tier runs them with
hypothesis (``tests/unit/test_fuzz.py``) and over the corpus in
``tests/fuzz/corpus``; ``make fuzz`` runs them for long (``scripts/fuzz.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pydantic import ValidationError

from schemas.envelope import BadHeader, SessionConfig, decode_headers, parse_headers
from schemas.wire import ErrorBody, MalformedMessage, StreamParams, parse_server_message
from workers.assignor import balanced, decode_state, resolve_claims
from workers.checkpoint import Checkpoint
from workers.errors import DecodeError, InputError
from workers.ogg import MAX_PACKET, OggReader, opus_samples
from workers.restart import scanner_for
from workers.source import Source
from workers.stream import ChannelStream
from workers.transcode import ContainerDecoder, sniff_container

ALLOWED: tuple[type[BaseException], ...] = (
    DecodeError,
    InputError,
    BadHeader,
    MalformedMessage,
)
Target = Callable[[bytes], None]


def _splits(data: bytes) -> list[bytes]:
    """Cut ``data`` where its own bytes say (deterministic for a given input)."""
    if not data:
        return [b""]
    parts, at, step = [], 0, 1 + data[0] % 97
    while at < len(data):
        parts.append(data[at : at + step])
        at += step
        step = 1 + (step * 31 + 7) % 1500
    return parts


def scanner(container: str) -> Target:
    def target(data: bytes) -> None:
        scan = scanner_for(container)
        assert scan is not None
        at = 0
        for part in _splits(data):
            for offset, samples, header, rate in scan.feed(part, at):
                assert 0 <= offset <= at + len(part) + 1
                assert rate > 0
                assert samples >= 0
                assert isinstance(header, bytes)
            at += len(part)

    target.__name__ = f"{container}_scanner"
    return target


def ogg_packets(data: bytes) -> None:
    """Ogg pages into packets (the decoder's Opus path), and Opus durations."""
    reader = OggReader()
    for part in _splits(data):
        reader.push(part)
        while reader.has_page():
            for packet in reader.packets():
                assert len(packet.data) <= MAX_PACKET
                assert 0 <= opus_samples(packet.data) <= 5760
    assert reader.pending + reader.consumed == len(data)


def sniff(data: bytes) -> None:
    sniff_container(data[:64])


def decoder(data: bytes) -> None:
    """The container decoder's front end, in bounded steps as the worker drives it."""
    with ContainerDecoder(timeout=5.0, allowance_s=5.0) as dec:
        for part in _splits(data)[:40]:
            dec.write(part)
            _settle(dec)
        dec.finish()
        _settle(dec)


def _settle(dec: ContainerDecoder) -> None:
    for _ in range(500):
        dec.step(0.02)
        if dec.idle:
            return
    raise AssertionError("decoder did not settle")


def source(data: bytes) -> None:
    """A session's input side: records in, dead letters or audio out."""
    src = Source("fuzz", SessionConfig(), upstream_rate=16000)
    try:
        for offset, part in enumerate(_splits(data)[:40]):
            src.add(offset, part, "audio")
            _drain(src)
        src.add(10_000, b"", "end")
        _drain(src)
        assert src.failed is None or src.rejected
    finally:
        src.close()


def _drain(src: Source) -> None:
    for _ in range(500):
        src.process(0.02)
        if not src.busy:
            return
    raise AssertionError("source did not settle")


def headers(data: bytes) -> None:
    """Kafka headers of a record: names and values from the bytes."""
    pairs = []
    for chunk in data.split(b"\n")[:30]:
        name, _, value = chunk.partition(b"=")
        pairs.append((name.decode("latin-1")[:80], value))
    try:
        parsed = parse_headers(decode_headers(pairs))
    except BadHeader:
        return
    config = parsed.session_config()
    config.with_overrides(parsed.config_headers)


def server_message(data: bytes) -> None:
    """A text frame from the upstream, then what a stream does with it."""
    try:
        message = parse_server_message(data.decode("utf-8", "replace"))
    except MalformedMessage:
        return
    if message is None:
        return
    for endpoint in ("realtime", "turns"):
        stream = ChannelStream(
            "fuzz",
            StreamParams(endpoint=endpoint, encoding="pcm_s16le", include_timestamps=True),  # type: ignore[arg-type]
        )
        stream.connected(None)
        stream.push(b"\x00" * 32000)
        list(stream.outgoing())
        stream.on_message(message)
        stream.on_message(message)


def error_body(data: bytes) -> None:
    """A refusal's body and X-Error-Message header."""
    body, _, header = data.partition(b"\n")
    ErrorBody.parse(body, header.decode("latin-1") or None)


def checkpoint(data: bytes) -> None:
    """An entry of the checkpoint topic (written by us, read back after a takeover)."""
    try:
        Checkpoint.from_bytes(data)
    except (ValidationError, ValueError, json.JSONDecodeError):
        return


def group_member_state(data: bytes) -> None:
    """A group member's report (the assignor's metadata user_data), then an
    assignment from it: balanced whatever it claims."""
    generation, owned = decode_state(data)
    assert isinstance(generation, int)
    claims = {"m1": (generation, owned.get("t", [])), "m2": (0, [0, 1])}
    result = balanced(range(8), resolve_claims(claims))
    sizes = sorted(len(v) for v in result.values())
    assert sizes == [4, 4], result


TARGETS: dict[str, Target] = {
    "wav_scanner": scanner("wav"),
    "ogg_scanner": scanner("ogg"),
    "mp3_scanner": scanner("mp3"),
    "ogg_packets": ogg_packets,
    "sniff": sniff,
    "decoder": decoder,
    "source": source,
    "headers": headers,
    "server_message": server_message,
    "error_body": error_body,
    "checkpoint": checkpoint,
    "group_member_state": group_member_state,
}
