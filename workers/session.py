"""A session (sans-I/O): input records in, upstream streams and coverage out.

A :class:`Session` turns the audio of ``stt.audio`` records into what its
upstream streams send: containers are decoded to ``pcm_s16le`` at the
upstream rate (ARCHITECTURE.md, "Upstream": always an explicit encoding), raw
``pcm_s16le``/``mulaw``/``alaw`` pass through untouched, and in ``split`` mode
each channel becomes its own mono stream.

It also answers the commit question: :meth:`covered_offset` is the highest
input offset whose audio every stream has covered, so the partition's offset
may be committed past it (ARCHITECTURE.md, "Delivery").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from schemas.envelope import SessionConfig
from schemas.wire import Encoding
from workers.errors import DecodeError
from workers.frames import FrameAligner
from workers.stream import ChannelStream
from workers.transcode import ContainerDecoder, sniff_container, split_channels

SNIFF_BYTES = 12  # sniff_container needs this many bytes
# Width in bytes of one sample of each raw encoding.
_SAMPLE_WIDTH = {"pcm_s16le": 2, "mulaw": 1, "alaw": 1}


@dataclass(frozen=True)
class _Mark:
    offset: int
    frames: tuple[int, ...]  # per stream: frames_in after this record


class Session:
    """One session's decoding, streams and offset coverage.

    Feed records in offset order with :meth:`feed` (and :meth:`flush` for
    ``flush``/``end`` records); pump each of :attr:`streams` to its upstream.
    Raises :class:`workers.errors.DecodeError` from :meth:`feed` for audio that
    cannot be decoded: the caller dead-letters that record and goes on.
    """

    def __init__(
        self, session_id: str, config: SessionConfig, *, upstream_rate: int, start_ms: int = 0
    ) -> None:
        self.session_id = session_id
        self._start_ms = start_ms  # session time at which this configuration began
        self.config = config
        self._split = config.channel_mode == "split"
        self._decoder: ContainerDecoder | None = None
        self._prefix: bytes | None = b""  # first bytes of a container, until it is recognised
        if config.encoding == "auto":
            self._decoder = ContainerDecoder(
                target_rate=upstream_rate, target_channels=None if self._split else 1
            )
            self._rate = upstream_rate
        else:
            self._rate = config.sample_rate
        self.streams: list[ChannelStream] = []
        self._interleaved: FrameAligner | None = None  # split mode: whole interleaved frames
        self._marks: deque[_Mark] = deque()
        self.audio_bytes = 0
        if not self._split or config.encoding != "auto":
            self._open_streams(config.channels if config.encoding != "auto" else 1)

    # ------------------------------------------------------------------ streams

    def _open_streams(self, source_channels: int) -> None:
        encoding: Encoding = "pcm_s16le" if self.config.encoding == "auto" else self.config.encoding
        start = self._start_ms * self._rate // 1000
        if not self._split:
            params = self.config.upstream_params(encoding, self._rate, source_channels)
            self.streams = [ChannelStream(self.session_id, params, start_frame=start)]
            return
        params = self.config.upstream_params(encoding, self._rate, 1)
        self.streams = [
            ChannelStream(
                self.session_id, params, channel=i, label=self.config.label(i), start_frame=start
            )
            for i in range(source_channels)
        ]

    @property
    def ready(self) -> bool:
        """False until a split container's channel count is known (first audio)."""
        return bool(self.streams)

    # ------------------------------------------------------------------ input

    def feed(self, audio: bytes) -> None:
        """Decode (if needed) and push one record's audio into the streams."""
        self.audio_bytes += len(audio)
        if not audio:
            return
        if self._decoder is not None:
            self._check_container(audio)
            self._push_pcm(self._decoder.feed(audio))
        else:
            self._push_raw(audio)

    def _check_container(self, audio: bytes) -> None:
        """Reject a stream that starts with no known container header at once;
        FFmpeg would only give up after a large probe (and the record would be
        held, not dead-lettered)."""
        if self._prefix is None:
            return
        self._prefix += audio[:SNIFF_BYTES]
        if len(self._prefix) < SNIFF_BYTES:
            return
        if sniff_container(self._prefix) is None:
            self._prefix = self._prefix[:0]
            self.audio_bytes -= len(audio)
            raise DecodeError("no known container header (WAV, OGG, FLAC, WebM, MP3, MP4)")
        self._prefix = None

    def finish_input(self) -> None:
        """End of the session's audio: drain the decoder into the streams."""
        if self._decoder is not None:
            self._push_pcm(self._decoder.flush())

    def _push_pcm(self, pcm: bytes) -> None:
        if not pcm:
            return
        if not self.streams:
            channels = self._decoder.source_channels if self._decoder else None
            self._open_streams(max(1, channels or 1))
        self._distribute(pcm, 2)

    def _push_raw(self, audio: bytes) -> None:
        self._distribute(audio, _SAMPLE_WIDTH[self.config.encoding])

    def _distribute(self, data: bytes, width: int) -> None:
        if not self._split:
            self.streams[0].push(data)
            return
        if self._interleaved is None:
            self._interleaved = FrameAligner(width * len(self.streams))
        whole = self._interleaved.take(data)
        if width == 2:
            parts = split_channels(whole, len(self.streams))
        else:
            parts = [whole[i :: len(self.streams)] for i in range(len(self.streams))]
        for stream, part in zip(self.streams, parts, strict=True):
            stream.push(part)

    def flush(self, *, user: bool) -> list[str]:
        """Queue a flush on every stream; returns the flush ids."""
        return [stream.request_flush(user=user) for stream in self.streams]

    # ------------------------------------------------------------------ offsets

    def mark(self, offset: int) -> None:
        """Record that input up to ``offset`` has been fed (call after each record)."""
        self._marks.append(_Mark(offset, tuple(s.frames_in for s in self.streams)))

    def covered_offset(self) -> int | None:
        """Highest fed offset whose audio is covered on every stream (or None)."""
        best: int | None = None
        while self._marks and self._is_covered(self._marks[0]):
            best = self._marks.popleft().offset
        return best

    def _is_covered(self, mark: _Mark) -> bool:
        if len(mark.frames) != len(self.streams):
            return not self.streams and mark.frames == ()
        return all(
            stream.covered >= frames
            for stream, frames in zip(self.streams, mark.frames, strict=True)
        )

    @property
    def uncovered_seconds(self) -> float:
        """Largest amount of uncovered audio on any stream, in seconds."""
        return max((s.uncovered_frames / s.rate for s in self.streams), default=0.0)

    @property
    def audio_seconds(self) -> float:
        """Session time reached so far, in seconds (from the session's start)."""
        return max((s.frames_in / s.rate for s in self.streams), default=self._start_ms / 1000)

    def close(self) -> None:
        """Release the decoder thread; call once the session is over."""
        if self._decoder is not None:
            self._decoder.close()
