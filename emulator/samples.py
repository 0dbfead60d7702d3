"""Test audio, encoded in memory with PyAV: used by tests, the demo and the benchmarks.

``encode(pcm, rate, channels, fmt)`` turns interleaved ``pcm_s16le`` into one of
the input formats the worker accepts (see ``FORMATS``); ``speech(text)`` makes a
spoken sentence with Debian's ``espeak-ng``. Nothing here touches the network.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

__all__ = ["FORMATS", "SamplesError", "encode", "resample", "speech"]


class SamplesError(RuntimeError):
    """Test audio could not be produced (missing tool, unknown format)."""


@dataclass(frozen=True)
class _Muxing:
    container: str
    codec: str
    rate: int | None = None  # forced encoder rate (Opus only runs at 48 kHz here)
    options: tuple[tuple[str, str], ...] = ()


# `movflags`: an MP4 whose moov sits at the end can't be demuxed from a
# non-seekable stream, so m4a is written fragmented (moov up front, then one
# moof+mdat per fragment), as live AAC producers do. `delay_moov` rather than
# `empty_moov`: the moov then waits for the first packet, so it carries the
# edit list that trims the AAC encoder's 1024 priming samples.
_MUXINGS: dict[str, _Muxing] = {
    "wav": _Muxing("wav", "pcm_s16le"),
    "wav-stream": _Muxing("wav", "pcm_s16le"),
    "ogg-opus": _Muxing("ogg", "libopus", rate=48000),
    "flac": _Muxing("flac", "flac"),
    "webm-opus": _Muxing("webm", "libopus", rate=48000),
    "mp3": _Muxing("mp3", "libmp3lame"),
    "m4a-aac": _Muxing(
        "mp4", "aac", options=(("movflags", "frag_keyframe+delay_moov+default_base_moof"),)
    ),
    "m4a-faststart": _Muxing("mp4", "aac", options=(("movflags", "faststart"),)),
}

FORMATS: tuple[str, ...] = (*_MUXINGS, "pcm_s16le", "mulaw", "alaw")
"""Every ``fmt`` accepted by :func:`encode`."""

_UNKNOWN_SIZE = 0xFFFFFFFF


def encode(pcm_s16le: bytes, sample_rate: int, channels: int, fmt: str) -> bytes:
    """Encode interleaved 16-bit PCM as ``fmt`` (one of ``FORMATS``) and return the bytes.

    ``wav-stream`` is a WAV whose RIFF and data sizes are ``0xFFFFFFFF``, as live
    recorders write before they know the length. Opus is encoded at 48 kHz (its
    native rate); decode and compare durations, not sample counts, for lossy formats.
    """
    if fmt == "pcm_s16le":
        return bytes(pcm_s16le)
    if fmt in ("mulaw", "alaw"):
        return _g711_encode(pcm_s16le, channels, fmt)
    muxing = _MUXINGS.get(fmt)
    if muxing is None:
        raise SamplesError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    data = _mux(pcm_s16le, sample_rate, channels, muxing)
    return _make_indefinite(data) if fmt == "wav-stream" else data


def _frame(pcm_s16le: bytes, sample_rate: int, channels: int) -> av.AudioFrame:
    samples = np.frombuffer(pcm_s16le, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=_layout(channels))
    frame.sample_rate = sample_rate
    # Timestamps let encoders with priming (AAC, Opus) emit a negative first
    # pts, which the muxers turn into an edit list / pre-skip that decoders trim.
    frame.pts = 0
    frame.time_base = Fraction(1, sample_rate)
    return frame


def _mux(pcm_s16le: bytes, sample_rate: int, channels: int, muxing: _Muxing) -> bytes:
    if "faststart" in dict(muxing.options).get("movflags", ""):
        # FFmpeg's faststart pass re-opens the output by name to move the moov
        # atom to the front, so it cannot write to a BytesIO.
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "out.m4a")
            _write(path, pcm_s16le, sample_rate, channels, muxing)
            with open(path, "rb") as f:
                return f.read()
    out = io.BytesIO()
    _write(out, pcm_s16le, sample_rate, channels, muxing)
    return out.getvalue()


def _write(
    out: io.BytesIO | str, pcm_s16le: bytes, sample_rate: int, channels: int, muxing: _Muxing
) -> None:
    rate = muxing.rate or sample_rate
    frames: list[av.AudioFrame] = []
    if pcm_s16le:
        frames.append(_frame(pcm_s16le, sample_rate, channels))
        if rate != sample_rate:
            frames = _resample_frame(frames[0], rate, channels)
    with av.open(out, mode="w", format=muxing.container, options=dict(muxing.options)) as box:
        _encode_into(box, muxing.codec, rate, channels, frames)


def _encode_into(
    box: av.container.OutputContainer,
    codec: str,
    rate: int,
    channels: int,
    frames: list[av.AudioFrame],
) -> None:
    stream = box.add_stream(codec, rate=rate, layout=_layout(channels))
    assert isinstance(stream, av.AudioStream)
    # encode(None) drains the encoder's delayed packets.
    for frame in [*frames, None]:
        for packet in stream.encode(frame):
            box.mux(packet)


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo" if channels == 2 else f"{channels}c"


def _resample_frame(frame: av.AudioFrame, rate: int, channels: int) -> list[av.AudioFrame]:
    resampler = av.AudioResampler(format="s16", layout=_layout(channels), rate=rate)
    return [*resampler.resample(frame), *resampler.resample(None)]


def _make_indefinite(wav: bytes) -> bytes:
    """Rewrite the RIFF and data chunk sizes to 0xFFFFFFFF (length unknown)."""
    out = bytearray(wav)
    struct.pack_into("<I", out, 4, _UNKNOWN_SIZE)
    pos = 12
    while pos + 8 <= len(out):
        chunk_id, size = struct.unpack_from("<4sI", out, pos)
        if chunk_id == b"data":
            struct.pack_into("<I", out, pos + 4, _UNKNOWN_SIZE)
            return bytes(out)
        pos += 8 + size + (size & 1)
    raise SamplesError("WAV written by FFmpeg has no data chunk")


def _g711_encode(pcm_s16le: bytes, channels: int, fmt: str) -> bytes:
    # The raw `mulaw`/`alaw` muxers write the codec's bytes with no header; the
    # rate does not change the encoding, so any valid rate works here.
    out = io.BytesIO()
    frames = [_frame(pcm_s16le, 8000, channels)] if pcm_s16le else []
    with av.open(out, mode="w", format=fmt) as box:
        _encode_into(box, f"pcm_{fmt}", 8000, channels, frames)
    return out.getvalue()


def resample(pcm_s16le: bytes, from_rate: int, to_rate: int, channels: int = 1) -> bytes:
    """Resample interleaved 16-bit PCM with FFmpeg's swresample; returns 16-bit PCM."""
    if from_rate == to_rate or not pcm_s16le:
        return bytes(pcm_s16le)
    frames = _resample_frame(_frame(pcm_s16le, from_rate, channels), to_rate, channels)
    return b"".join(bytes(f.planes[0])[: f.samples * 2 * channels] for f in frames)


