"""Read an audio file for ``send``: its bytes, duration and shape.

Containers are probed with PyAV (the same library the worker decodes with);
raw ``pcm_s16le``/``mulaw``/``alaw`` is measured from its size. Errors are
one-line :class:`~workers.errors.ConfigError` (missing file) or
:class:`~workers.errors.InputError` (not audio PyAV can open).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workers.errors import ConfigError, InputError
from workers.tools.plan import SendOptions

__all__ = ["AudioFile", "load"]


@dataclass(frozen=True)
class AudioFile:
    """A file ready to be cut: ``data`` is sent as is, ``duration_s`` paces it."""

    path: Path
    data: bytes
    duration_s: float
    sample_rate: int
    channels: int
    codec: str

    def describe(self) -> str:
        """E.g. ``opus 48000 Hz 2 ch, 12.3 s``."""
        return f"{self.codec} {self.sample_rate} Hz {self.channels} ch, {self.duration_s:.1f} s"


def load(path: Path, opts: SendOptions) -> AudioFile:
    """Read and measure ``path``; raises ConfigError (unreadable) or InputError (not audio)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if opts.raw:
        return _raw(path, data, opts)
    return _container(path, data)


def _raw(path: Path, data: bytes, opts: SendOptions) -> AudioFile:
    rate = opts.raw_rate()
    channels = opts.channels or 1
    if len(data) % opts.frame_bytes():
        raise InputError(
            "unreadable_audio", f"{path}: size is not a whole number of {opts.encoding} frames"
        )
    duration = len(data) / (opts.frame_bytes() * rate)
    return AudioFile(path, data, duration, rate, channels, opts.encoding)


def _container(path: Path, data: bytes) -> AudioFile:
    import av

    try:
        with av.open(str(path), mode="r") as box:
            if not box.streams.audio:
                raise InputError("unreadable_audio", f"{path}: no audio stream")
            stream = box.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate or 0)
            channels = int(stream.codec_context.channels or 0)
            codec = str(stream.codec_context.name)
            duration = _declared_duration(box, stream)
            if duration is None:
                duration = _decoded_duration(box)
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError("unreadable_audio", f"{path}: PyAV cannot open it ({reason})") from None
    if duration <= 0:
        raise InputError("unreadable_audio", f"{path}: no audio in it")
    return AudioFile(path, data, duration, rate, channels, codec)


def _declared_duration(box: object, stream: object) -> float | None:
    """Duration from the container or stream header, if it states one."""
    duration = getattr(stream, "duration", None)
    time_base = getattr(stream, "time_base", None)
    if duration is not None and time_base is not None and duration > 0:
        return float(duration * time_base)
    whole = getattr(box, "duration", None)  # microseconds (AV_TIME_BASE)
    if whole is not None and whole > 0:
        return float(whole) / 1_000_000
    return None


def _decoded_duration(box: object) -> float:
    """Duration by decoding every frame (streamed WAV, raw Opus without an index)."""
    samples = 0.0
    for frame in box.decode(audio=0):  # type: ignore[attr-defined]
        samples += frame.samples / frame.sample_rate
    return samples
