"""Restart points: where a new decoder can take over a container stream.

:class:`RestartPoint` is the one representation of a restart point in the
worker: the decoder reports them, the session keeps the latest one behind its
durable coverage, and a checkpoint stores one (``workers.checkpoint``).

The scanners (private to ``workers.transcode``) read the same bytes as the
decoder, in any split, and report

- ``header``: the bytes a fresh decoder must see before mid-stream data;
- restart candidates ``(offset, source_samples, header, source_rate)``: a byte
  offset in the input where FFmpeg can start demuxing again given ``header``,
  and how many source samples the original decode outputs before the audio
  that the restarted decode outputs first.

Supported: WAV (any sample-aligned offset), OGG (page boundaries, Opus and
Vorbis) and MP3 (frame boundaries). FLAC, WebM and M4A are not: they would
need a FLAC frame-header scanner, a Matroska Cluster/SimpleBlock parser and a
fragmented-MP4 moof parser respectively (the restart then feeds the metadata
blocks / EBML+Tracks / ftyp+moov before the chosen frame/Cluster/moof).

The scanners parse untrusted bytes: their work is linear in the input, and
declared values that no real audio has (a sample rate of 0 or 1 Hz, no
channels, 65,535 channels, a block size of 0) raise
:class:`~workers.errors.DecodeError` at once (tests/fuzz has their targets).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Annotated, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from workers.errors import DecodeError

__all__ = [
    "MAX_CHANNELS",
    "MAX_RATE",
    "MIN_RATE",
    "Base64Bytes",
    "RestartPoint",
    "Scanner",
    "check_format",
    "scanner_for",
]

Candidate = tuple[int, int, bytes, int]  # offset, source samples, header, source rate

_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
_MAX_HEADER = 1 << 20  # give up on a header that has not ended within 1 MiB

# Sane limits for declared and decoded audio formats: telephony starts at
# 8 kHz (some codecs at 6 kHz), studio audio ends at 384 kHz; the Reson8 API
# takes 1..10 channels, and a container may carry up to 16 (downmixed).
MIN_RATE = 4000
MAX_RATE = 384_000
MAX_CHANNELS = 16


def check_format(rate: int, channels: int, what: str) -> None:
    """Raise :class:`DecodeError` when a declared or decoded format is not
    audio anyone records (the decoder would expand or divide by it)."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise DecodeError(f"{what}: sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise DecodeError(f"{what}: {channels} channels is outside 1..{MAX_CHANNELS}")


def _from_base64(value: object) -> object:
    return base64.b64decode(value, validate=True) if isinstance(value, str) else value


# Raw bytes in Python, base64 text in JSON.
Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    PlainSerializer(
        lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"
    ),
]


class RestartPoint(BaseModel):
    """Where decoding can (re)start: feed ``header`` to a fresh decoder, then
    the input from byte ``byte`` on; its first output sample is session frame
    ``frame`` (at the upstream rate). Exact for raw audio and WAV at equal
    rates; for lossy codecs the first ~20 ms converge.

    ``byte`` counts the input of the session's current configuration.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    byte: int = 0
    frame: int = 0
    header: Base64Bytes = b""


class Scanner(Protocol):
    """Incremental container parser; see the module docstring."""

    # True when candidates count samples from the stream's own timeline (OGG
    # granules), so they hold for a restarted stream too; False when they
    # count from the first byte this scanner saw (WAV, MP3).
    absolute_samples: bool

    @property
    def header(self) -> bytes | None:
        """Header bytes once complete, else None."""
        ...

    def feed(self, data: bytes, base: int) -> list[Candidate]:
        """Scan ``data`` (found at input offset ``base``); return new candidates."""
        ...


def scanner_for(container: str | None) -> Scanner | None:
    """A scanner for the sniffed container, or None when restarts are unsupported."""
    if container == "wav":
        return _WavScanner()
    if container == "ogg":
        return _OggScanner()
    if container == "mp3":
        return _Mp3Scanner()
    return None


class _Buffered:
    """Keeps the unparsed tail of the input and its absolute offset."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._at = 0  # input offset of _buf[0]
        self.dead = False  # lost track of the structure: no more candidates

    def _push(self, data: bytes, base: int) -> None:
        if base != self._at + len(self._buf):
            raise ValueError("scanner fed out of order")
        self._buf += data

    def _drop(self, n: int) -> None:
        del self._buf[:n]
        self._at += n


