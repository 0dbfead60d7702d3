"""The audio every benchmark session sends: tone words, as PCM or live OGG/Opus.

One program of tone utterances (``emulator.tones``), so the ``tones``
recognizer returns a final about every second and a half, as a talking caller
would. OGG/Opus is encoded the way a live producer writes it: one Ogg page
per ~100 ms, so a page is never held back for a second (FFmpeg's default).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from emulator.tones import synthesize
from workers.tools.plan import chunk_plan
from workers.transcode import ContainerDecoder

RATE = 16000
CHUNK_MS = 100
PCM_CHUNK_BYTES = RATE * 2 * CHUNK_MS // 1000
UPSTREAM_BYTES_PER_S = RATE * 2  # pcm_s16le mono at 16 kHz, what the upstream gets
_UTTERANCES = (
    ("alpha", "bravo"),
    ("charlie", "delta", "echo"),
    ("foxtrot",),
    ("golf", "hotel"),
    ("india", "juliet", "alpha"),
)


def tone_program(seconds: float) -> bytes:
    """At least ``seconds`` of 16 kHz mono ``pcm_s16le`` tone speech, cut to length."""
    piece = synthesize([list(u) for u in _UTTERANCES], sample_rate=RATE)
    repeats = int(seconds * RATE * 2 // len(piece)) + 1
    return (piece * repeats)[: round(seconds * 1000 / CHUNK_MS) * PCM_CHUNK_BYTES]


def ogg_opus_live(pcm: bytes, page_ms: int = CHUNK_MS) -> bytes:
    """Encode mono 16 kHz PCM as OGG/Opus (48 kHz) with a page every ``page_ms``."""
    out = io.BytesIO()
    options = {"page_duration": str(page_ms * 1000)}
    with av.open(out, mode="w", format="ogg", options=options) as box:
        stream = box.add_stream("libopus", rate=48000, layout="mono")
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = RATE, 0, Fraction(1, RATE)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        for piece in [*resampler.resample(frame), *resampler.resample(None), None]:
            for packet in stream.encode(piece):
                box.mux(packet)
    return out.getvalue()


@dataclass(frozen=True)
class Records:
    """One session's records: byte slices, and where each one's audio ends
    in the upstream's 16 kHz PCM stream (bytes)."""

    values: tuple[bytes, ...]
    upstream_end: tuple[int, ...]
    audio_end_s: tuple[float, ...]
    duration_s: float

    def positions(self) -> np.ndarray:
        """Upstream byte positions at which each record counts as delivered;
        NaN for a record that adds no decodable audio (nothing to time)."""
        ends = np.asarray(self.upstream_end, dtype=np.float64)
        previous = np.concatenate([[0.0], ends[:-1]])
        return np.where(ends > previous, ends, np.nan)


def pcm_records(pcm: bytes) -> Records:
    """100 ms records of raw PCM: record ``j`` ends at upstream byte ``(j + 1) * 3200``."""
    values = tuple(pcm[i : i + PCM_CHUNK_BYTES] for i in range(0, len(pcm), PCM_CHUNK_BYTES))
    ends = tuple(min(len(pcm), (j + 1) * PCM_CHUNK_BYTES) for j in range(len(values)))
    return Records(values, ends, tuple(e / UPSTREAM_BYTES_PER_S for e in ends), len(pcm) / 32000)


def container_records(data: bytes, duration_s: float) -> Records:
    """~100 ms records of a container cut as ``reson8-kafka send`` cuts it
    (proportionally to size, so a record of compressed silence carries more
    time than one of speech). Where each record's audio ends upstream is
    found by decoding the records with the worker's own decoder: its output
    depends only on the bytes fed so far, so the worker sends exactly that
    much once it has the record."""
    chunks = chunk_plan(len(data), duration_s, CHUNK_MS)
    values = tuple(data[c.start : c.end] for c in chunks)
    ends: list[int] = []
    with ContainerDecoder(target_rate=RATE, target_channels=1) as decoder:
        for value in values:
            ends.append((ends[-1] if ends else 0) + len(decoder.feed(value)))
    return Records(values, tuple(ends), tuple(c.audio_end_s for c in chunks), duration_s)