# The espeak-ng voice the bundled pocketsphinx model understands best (of 10
# voices x 2 speeds tried, ~80% of words right; the default British voice ~25%).
SPEECH_VOICE = "en-us+f2"
SPEECH_WPM = 150


def speech(
    text: str, sample_rate: int = 16000, *, voice: str = SPEECH_VOICE, wpm: int = SPEECH_WPM
) -> bytes:
    """Speak ``text`` with espeak-ng and return mono ``pcm_s16le`` at ``sample_rate``.

    Raises ``SamplesError`` if espeak-ng is not installed (``apt-get install espeak-ng``).
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SamplesError("espeak-ng is not installed; apt-get install espeak-ng")
    # `--stdout` writes a WAV (22050 Hz mono s16) with unknown sizes, which is
    # why it is read with PyAV rather than the `wave` module.
    command = [exe, "--stdout", "-v", voice, "-s", str(wpm), text]
    proc = subprocess.run(command, capture_output=True, check=False, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        detail = proc.stderr.decode(errors="replace").strip()
        raise SamplesError(f"espeak-ng failed ({proc.returncode}): {detail}")
    return _decode_wav(proc.stdout, sample_rate)


def _decode_wav(wav: bytes, sample_rate: int) -> bytes:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    chunks: list[bytes] = []
    with av.open(io.BytesIO(wav), mode="r") as box:
        for frame in box.decode(audio=0):
            chunks.extend(_plane(f) for f in resampler.resample(frame))
    chunks.extend(_plane(f) for f in resampler.resample(None))
    return b"".join(chunks)


def _plane(frame: av.AudioFrame) -> bytes:
    # Planes are padded to an alignment; only `samples` of them are audio.
    return bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)]