class _WavScanner(_Buffered):
    """RIFF/WAVE: header up to the data chunk; restart on any block boundary."""

    absolute_samples = False

    def __init__(self) -> None:
        super().__init__()
        self.header: bytes | None = None
        self._data_size: int | None = None
        self._block_align = 0
        self._rate = 0
        self._next_block = 0  # next sample index to report
        self._pos = 12  # chunk parsing position within the header buffer

    def feed(self, data: bytes, base: int) -> list[Candidate]:
        if self.dead:
            return []
        self._push(data, base)
        if self.header is None and not self._parse_header():
            return []
        if self.dead:
            return []
        end = self._at + len(self._buf)
        self._drop(len(self._buf))
        return self._candidates(end)

    def _parse_header(self) -> bool:
        buf = self._buf
        while len(buf) >= self._pos + 8:
            chunk_id, size = struct.unpack_from("<4sI", buf, self._pos)
            if chunk_id == b"data":
                self._finish_header(self._pos + 8, size)
                return True
            if chunk_id == b"fmt " and len(buf) >= self._pos + 24:
                self._read_fmt(buf, self._pos + 8)
            elif chunk_id == b"fmt ":
                return False
            self._pos += 8 + size + (size & 1)
        self.dead = len(buf) > _MAX_HEADER
        return False

    def _read_fmt(self, buf: bytearray, at: int) -> None:
        _, channels, rate, _, block_align = struct.unpack_from("<HHIIH", buf, at)
        check_format(rate, channels, "WAV header")
        if block_align <= 0 or block_align % channels:
            raise DecodeError(f"WAV header: block size {block_align} for {channels} channels")
        self._rate, self._block_align = rate, block_align

    def _finish_header(self, data_start: int, size: int) -> None:
        self.header = bytes(self._buf[:data_start])
        self._data_size = None if size in _UNKNOWN_SIZES else size
        self.dead = self._block_align <= 0 or self._rate <= 0
        self._drop(data_start)

    def _candidates(self, end: int) -> list[Candidate]:
        # One candidate per 100 ms of audio is plenty: the decoder thins them out.
        assert self.header is not None
        step = max(1, self._rate // 10)
        start = len(self.header)
        out: list[Candidate] = []
        while start + self._next_block * self._block_align <= end:
            offset = self._next_block * self._block_align
            if self._data_size is not None and offset > self._data_size:
                break
            out.append((start + offset, self._next_block, self._header_at(offset), self._rate))
            self._next_block += step
        return out

    def _header_at(self, data_offset: int) -> bytes:
        # A finite data size must shrink by what is skipped, or FFmpeg's wav
        # demuxer would read past the audio into trailing chunks (LIST, id3).
        assert self.header is not None
        if self._data_size is None:
            return self.header
        header = bytearray(self.header)
        remaining = self._data_size - data_offset
        struct.pack_into("<I", header, len(header) - 4, remaining)
        # RIFF's own size is 32 bits too: a data size near 4 GiB saturates it
        # (found by the fuzzer: struct.error).
        struct.pack_into("<I", header, 4, min(0xFFFFFFFF, len(header) - 8 + remaining))
        return bytes(header)


@dataclass
class _OggPage:
    start: int
    size: int
    flags: int
    granule: int
    serial: int
    body: bytes


class _OggScanner(_Buffered):
    """OGG: header = the leading granule-0 pages (OpusHead/OpusTags, Vorbis
    headers); restart at the start of any page that does not continue a packet."""

    absolute_samples = True

    def __init__(self) -> None:
        super().__init__()
        self.header: bytes | None = None
        self._head = bytearray()
        self._serial: int | None = None
        self._rate = 0
        self._pre_skip = 0
        self._last_granule = -1

    def feed(self, data: bytes, base: int) -> list[Candidate]:
        if self.dead:
            return []
        self._push(data, base)
        out: list[Candidate] = []
        while (page := self._next_page()) is not None:
            candidate = self._on_page(page)
            if candidate is not None:
                out.append(candidate)
        return out

    def _next_page(self) -> _OggPage | None:
        buf = self._buf
        if len(buf) < 27 or self.dead:
            return None
        if buf[:4] != b"OggS":
            self.dead = True  # lost sync; restarts would need a resync search
            return None
        nsegs = buf[26]
        if len(buf) < 27 + nsegs:
            return None
        size = 27 + nsegs + sum(buf[27 : 27 + nsegs])
        if len(buf) < size:
            return None
        flags, granule, serial = buf[5], *struct.unpack_from("<qI", buf, 6)
        page = _OggPage(self._at, size, flags, granule, serial, bytes(buf[27 + nsegs : size]))
        if self.header is None:
            self._head += buf[:size]
            self.dead = len(self._head) > _MAX_HEADER
        self._drop(size)
        return page

    def _on_page(self, page: _OggPage) -> Candidate | None:
        if self._serial is None:
            self._serial = page.serial
            self._parse_id_header(page.body)
        if self.dead or page.serial != self._serial:
            return None  # another logical stream (chained/multiplexed): not tracked
        if self.header is None:
            return self._on_header_page(page)
        return self._on_audio_page(page)

    def _parse_id_header(self, body: bytes) -> None:
        if body.startswith(b"OpusHead") and len(body) >= 12:
            check_format(48000, body[9], "OpusHead")
            # Opus granules always count 48 kHz samples (RFC 7845, section 4).
            self._rate = 48000
            self._pre_skip = struct.unpack_from("<H", body, 10)[0]
        elif body.startswith(b"\x01vorbis") and len(body) >= 16:
            check_format(struct.unpack_from("<I", body, 12)[0], body[11], "Vorbis header")
            self._rate = struct.unpack_from("<I", body, 12)[0]
        else:
            self.dead = True  # not a stream we can restart: FFmpeg decides the rest

    def _on_header_page(self, page: _OggPage) -> Candidate | None:
        if page.granule == 0:
            return None  # RFC 7845/Vorbis I: header pages have granule 0
        self.header = bytes(self._head[: len(self._head) - page.size])
        self._head = bytearray()
        self._last_granule = page.granule
        return (page.start, 0, self.header, self._rate)

    def _on_audio_page(self, page: _OggPage) -> Candidate | None:
        previous, continued = self._last_granule, page.flags & 1
        if page.granule >= 0:
            self._last_granule = page.granule
        if continued or previous < 0:
            return None
        # FFmpeg trims the pre-skip again from the first packet of a restarted
        # stream (oggparseopus sets start trimming on every fresh demuxer), so
        # restarted output starts at granule `previous`, i.e. original output
        # sample `previous` (original output sample n is granule n + pre_skip).
        return (page.start, previous, self.header or b"", self._rate)


_MPEG_BITRATES = {
    # (mpeg1?, layer) -> kbit/s by index 1..14
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True)
class _MpegFrame:
    size: int
    samples: int
    rate: int
    side_info: int  # bytes of Layer III side info after the 4-byte header


def _mpeg_frame(h: bytes) -> _MpegFrame | None:
    """Parse a 4-byte MPEG audio frame header (ISO 11172-3 / 13818-3)."""
    if len(h) < 4 or h[0] != 0xFF or h[1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (h[1] >> 3) & 3, (h[1] >> 1) & 3
    bitrate_index, rate_index = h[2] >> 4, (h[2] >> 2) & 3
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1, layer = version == 3, 4 - layer_bits
    bitrate = _MPEG_BITRATES[(mpeg1, layer)][bitrate_index - 1] * 1000
    rate, padding = _MPEG_RATES[version][rate_index], (h[2] >> 1) & 1
    if layer == 1:
        return _MpegFrame((12 * bitrate // rate + padding) * 4, 384, rate, 0)
    per_frame = 1152 if mpeg1 or layer == 2 else 576
    mono = (h[3] >> 6) == 3
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    return _MpegFrame(per_frame // 8 * bitrate // rate + padding, per_frame, rate, side_info)


class _Mp3Scanner(_Buffered):
    """MPEG audio: no header (frames are self-describing); restart at a frame.

    FFmpeg reads the encoder delay from a leading Xing/Info (LAME) frame and
    trims ``delay + 529`` samples from the start (mp3dec.c, start_skip_samples);
    a restarted stream has no such frame, so nothing is trimmed there.
    """

    absolute_samples = False

    header = b""

    def __init__(self) -> None:
        super().__init__()
        self._id3_checked = False
        self._first = True
        self._skip = 0
        self._samples = 0  # source samples of the audio frames seen so far

    def feed(self, data: bytes, base: int) -> list[Candidate]:
        if self.dead:
            return []
        self._push(data, base)
        if not self._id3_checked and not self._skip_id3():
            return []
        out: list[Candidate] = []
        while not self.dead and (frame := self._next_frame()) is not None:
            if frame[1] is not None:
                out.append(frame[1])
        return out

    def _skip_id3(self) -> bool:
        buf = self._buf
        if len(buf) < 10:
            return False
        if buf[:3] == b"ID3":
            # ID3v2 size is 4 syncsafe 7-bit bytes; flag 0x10 adds a 10-byte footer.
            size = (buf[6] << 21) | (buf[7] << 14) | (buf[8] << 7) | buf[9]
            size += 20 if buf[5] & 0x10 else 10
            if len(buf) < size:
                return False
            self._drop(size)
        self._id3_checked = True
        return True

    def _next_frame(self) -> tuple[int, Candidate | None] | None:
        frame = _mpeg_frame(bytes(self._buf[:4]))
        if frame is None:
            self.dead = len(self._buf) >= 4  # lost sync (or trailing tag)
            return None
        if len(self._buf) < frame.size:
            return None
        start, body = self._at, bytes(self._buf[: frame.size])
        self._drop(frame.size)
        if self._first:
            self._first = False
            if self._info_delay(body, frame) is not None:
                return (start, None)  # the Xing/Info frame holds no audio
        candidate = None
        if self._samples >= self._skip:
            candidate = (start, self._samples - self._skip, b"", frame.rate)
        self._samples += frame.samples
        return (start, candidate)

    def _info_delay(self, body: bytes, frame: _MpegFrame) -> int | None:
        tag_at = 4 + frame.side_info
        if body[tag_at : tag_at + 4] not in (b"Xing", b"Info"):
            return None
        flags = struct.unpack_from(">I", body, tag_at + 4)[0] if len(body) >= tag_at + 8 else 0
        # Optional fields: frames (4), bytes (4), TOC (100), quality (4); the
        # LAME extension follows, with the 12-bit encoder delay at byte 21.
        lame = tag_at + 8 + 4 * bool(flags & 1) + 4 * bool(flags & 2)
        lame += 100 * bool(flags & 4) + 4 * bool(flags & 8)
        if len(body) >= lame + 24:
            delay = (body[lame + 21] << 4) | (body[lame + 22] >> 4)
            self._skip = delay + 529
        return self._skip
