"""What ``reson8-kafka send`` produces, computed without I/O.

A file becomes one session: records cut by time (:func:`chunk_plan`), the
configuration headers on the first record (:func:`config_headers`), ``stt-seq``
and a fresh W3C ``traceparent`` span on every record (one trace per session,
:class:`TraceContext`), then an ``end`` record. :class:`Pacer` says when each
record is due so the topic sees audio as a live call would produce it.

The caller builds a :class:`SendOptions` from the command line, validates it
with :func:`validate_options` (raises :class:`UsageError`), then asks for the
plan of each file once its size and duration are known.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas.envelope import BadHeader, parse_headers
from workers.errors import ConfigError

__all__ = [
    "Chunk",
    "Pacer",
    "SendOptions",
    "TraceContext",
    "UsageError",
    "chunk_plan",
    "config_headers",
    "new_session_id",
    "parse_pace",
    "validate_options",
]

RAW_SAMPLE_BYTES = {"pcm_s16le": 2, "mulaw": 1, "alaw": 1}
_SESSION_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_PACE = re.compile(r"^(\d+(?:\.\d+)?)x$")


class UsageError(ConfigError):
    """Command-line arguments that contradict each other; the CLI exits 2."""


# --- pacing ---------------------------------------------------------------------------


def parse_pace(text: str) -> float | None:
    """``realtime`` -> 1.0, ``max`` -> None (no waiting), ``Nx`` -> N (e.g. ``2x``, ``0.5x``).

    Raises ValueError for anything else (argparse turns it into a usage error).
    """
    value = text.strip().lower()
    if value == "realtime":
        return 1.0
    if value == "max":
        return None
    match = _PACE.match(value)
    speed = float(match.group(1)) if match else 0.0
    if speed <= 0 or not math.isfinite(speed):
        raise ValueError(f"pace must be realtime, max or a positive Nx (e.g. 2x), not {text!r}")
    return speed


@dataclass(frozen=True)
class Pacer:
    """When a record is due: its audio end time divided by ``speed`` after the start.

    A live producer has a chunk only once its last sample was captured, so a
    record is due at the *end* of the audio it carries. ``speed=None`` means
    as fast as possible (always due).
    """

    speed: float | None

    def delay(self, audio_end_s: float, elapsed_s: float) -> float:
        """Seconds to wait before sending a record whose audio ends at ``audio_end_s``."""
        if self.speed is None:
            return 0.0
        return max(0.0, audio_end_s / self.speed - elapsed_s)


# --- chunking -------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """Bytes ``[start, end)`` of the file, carrying audio up to ``audio_end_s``."""

    index: int
    start: int
    end: int
    audio_end_s: float


def chunk_plan(size: int, duration_s: float, chunk_ms: int, align: int = 1) -> list[Chunk]:
    """Cut ``size`` bytes of ``duration_s`` seconds into records of ~``chunk_ms`` each.

    Containers are cut proportionally to duration (their header rides in the
    first record, so it carries slightly less audio); raw audio passes
    ``align`` = bytes per sample frame so no sample is split. The last chunk
    ends at ``size`` and at ``duration_s``. An empty file gives no chunk.
    """
    if size <= 0:
        return []
    if chunk_ms <= 0 or align <= 0:
        raise ValueError("chunk_ms and align must be positive")
    count = max(1, math.ceil(duration_s * 1000 / chunk_ms)) if duration_s > 0 else 1
    bounds = [0]
    for i in range(1, count):
        # Byte position of audio time i * chunk_ms: proportional to duration.
        cut = round(size * (i * chunk_ms / 1000) / duration_s / align) * align
        bounds.append(min(max(cut, bounds[-1]), size))
    bounds.append(size)
    chunks: list[Chunk] = []
    for i in range(count):
        audio_end = min(duration_s, (i + 1) * chunk_ms / 1000)
        if bounds[i + 1] > bounds[i]:
            chunks.append(Chunk(len(chunks), bounds[i], bounds[i + 1], audio_end))
    return chunks


# --- headers and trace context --------------------------------------------------------


@dataclass(frozen=True)
class TraceContext:
    """One W3C trace per session; every record gets its own span id under it."""

    trace_id: str

    @classmethod
    def new(cls) -> TraceContext:
        return cls(secrets.token_hex(16))

    def traceparent(self) -> str:
        """A ``traceparent`` header value (version 00, sampled) with a fresh span id."""
        span = secrets.token_hex(8)
        while span == "0" * 16:  # all-zero ids are invalid (W3C trace-context 3.2.2)
            span = secrets.token_hex(8)
        return f"00-{self.trace_id}-{span}-01"


def new_session_id(path: Path) -> str:
    """The file's stem (made header-safe) plus a short random suffix, e.g. ``call-3f9c2a``."""
    stem = _SESSION_CHARS.sub("-", path.stem).strip("-.")[:48] or "session"
    return f"{stem}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class SendOptions:
    """Everything ``send`` puts in the configuration headers, from the CLI."""

    encoding: str = "auto"
    sample_rate: int | None = None
    channels: int | None = None
    endpoint: str = "realtime"
    language: str | None = None
    options: tuple[str, ...] = ()
    split: bool = False
    labels: tuple[str, ...] = ()
    custom_model_id: str | None = None

    @property
    def raw(self) -> bool:
        return self.encoding != "auto"

    def raw_rate(self) -> int:
        """Sample rate of raw input: the flag, else 16000 (PCM) or 8000 (G.711)."""
        if self.sample_rate is not None:
            return self.sample_rate
        return 16000 if self.encoding == "pcm_s16le" else 8000

    def frame_bytes(self) -> int:
        """Bytes per sample frame of raw input (all channels)."""
        return RAW_SAMPLE_BYTES[self.encoding] * (self.channels or 1)


def config_headers(opts: SendOptions) -> list[tuple[str, bytes]]:
    """The configuration headers of a session's first record (ARCHITECTURE.md, "Input")."""
    values: list[tuple[str, str]] = [("stt-encoding", opts.encoding)]
    if opts.raw:
        values.append(("stt-sample-rate", str(opts.raw_rate())))
        values.append(("stt-channels", str(opts.channels or 1)))
    values.append(("stt-endpoint", opts.endpoint))
    if opts.language:
        values.append(("stt-language", opts.language))
    if opts.options:
        values.append(("stt-options", ",".join(opts.options)))
    if opts.custom_model_id:
        values.append(("stt-custom-model-id", opts.custom_model_id))
    if opts.split:
        values.append(("stt-channel-mode", "split"))
    if opts.labels:
        values.append(("stt-channel-labels", ",".join(opts.labels)))
    return [(name, value.encode("ascii")) for name, value in values]


def validate_options(opts: SendOptions, files: Sequence[Path], session: str | None) -> None:
    """Check the flags before anything is opened; raises :class:`UsageError`.

    Uses the worker's own header parser, so whatever passes here is a
    configuration the worker accepts.
    """
    if session is not None and len(files) != 1:
        raise UsageError("--session names one session: give exactly one FILE")
    if session is not None and not session.isascii():
        raise UsageError("--session must be ASCII")
    if opts.labels and not opts.split:
        raise UsageError("--labels needs --split")
    if not opts.raw and (opts.sample_rate is not None or opts.channels is not None):
        raise UsageError("--sample-rate/--channels describe raw audio: add --encoding")
    _check_headers(opts)


def _check_headers(opts: SendOptions) -> None:
    try:
        parse_headers({name: value.decode() for name, value in config_headers(opts)})
    except BadHeader as exc:
        raise UsageError(exc.detail) from None
    except UnicodeEncodeError:
        raise UsageError("--language, --options, --labels must be ASCII") from None


def record_headers(
    chunk_index: int, seq: int, trace: TraceContext, first: Sequence[tuple[str, bytes]]
) -> list[tuple[str, bytes]]:
    """Headers of one audio record: configuration on the first, seq and trace on all."""
    headers = list(first) if chunk_index == 0 else []
    headers.append(("stt-seq", str(seq).encode()))
    headers.append(("traceparent", trace.traceparent().encode()))
    return headers


def end_headers(seq: int, trace: TraceContext) -> list[tuple[str, bytes]]:
    """Headers of the closing record (``stt-kind: end``, no audio)."""
    return [
        ("stt-kind", b"end"),
        ("stt-seq", str(seq).encode()),
        ("traceparent", trace.traceparent().encode()),
    ]


def iter_chunks(data: bytes, chunks: Sequence[Chunk]) -> Iterator[tuple[Chunk, bytes]]:
    """Each chunk with its bytes."""
    for chunk in chunks:
        yield chunk, data[chunk.start : chunk.end]
